"""What every batch asset does around its work: per-document outcomes and cheap bookkeeping."""

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg

from tvdb_assets.defs.partitions import cached_partition_lookups
from tvdb_assets.lib.store.ingest_errors import IngestError

_pooled: set[int] = set()

# The job's own executor (`definitions`), and the one `execute_in_process` puts in its place
# (its name in dagster 1.13.27).
IN_PROCESS = (dg.in_process_executor.name, "execute_in_process_executor")


@contextmanager
def batch_bookkeeping(context: dg.AssetExecutionContext) -> Iterator[None]:
    """What every batch asset runs inside: pooled storage connections, cached key lookups."""
    # The cached lookups patch this process's instance for the step (`partitions`).
    executor = context.job_def.executor_def.name
    assert executor in IN_PROCESS, f"an in-process executor expected, not {executor}"
    pool_event_connections(context)
    with cached_partition_lookups(context.instance):
        yield


def pool_event_connections(context: dg.AssetExecutionContext) -> None:
    """Hold the instance's storage connections open for the rest of this process.

    A batch run writes events for hundreds of partitions; without pooling every event write
    opens a fresh database connection.
    """
    instance = context.instance
    if id(instance) not in _pooled:
        instance.optimize_for_webserver(statement_timeout=60_000, pool_recycle=3600, max_overflow=4)
        _pooled.add(id(instance))


def report_ok(
    context: dg.AssetExecutionContext, partition_key: str, metadata: Mapping[str, Any]
) -> None:
    context.add_asset_metadata({"status": "ok", **metadata}, partition_key=partition_key)


def report_failed(context: dg.AssetExecutionContext, error: IngestError) -> None:
    """One document's failure shows on its own partition; the run and the others go on."""
    context.log.warning(f"{error.path}: {error.reason}")
    context.add_asset_metadata(
        {"status": "failed", "error": f"{error.path}: {error.reason}", "stage": error.stage},
        partition_key=error.partition_key,
    )


def report_skipped(context: dg.AssetExecutionContext, partition_key: str, why: str) -> None:
    context.add_asset_metadata({"status": "skipped", "reason": why}, partition_key=partition_key)


class Timer:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def circuit_metadata(snapshot: Mapping[str, str | int | float]) -> dict[str, str | int | float]:
    """A client's circuit state (`services.circuit_state`) as batch metadata."""
    return {f"circuit_{k}": v for k, v in snapshot.items() if k != "service"}
