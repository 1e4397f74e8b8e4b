"""The inbox sensor: new and changed uploads (files in the inbox, or objects in a bucket)
become batch runs, deleted ones retire."""

import hashlib
import json
import time
from dataclasses import dataclass, replace

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from tvdb_assets.defs.assets.indexing import chunks, embeddings
from tvdb_assets.defs.assets.ingestion import parsed_documents, uploads
from tvdb_assets.defs.document_checks import DOCUMENT_CHECK
from tvdb_assets.defs.partitions import DOCUMENTS, documents_partitions, range_tags
from tvdb_assets.defs.pools import ensure_pools
from tvdb_assets.defs.resources import PostgresResource, UploadsResource
from tvdb_assets.defs.runs import INGEST_JOB, cooling_keys, fail_orphaned_runs, in_flight_keys
from tvdb_assets.lib import settings, sync
from tvdb_assets.lib.store import webhook_events
from tvdb_assets.lib.uploads import NOTHING, Listing, UploadStore

# Upload notices a tick acts on (a HEAD request each); more wait for the next tick.
NOTICES_PER_TICK = 1000

ingest_job = dg.define_asset_job(
    INGEST_JOB,
    # `document_ingested` reports the failed documents only (`defs/checks.py`): planned for
    # every partition of a batch, it would cost Dagster a row per document.
    selection=dg.AssetSelection.assets(parsed_documents, chunks, embeddings)
    - dg.AssetSelection.checks(dg.AssetCheckKey(embeddings.key, DOCUMENT_CHECK)),
    description="Parse, chunk and embed a batch of documents (a range of partition keys).",
)


def batch_run_requests(
    plan: sync.PartitionPlan, files: list[sync.InboxFile], generation: int
) -> list[dg.RunRequest]:
    """One run per batch. The run key names the content and the tick, so a retried tick
    never runs a batch twice, while a later tick may run again what a dead run left undone."""
    shas = {f.partition_key: f.sha256 for f in files}
    requests = []
    for batch in plan.batches:
        digest = hashlib.sha256(
            "\n".join(f"{k}:{shas.get(k, '')}" for k in batch).encode()
        ).hexdigest()[:24]
        run_key = f"ingest-{digest}-{generation}"
        if len(batch) == 1:
            requests.append(dg.RunRequest(run_key=run_key, partition_key=batch[0]))
        else:
            requests.append(dg.RunRequest(run_key=run_key, tags=range_tags(batch)))
    return requests


def apply_partition_plan(
    instance: dg.DagsterInstance, plan: sync.PartitionPlan
) -> list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest]:
    """Move changed keys now; return the retire/add requests for the tick's result.

    A sensor result may not delete and add the same key, so moving a key to the end of the
    order (delete, then add again) happens on the instance before the result is returned.
    """
    for key in plan.move_keys:
        instance.delete_dynamic_partition(DOCUMENTS, key)
    if plan.move_keys:
        instance.add_dynamic_partitions(DOCUMENTS, plan.move_keys)
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if plan.retire_keys:
        requests.append(documents_partitions.build_delete_request(plan.retire_keys))
    if plan.new_keys:
        requests.append(documents_partitions.build_add_request(plan.new_keys))
    return requests


def upload_events(files: list[sync.InboxFile]) -> list[dg.AssetMaterialization]:
    """An event of `uploads` per new or changed file, with the content hash as its data
    version: each parse then records the version of the upload it read, and a changed
    upload shows its documents' assets as changed upstream.

    Materializations of an asset Dagster does not run, not observations: Dagster 1.13 reads
    partitioned inputs' data versions from materializations only (its data_version_cache).
    """
    return [
        dg.AssetMaterialization(
            asset_key=uploads.key,
            partition=f.partition_key,
            metadata={"path": f.shown, "bytes": f.bytes, "sha256": f.sha256},
            tags={DATA_VERSION_TAG: f.sha256},
        )
        for f in files
    ]


@dataclass(frozen=True)
class InboxCursor:
    """`listing`: the inbox fingerprint once all of it was stored (then an idle tick costs
    one directory scan, or one bucket listing); None while documents are unfinished, or
    once upload notices told of changes, so a tick looks again. `generation` counts the
    ticks that requested runs. `after`: where the next tick goes on listing a bucket too
    large for one tick (None: from the start). `swept_at`: when the last listing of the
    whole bucket began (unix seconds)."""

    listing: str | None = None
    generation: int = 0
    after: str | None = None
    swept_at: float = 0.0

    @classmethod
    def parse(cls, cursor: str | None) -> "InboxCursor":
        try:
            data = json.loads(cursor or "{}")
            after = data.get("after")
            return cls(
                data.get("listing"),
                int(data.get("generation", 0)),
                after if isinstance(after, str) else None,
                float(data.get("swept_at", 0.0)),
            )
        except (ValueError, TypeError, AttributeError):
            return cls()  # a cursor of an older version: look at the whole inbox again

    def dump(self) -> str:
        return json.dumps(
            {
                "listing": self.listing,
                "generation": self.generation,
                "after": self.after,
                "swept_at": self.swept_at,
            }
        )


