"""Schedules that heal the pipeline. Each selects stored documents to run again
(`lib.reruns`), lays them out as one contiguous stretch of partition keys, and requests
ranged batch runs (never one per document) tagged `tvdb/reason` with its name. All are off
until turned on (the UI's Automation page, or `dagster schedule start`).

- `retry_failed`: documents that failed for a passing cause, when due (a pause doubling
  with each try; given up after `reruns.RETRY_ATTEMPTS`), while their services' circuits
  are closed.
- `heal_fallbacks`: hybrid mode's stand-in parses and vectors, once the services'
  circuits are closed, in the deployment's (real or hybrid) modes.
- `reembed_on_model_change`: documents built with other chunker settings or another
  model than the environment sets now.
- `reconcile_nightly`: the whole inbox against what is stored, whatever the sensor's
  cursor says: uploads it missed or that a crash left undone run, and partitions and rows
  of uploads that are gone retire.
"""

import hashlib
from collections.abc import Sequence

import dagster as dg
import psycopg

from tvdb_assets.defs.partitions import DOCUMENTS, PARTITIONS_LOCK, lay_out, range_tags
from tvdb_assets.defs.pools import ensure_pools
from tvdb_assets.defs.resources import PostgresResource, UploadsResource
from tvdb_assets.defs.runs import REASON_TAG, in_flight_keys, rerun_config
from tvdb_assets.defs.sensors import ingest_job
from tvdb_assets.lib import reruns, settings, sync
from tvdb_assets.lib.settings import Mode
from tvdb_assets.lib.store import claims, inbox_files, service_health
from tvdb_assets.lib.store.connection import lock_named
from tvdb_assets.lib.store.inbox_files import InboxFile


def _modes() -> tuple[Mode, Mode]:
    return settings.mode_from_env("TVDB_PARSER_MODE"), settings.mode_from_env("TVDB_EMBEDDER_MODE")


def _open_circuits(conn: psycopg.Connection, parser_mode: Mode, embedder_mode: Mode) -> str:
    """The services these modes call whose circuit is not closed, said for a skip."""
    called = {"llamaparse": parser_mode, "openai": embedder_mode}
    return ", ".join(
        f"{h.service} circuit {h.state} (next try in {h.retry_in_seconds:.0f} s)"
        for h in service_health.load(conn)
        if called.get(h.service, "mock") != "mock" and h.state != "closed"
    )


def _run_requests(
    context: dg.ScheduleEvaluationContext,
    conn: psycopg.Connection,
    name: str,
    files: Sequence[InboxFile],
    modes: tuple[Mode, Mode],
) -> list[dg.RunRequest] | dg.SkipReason:
    """Ranged runs over these documents, but for those a run or a `tvdb ingest` is on."""
    instance = context.instance
    busy = in_flight_keys(instance) | set(claims.busy_elsewhere(conn, None))
    files = [f for f in files if f.partition_key not in busy]
    if not files:
        return dg.SkipReason(f"{name}: nothing to run" + (" now" if busy else ""))
    ensure_pools(instance)
    batches = lay_out(instance, conn, files, settings.batch_size())
    tick = context.scheduled_execution_time
    stamp = tick.isoformat() if tick else "now"
    shas = {f.partition_key: f.sha256 for f in files}
    requests = []
    for batch in batches:
        digest = hashlib.sha256("\n".join(f"{k}:{shas[k]}" for k in batch).encode())
        requests.append(
            dg.RunRequest(
                run_key=f"{name}-{digest.hexdigest()[:24]}-{stamp}",
                run_config=rerun_config(*modes),
                tags={**range_tags(batch), REASON_TAG: name},
            )
        )
    return requests


def _tick(
    context: dg.ScheduleEvaluationContext,
    database: PostgresResource,
    name: str,
    reason: reruns.Reason,
    due_only: bool = False,
) -> list[dg.RunRequest] | dg.SkipReason:
    """Runs for what `reason` selects. Failures and stand-ins are mended only by the
    services, so for those it waits while a circuit is open."""
    modes = _modes()
    if reason == "fallbacks" and modes == ("mock", "mock"):
        return dg.SkipReason(
            f"{name}: mock modes cannot replace stand-ins; set TVDB_PARSER_MODE or "
            "TVDB_EMBEDDER_MODE to real or hybrid"
        )
    with database.connect() as conn:
        if reason in ("failed", "fallbacks") and (waiting := _open_circuits(conn, *modes)):
            return dg.SkipReason(f"{name}: waiting, {waiting}")
        built = reruns.BuildSettings.configured(modes[1])
        files = reruns.select(conn, reason, built, due_only)
        return _run_requests(context, conn, name, files, modes)


@dg.schedule(
    job=ingest_job,
    cron_schedule="*/10 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Documents that failed for a passing cause (a service, the budget), when "
    "due: 10 min after a failure, then 20, 40, ...; given up after 6 tries.",
)
def retry_failed(
    context: dg.ScheduleEvaluationContext, database: PostgresResource
) -> list[dg.RunRequest] | dg.SkipReason:
    return _tick(context, database, "retry_failed", "failed", due_only=True)


@dg.schedule(
    job=ingest_job,
    cron_schedule="*/30 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Hybrid mode's stand-in parses and vectors, run again in real or hybrid "
    "mode once the services' circuits are closed.",
)
def heal_fallbacks(
    context: dg.ScheduleEvaluationContext, database: PostgresResource
) -> list[dg.RunRequest] | dg.SkipReason:
    return _tick(context, database, "heal_fallbacks", "fallbacks")


@dg.schedule(
    job=ingest_job,
    cron_schedule="15 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Documents built with other chunker settings or another embedding model "
    "than the environment sets now (TVDB_CHUNK_*, TVDB_EMBEDDING_*).",
)
def reembed_on_model_change(
    context: dg.ScheduleEvaluationContext, database: PostgresResource
) -> list[dg.RunRequest] | dg.SkipReason:
    return _tick(context, database, "reembed_on_model_change", "stale")


@dg.schedule(
    job=ingest_job,
    cron_schedule="30 3 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="The whole inbox against what is stored: missed or unfinished uploads run, "
    "partitions and rows of uploads that are gone retire.",
)
def reconcile_nightly(
    context: dg.ScheduleEvaluationContext, upload_store: UploadsResource, database: PostgresResource
) -> list[dg.RunRequest] | dg.SkipReason:
    instance = context.instance
    uploads = upload_store.client()
    with database.connect() as conn:
        changes = sync.refresh(conn, uploads, list(uploads.list()))
        with conn.transaction():
            orphans = inbox_files.rows_without_upload(conn)
            inbox_files.retire(conn, orphans)
            lock_named(conn, PARTITIONS_LOCK)
            # Partitions first: a sensor registers an upload before it adds its partition,
            # so every partition listed here has its registry row in the read that follows.
            partitions = instance.get_dynamic_partitions(DOCUMENTS)
            registered = inbox_files.keys(conn)
            gone = [k for k in partitions if k not in registered]
            for key in gone:
                instance.delete_dynamic_partition(DOCUMENTS, key)
        if orphans or gone:
            context.log.info(
                f"reconcile_nightly: retired {len(gone)} partition(s) and the rows of "
                f"{len(orphans)} document(s) whose upload is gone"
            )
        return _run_requests(context, conn, "reconcile_nightly", changes.unfinished, _modes())


SCHEDULES = [retry_failed, heal_fallbacks, reembed_on_model_change, reconcile_nightly]
