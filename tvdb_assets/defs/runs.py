"""Ingest runs as Dagster stores them: which documents they hold, and orphans to fail."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg

from tvdb_assets.defs.partitions import DOCUMENTS, RANGE_END_TAG, RANGE_START_TAG
from tvdb_assets.lib import settings
from tvdb_assets.lib.store import claims

INGEST_JOB = "ingest"
# Why a run runs stored documents again: the schedule's name, or `backfill --failed`, ...
REASON_TAG = "tvdb/reason"
PARTITION_TAG = "dagster/partition"
# Set on a run failed because its process died: its documents are due again at once.
ORPHANED_TAG = "tvdb/orphaned"
# Documents of a run that failed by itself wait this long before the sensor asks again, so
# a failure that repeats (a missing key, a bad deployment) never becomes a storm of runs.
RETRY_FAILED_AFTER = timedelta(minutes=5)

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def in_flight_keys(instance: dg.DagsterInstance) -> set[str]:
    """The documents of ingest runs that are queued or running, whoever launched them."""
    runs = instance.get_runs(dg.RunsFilter(job_name=INGEST_JOB, statuses=IN_FLIGHT))
    return _documents_of(instance, runs)


def cooling_keys(instance: dg.DagsterInstance, now: datetime | None = None) -> set[str]:
    """The documents of ingest runs that failed by themselves within RETRY_FAILED_AFTER."""
    since = (now or datetime.now(UTC)) - RETRY_FAILED_AFTER
    runs = instance.get_runs(
        dg.RunsFilter(
            job_name=INGEST_JOB, statuses=[dg.DagsterRunStatus.FAILURE], updated_after=since
        )
    )
    return _documents_of(instance, [r for r in runs if ORPHANED_TAG not in r.tags])


def _documents_of(instance: dg.DagsterInstance, runs: Sequence[dg.DagsterRun]) -> set[str]:
    if not runs:
        return set()
    order = list(instance.get_dynamic_partitions(DOCUMENTS))
    position = {key: i for i, key in enumerate(order)}
    keys: set[str] = set()
    for run in runs:
        tags = run.tags
        if PARTITION_TAG in tags:
            keys.add(tags[PARTITION_TAG])
        elif tags.get(RANGE_START_TAG) in position and tags.get(RANGE_END_TAG) in position:
            first, last = position[tags[RANGE_START_TAG]], position[tags[RANGE_END_TAG]]
            keys.update(order[first : last + 1])
    return keys


def fail_orphaned_runs(instance: dg.DagsterInstance, conn: psycopg.Connection) -> list[str]:
    """Mark failed the runs whose owning process died, so no queue slot stays taken.

    Runs that the daemon launched are watched by Dagster's run monitoring instead
    (`run_monitoring` in dagster.yaml).
    """
    orphans = claims.orphaned_runs(conn)
    if not orphans:
        return orphans
    for run_id in orphans:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status in IN_FLIGHT:
            instance.add_run_tags(run_id, {ORPHANED_TAG: "true"})
            instance.report_run_failed(
                run, "The process running this ingest died before it finished."
            )
        # A step of a concurrency pool (`defs.pools`) holds its slot until freed.
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    with conn.transaction():
        claims.disown_runs(conn, orphans)
    return orphans


def rerun_config(parser_mode: str, embedder_mode: str) -> dict:
    """Run config for these modes and the deployment's chunker and model as the
    environment sets them now (not as they were when the code location loaded)."""
    max_tokens, overlap_tokens = settings.chunking()
    model, dims = settings.embedding()
    return {
        "ops": {"chunks": {"config": {"max_tokens": max_tokens, "overlap_tokens": overlap_tokens}}},
        "resources": {
            "parser": {"config": {"mode": parser_mode}},
            "embedder": {"config": {"mode": embedder_mode, "model": model, "dims": dims}},
        },
    }