@dataclass(frozen=True)
class Look:
    """What a tick compares with the registry, and the cursor once it has."""

    listing: Listing
    # The fingerprint that, equal to the cursor's, means nothing to do; None: look anyway.
    mark: str | None
    unchanged: str  # the skip reason when it does
    cursor: InboxCursor
    notices: list[int]  # the upload notices acted on, consumed with the registry's update


def look(
    uploads: UploadStore,
    cursor: InboxCursor,
    database: PostgresResource,
    upload_store: UploadsResource,
    now: float,
) -> Look:
    """Upload notices first: the objects they name, one HEAD request each. Without any, a
    page of the listing when a sweep is due (every tick, unless `sweep_seconds` is set), and
    otherwise only what is stored, where a crashed run may have left documents undone."""
    address = uploads.notice_address()
    if address is not None:
        with database.connect() as conn:
            notices = webhook_events.pending_uploads(conn, *address, limit=NOTICES_PER_TICK)
        if notices:
            prefix = address[1]
            listing = uploads.look({n.key[len(prefix) :] for n in notices})
            return Look(listing, None, "", replace(cursor, listing=None), [n.id for n in notices])
    sweep_seconds = upload_store.sweep_every()
    wait = cursor.swept_at + sweep_seconds - now
    if address is None or sweep_seconds <= 0 or cursor.after is not None or wait <= 0:
        page = uploads.list_page(cursor.after, upload_store.keys_per_tick)
        # Only a listing of everything can be recognised unchanged without the database.
        mark = sync.fingerprint(page.uploads) if page.span.whole else None
        started = now if cursor.after is None else cursor.swept_at
        swept = replace(cursor, after=page.next_after, swept_at=started)
        why = f"inbox unchanged and stored ({len(page.uploads)} files)"
        return Look(page, mark, why, swept, [])
    why = f"no upload notices and all stored; the bucket is listed again in {wait:.0f} s"
    return Look(Listing([], NOTHING), cursor.listing, why, cursor, [])


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def inbox_sensor(
    context: dg.SensorEvaluationContext,
    upload_store: UploadsResource,
    database: PostgresResource,
) -> dg.SensorResult:
    """Watches the inbox (or bucket): adds a partition per new upload and requests runs in
    batches.

    It compares the inbox with what is stored, so documents that a crashed run or a killed
    `tvdb ingest` left undone are requested again; documents in a queued or running run, or
    claimed by a live `tvdb ingest`, are left to it. Only uploads whose size or mtime (an
    object's ETag) moved are hashed. A bucket larger than `keys_per_tick` is listed a page
    a tick, each page compared with the registry's uploads in the same stretch of keys.
    Upload notices that `tvdb webhook serve` recorded come first: the objects they name are
    looked at and the notices consumed in the same transaction as the registry's update.
    """
    uploads = upload_store.client()
    cursor = InboxCursor.parse(context.cursor)
    seen = look(uploads, cursor, database, upload_store, time.time())
    if seen.mark is not None and cursor.listing == seen.mark:
        # With the cursor: a sweep of an unchanged bucket is done until the next one is due.
        return dg.SensorResult(skip_reason=seen.unchanged, cursor=seen.cursor.dump())
    instance = context.instance
    with database.connect() as conn:
        orphans = fail_orphaned_runs(instance, conn)
        changes = sync.refresh(conn, uploads, seen.listing.uploads, seen.listing.span)
        webhook_events.mark_consumed(conn, seen.notices)
        unfinished = [f.partition_key for f in changes.unfinished]
        # Documents of queued or running runs, and of runs that failed by themselves a
        # moment ago (retried after a pause, never in a storm), are left alone.
        busy = in_flight_keys(instance) | cooling_keys(instance) if unfinished else set()
        taken = sync.take(conn, unfinished, busy)
    if orphans:
        context.log.warning(f"marked {len(orphans)} run(s) of dead processes failed")
    if seen.notices:
        context.log.info(f"acted on {len(seen.notices)} upload notice(s)")
    if not (taken.mine or changes.removed):
        settled = replace(seen.cursor, listing=None if taken.elsewhere else seen.mark)
        why = (
            f"{len(taken.elsewhere)} document(s) in flight or waiting to retry"
            if taken.elsewhere
            else "all stored"
        )
        return dg.SensorResult(
            cursor=settled.dump(),
            skip_reason=why,
            asset_events=upload_events(changes.added + changes.changed),
        )
    ensure_pools(instance)  # before the runs it requests claim their first slot
    existing = instance.get_dynamic_partitions(DOCUMENTS)
    plan = sync.plan_partitions(existing, taken.mine, settings.batch_size(), changes.removed)
    partition_requests = apply_partition_plan(instance, plan)
    resumed = len(changes.resumed)
    context.log.info(
        f"{len(changes.added)} new, {len(changes.changed)} changed, {resumed} unfinished, "
        f"{len(changes.removed)} removed: {len(plan.batches)} run(s)"
    )
    generation = cursor.generation + 1
    return dg.SensorResult(
        run_requests=batch_run_requests(plan, taken.mine, generation),
        dynamic_partitions_requests=partition_requests,
        asset_events=upload_events(changes.added + changes.changed),
        # Not settled until the runs are done: the next tick looks again.
        cursor=replace(seen.cursor, listing=None, generation=generation).dump(),
    )
