"""Prepare the environment every Dagster process of this project runs in.

Called by `tvdb` (CLI and `tvdb dev`) and the tests before a Dagster instance is loaded:
it settles the database URLs, writes a `dagster.yaml` that reads its storage URL from the
environment (so no secret is written to disk), and sets the two settings that make
per-document partitions cheap (README "Performance").
"""

import os
import shutil
from pathlib import Path

from tvdb_assets.lib import database, settings

INSTANCE_TEMPLATE = Path(__file__).with_name("dagster.yaml")

# Planned-subset events replace one "planned" event per partition with one per run, and the
# batch size lets the run worker store events in batches (it must cover a run's documents).
PERFORMANCE_ENV = {
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
    "DAGSTER_EVENT_BATCH_SIZE": "1000",
}


def prepare() -> Path:
    """Export the environment contract and return DAGSTER_HOME, ready for an instance."""
    for name, value in PERFORMANCE_ENV.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("DAGSTER_TELEMETRY_DISABLED", "1")
    # Child processes (webserver, daemon, run workers) must reach the same server without
    # each starting their own embedded one.
    os.environ["TVDB_DATABASE_URL"] = database.database_url()
    storage_url = database.dagster_storage_url()
    os.environ["TVDB_DAGSTER_PG_URL"] = storage_url
    database.ensure_database(storage_url)

    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(INSTANCE_TEMPLATE, home / "dagster.yaml")
    return home
