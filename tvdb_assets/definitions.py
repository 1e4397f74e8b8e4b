"""The one `Definitions` of tvdb-assets, assembled explicitly from the defs modules."""

import dagster as dg

from tvdb_assets.defs.assets.indexing import chunks, embeddings
from tvdb_assets.defs.assets.ingestion import parsed_documents, uploads
from tvdb_assets.defs.checks import batch_checks
from tvdb_assets.defs.resources import default_resources
from tvdb_assets.defs.schedules import SCHEDULES
from tvdb_assets.defs.sensors import inbox_sensor, ingest_job
from tvdb_assets.lib import settings


def build_defs() -> dg.Definitions:
    """Resources read their defaults (modes, which keys exist) and `uploads` its inbox from
    the environment now."""
    return dg.Definitions(
        assets=[
            uploads.merge_attributes(metadata={"inbox": str(settings.uploads_dir())}),
            parsed_documents,
            chunks,
            embeddings,
        ],
        asset_checks=[batch_checks],
        jobs=[ingest_job],
        sensors=[inbox_sensor],
        schedules=SCHEDULES,
        resources=default_resources(),
        # Each run already covers a whole batch; a process per step would only add start-up.
        executor=dg.in_process_executor,
    )


defs = build_defs()
