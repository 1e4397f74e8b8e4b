"""Prepare the environment every Dagster process of this project runs in.

Called by `tvdb` (CLI and `tvdb dev`) and the tests before a Dagster instance is loaded:
it settles the database URLs, migrates the pipeline's schema, writes a `dagster.yaml` that
reads its storage URL from the environment (so no secret is written to disk), and sets the
two settings that make per-document partitions cheap (README "Performance").
"""

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tvdb_assets.lib import database, settings
from tvdb_assets.lib.store import connection

if TYPE_CHECKING:
    import dagster as dg

# Not named dagster.yaml: `dagster dev` warns about such a file in its working directory.
INSTANCE_TEMPLATE = Path(__file__).with_name("dagster.template.yaml")

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
    connection.ensure_schema()
    storage_url = database.dagster_storage_url()
    os.environ["TVDB_DAGSTER_PG_URL"] = storage_url
    database.ensure_database(storage_url)

    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    if not (home / "dagster.yaml").exists():
        # Written aside and renamed: a concurrent process never reads half a file.
        partial = home / f".dagster.yaml.{os.getpid()}"
        shutil.copyfile(INSTANCE_TEMPLATE, partial)
        partial.replace(home / "dagster.yaml")
    _ensure_dagster_storage(storage_url)
    return home


def _ensure_dagster_storage(storage_url: str) -> None:
    """Create Dagster's tables once, even when several processes start on a new database.

    Dagster creates its schema when an instance first opens the storage, with no lock of
    its own: two processes doing that at once fail with duplicate-table errors.
    """
    if database.has_table(storage_url, "runs"):
        return
    with database.advisory_lock(storage_url, "tvdb_assets.dagster_storage"):
        if database.has_table(storage_url, "runs"):
            return
        import dagster as dg

        with dg.DagsterInstance.get():
            pass


@contextmanager
def instance() -> "Iterator[dg.DagsterInstance]":
    """The Dagster instance the UI shows, on the environment `prepare` exported."""
    import dagster as dg

    with dg.DagsterInstance.get() as opened:
        yield opened
