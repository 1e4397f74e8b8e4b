"""What every batch asset does around its work: per-document outcomes and cheap bookkeeping."""

import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg

from tvdb_assets.defs.partitions import cached_partition_lookups
from tvdb_assets.lib import logs
from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.store.ingest_errors import IngestError

_pooled: set[int] = set()

CORRELATION_TAG = "tvdb/correlation_id"
FAILED_TAG = "tvdb/failed"  # the run's documents not ingested, once its steps are done

# The job's own executor (`definitions`), and the one `execute_in_process` puts in its place
# (its name in dagster 1.13.27): a run's steps one after another in the run's process.
IN_PROCESS = (dg.in_process_executor.name, "execute_in_process_executor")
# Executors under which a process runs one step at a time: those, and a process per step.
ONE_STEP_PER_PROCESS = (*IN_PROCESS, dg.multiprocess_executor.name)


def steps_share_the_process(context: dg.AssetExecutionContext) -> bool:
    """Whether the run's later steps run in this process (and may take work done ahead)."""
    return context.job_def.executor_def.name in IN_PROCESS


@contextmanager
def batch_bookkeeping(context: dg.AssetExecutionContext) -> Iterator[None]:
    """What every batch asset runs inside: pooled storage connections, cached key lookups."""
    # The cached lookups patch this process's instance for the step (`partitions`).
    executor = context.job_def.executor_def.name
    assert executor in ONE_STEP_PER_PROCESS, f"one step per process expected, not {executor}"
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


def call_context(context: dg.AssetExecutionContext) -> CallContext:
    """The run's calls under one correlation id, the same in each of its steps, and on the
    run as a tag to find it by."""
    run = context.run
    correlation_id = run.tags.get(CORRELATION_TAG) or run.run_id.replace("-", "")[:16]
    if CORRELATION_TAG not in run.tags:
        context.instance.add_run_tags(run.run_id, {CORRELATION_TAG: correlation_id})
    call = CallContext(run.run_id, context.partition_keys, correlation_id)
    # The step's log lines carry the call's ids (`lib/logs.py`) while it runs: a process
    # may run one run after another.
    logs.bind(call, active=lambda: dg.AssetExecutionContext.get() is context)
    return call


def report_ok(
    context: dg.AssetExecutionContext, partition_key: str, metadata: Mapping[str, Any]
) -> None:
    context.add_asset_metadata({"status": "ok", **metadata}, partition_key=partition_key)


def report_failed(
    context: dg.AssetExecutionContext,
    error: IngestError,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """One document's failure shows on its own partition; the run and the others go on."""
    context.add_asset_metadata(
        {"status": "failed", "error": f"{error.path}: {error.reason}", "stage": error.stage}
        | dict(metadata or {}),
        partition_key=error.partition_key,
    )


def report_skipped(context: dg.AssetExecutionContext, partition_key: str, why: str) -> None:
    context.add_asset_metadata({"status": "skipped", "error": why}, partition_key=partition_key)


def report_batch(
    context: dg.AssetExecutionContext,
    summary: str,
    figures: Mapping[str, Any],
    failed: Sequence[IngestError] = (),
) -> None:
    """The batch's own figures, once: a summary line that ends the step, and one
    observation of the asset without a partition, which plots by partition leave out.

    The failures are one WARNING each (the reason on the run's log), and the run's tag
    `tvdb/failed` counts its documents not ingested so far.
    """
    for error in failed:
        context.log.warning(f"{error.path}: {error.stage} failed: {error.reason}")
    context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=figures))
    context.log.info(summary)


def warn_fallbacks(context: dg.AssetExecutionContext, what: str, reasons: Sequence[str]) -> None:
    """Hybrid mode's stand-ins of a batch in one WARNING: how many, and why."""
    if not reasons:
        return
    counted = Counter(reasons).most_common()
    why = counted[0][0] if len(counted) == 1 else "; ".join(f"{r} ({n})" for r, n in counted)
    context.log.warning(
        f"hybrid fallback: {len(reasons)} {what} by the local stand-in, flagged for "
        f"heal_fallbacks to redo: {why}"
    )


def tag_failed(context: dg.AssetExecutionContext, failed: int) -> None:
    context.instance.add_run_tags(context.run.run_id, {FAILED_TAG: str(failed)})


class Timer:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def circuit_metadata(snapshot: Mapping[str, str | int | float]) -> dict[str, str | int | float]:
    """A client's circuit state (`services.circuit_state`) as batch metadata."""
    return {f"circuit_{k}": v for k, v in snapshot.items() if k != "service"}
