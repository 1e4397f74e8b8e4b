"""One dynamic partition per uploaded document; see `lib.ids.partition_key_for`."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import psycopg

from tvdb_assets.lib import sync
from tvdb_assets.lib.store.connection import lock_named

DOCUMENTS = "documents"

documents_partitions = dg.DynamicPartitionsDefinition(name=DOCUMENTS)

# Held (a Postgres advisory lock) by whoever lays out partition keys outside a sensor tick:
# `tvdb ingest`, the schedules.
PARTITIONS_LOCK = "tvdb_assets.partitions"

# Dagster's documented run tags for a single run over a range of partitions.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def range_tags(keys: list[str]) -> dict[str, str]:
    """Tags that make one run cover a contiguous stretch of partition keys."""
    return {
        RANGE_START_TAG: keys[0],
        RANGE_END_TAG: keys[-1],
    }


def lay_out(
    instance: dg.DagsterInstance,
    conn: psycopg.Connection,
    files: Sequence[sync.InboxFile],
    batch_size: int,
) -> list[list[str]]:
    """Give these documents one contiguous stretch of partition keys, at the end of the key
    order (registering new ones, moving those that sit elsewhere); return the batches, each
    a range one run covers. Under PARTITIONS_LOCK, in a transaction of `conn`."""
    with conn.transaction():
        lock_named(conn, PARTITIONS_LOCK)
        plan = sync.plan_partitions(instance.get_dynamic_partitions(DOCUMENTS), files, batch_size)
        for key in plan.move_keys:
            instance.delete_dynamic_partition(DOCUMENTS, key)
        if plan.move_keys or plan.new_keys:
            instance.add_dynamic_partitions(DOCUMENTS, plan.move_keys + plan.new_keys)
    return plan.batches


def apply_requests(
    instance: dg.DagsterInstance,
    requests: "list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] | None",
) -> None:
    """What the daemon does with a sensor tick's partition requests; for evaluating the
    sensor outside it (tests, the benchmark)."""
    for request in requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


@contextmanager
def cached_partition_lookups(instance: dg.DagsterInstance) -> Iterator[None]:
    """Answer dynamic-partition lookups from memory while a run or an asset goes on.

    Dagster checks every `add_asset_metadata(..., partition_key=...)` by loading the run's
    partition keys from storage: three queries a call, O(N^2) for a batch of N documents
    (13 ms of a document's 17 ms of bookkeeping, measured). Creating and executing a run
    loads every key a dozen times more, so a run's cost would grow with all the documents
    ever stored. The keys a run works on cannot change while it runs, so they are read once
    and served from memory, on this instance only.

    Borrowed from Dagster's internals, as checked against dagster 1.13.27 (the pin in
    pyproject.toml): that the run's lookups go through these two instance methods. Safe
    because a process runs one step at a time (the in-process executor runs the steps one
    after another, the multiprocess executor each in a process of its own; asserted by
    `batch_bookkeeping`), while no other run uses its instance.
    `test_a_batch_reads_the_stored_partition_keys_once` fails if an upgrade goes around it.
    """
    if "get_dynamic_partitions" in vars(instance):
        yield  # an enclosing run already serves them
        return
    names: dict[str, _IndexedKeys] = {}
    original_get = instance.get_dynamic_partitions

    def get_dynamic_partitions(partitions_def_name: str) -> Sequence[str]:
        if partitions_def_name not in names:
            names[partitions_def_name] = _IndexedKeys(original_get(partitions_def_name))
        return names[partitions_def_name]

    def has_dynamic_partition(partitions_def_name: str, partition_key: str) -> bool:
        return partition_key in get_dynamic_partitions(partitions_def_name)

    instance.get_dynamic_partitions = get_dynamic_partitions  # type: ignore[method-assign]
    instance.has_dynamic_partition = has_dynamic_partition  # type: ignore[method-assign]
    try:
        yield
    finally:
        # Deleting the instance attributes brings back the class's methods.
        del instance.get_dynamic_partitions
        del instance.has_dynamic_partition


class _IndexedKeys(list[str]):
    """Partition keys whose `index` and `in` are dict lookups. Dagster finds a range's ends
    with `keys.index(...)` on every per-partition metadata call: O(N) each, O(N^2) a run."""

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__(keys)
        self._at: dict[str, int] = {}
        for position, key in enumerate(keys):
            self._at.setdefault(key, position)

    def index(self, key: str, *bounds: Any) -> int:  # type: ignore[override]
        if bounds or key not in self._at:
            return super().index(key, *bounds)  # raises ValueError as a list does
        return self._at[key]

    def __contains__(self, key: object) -> bool:
        return key in self._at
