"""The inbox sensor: new and changed uploads become batch runs, deleted ones retire."""

import hashlib

import dagster as dg

from tvdb_assets.defs.assets.indexing import chunks, embeddings
from tvdb_assets.defs.assets.ingestion import parsed_documents
from tvdb_assets.defs.partitions import DOCUMENTS, documents_partitions, range_tags
from tvdb_assets.defs.resources import PostgresResource, UploadsResource
from tvdb_assets.lib import settings, sync

ingest_job = dg.define_asset_job(
    "ingest",
    selection=[parsed_documents, chunks, embeddings],
    description="Parse, chunk and embed a batch of documents (a range of partition keys).",
)


def batch_run_requests(plan: sync.PartitionPlan, changes: sync.InboxChanges) -> list[dg.RunRequest]:
    """One run per batch; the run key names the content, so a retried tick never runs twice."""
    shas = {f.partition_key: f.sha256 for f in changes.to_ingest}
    requests = []
    for batch in plan.batches:
        digest = hashlib.sha256(
            "\n".join(f"{k}:{shas.get(k, '')}" for k in batch).encode()
        ).hexdigest()[:24]
        if len(batch) == 1:
            requests.append(dg.RunRequest(run_key=f"ingest-{digest}", partition_key=batch[0]))
        else:
            requests.append(dg.RunRequest(run_key=f"ingest-{digest}", tags=range_tags(batch)))
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


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def inbox_sensor(
    context: dg.SensorEvaluationContext,
    upload_store: UploadsResource,
    database: PostgresResource,
) -> dg.SensorResult | dg.SkipReason:
    """Watches the inbox: adds a partition per new file and requests runs in batches.

    The cursor is a digest of the inbox listing, so an idle tick costs one directory scan;
    only files whose size or mtime moved are hashed, and content hashes decide what changed.
    """
    uploads = upload_store.client()
    listing = list(uploads.list())
    mark = sync.fingerprint(listing)
    if context.cursor == mark:
        return dg.SkipReason(f"inbox unchanged ({len(listing)} files)")
    with database.connect() as conn:
        changes = sync.refresh(conn, uploads, listing)
    if not (changes.to_ingest or changes.removed):
        return dg.SensorResult(cursor=mark, skip_reason="no new or changed content")
    existing = context.instance.get_dynamic_partitions(DOCUMENTS)
    plan = sync.plan_partitions(existing, changes, settings.batch_size())
    partition_requests = apply_partition_plan(context.instance, plan)
    context.log.info(
        f"{len(changes.added)} new, {len(changes.changed)} changed, {len(changes.removed)} "
        f"removed: {len(plan.batches)} run(s)"
    )
    return dg.SensorResult(
        run_requests=batch_run_requests(plan, changes),
        dynamic_partitions_requests=partition_requests,
        cursor=mark,
    )
