"""The one `Definitions` of tvdb-assets, assembled explicitly from the defs modules."""

import dagster as dg

from tvdb_assets.defs.assets.indexing import chunks, embeddings
from tvdb_assets.defs.assets.ingestion import parsed_documents, uploads
from tvdb_assets.defs.checks import batch_checks
from tvdb_assets.defs.resources import default_resources
from tvdb_assets.defs.schedules import SCHEDULES
from tvdb_assets.defs.sensors import inbox_sensor, ingest_job
from tvdb_assets.lib import settings
from tvdb_assets.lib.uploads.s3 import S3Location

EXECUTORS = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}


def build_defs() -> dg.Definitions:
    """Resources read their defaults (modes, which keys exist), `uploads` its inbox, the
    assets their backfill runs' size and the jobs their executor from the environment now."""
    # A backfill from the UI becomes runs of one batch each, which the run queue starts
    # side by side (README "Deploying"), rather than one run over every selected document.
    batches = dg.BackfillPolicy.multi_run(settings.batch_size())
    return dg.Definitions(
        assets=[
            uploads.merge_attributes(metadata={"inbox": _uploads_place()}),
            *(
                a.with_attributes(backfill_policy=batches)
                for a in (parsed_documents, chunks, embeddings)
            ),
        ],
        asset_checks=[batch_checks],
        jobs=[ingest_job],
        sensors=[inbox_sensor],
        schedules=SCHEDULES,
        resources=default_resources(),
        # Each run already covers a whole batch; a process per step only adds start-up,
        # unless a deployment spreads steps out (TVDB_EXECUTOR).
        executor=EXECUTORS[settings.executor()],
    )


def _uploads_place() -> str:
    """Where uploads come from, for the catalog: the inbox folder, or the bucket's URL (read
    from the settings alone: no client is made, so the definitions load offline)."""
    bucket, prefix, _, _ = settings.uploads_bucket()
    if settings.mode_from_env("TVDB_UPLOADS_MODE") == "mock" or not bucket:
        return str(settings.uploads_dir())
    return S3Location(bucket, prefix).url


defs = build_defs()
