"""Which Postgres to use, and the embedded one (pgserver) when none is named.

One server holds both the pipeline's tables (database `tvdb`) and Dagster's run, event and
schedule storage (database `dagster`).
"""

import contextlib
import logging
import os
import warnings
from functools import cache
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tvdb_assets.lib import settings

PIPELINE_DATABASE = "tvdb"
DAGSTER_DATABASE = "dagster"

log = logging.getLogger(__name__)


@cache
def _embedded_server_uri() -> str:
    """Start (or attach to) the embedded Postgres under TVDB_HOME and return its root URI.

    pgserver counts the processes using a data directory and stops the server when the last
    one exits, so a CLI command and a running `dagster dev` can share it.
    """
    # pgserver looks for a runtime dir for its socket and warns where XDG_RUNTIME_DIR is
    # unset (containers, CI); it falls back to a fine place, so the warning is only noise.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import pgserver  # imported lazily: an external database never needs it

    pgdata = settings.home_dir() / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    return str(server.get_uri("postgres"))


def with_database(url: str, database: str, scheme: str | None = None) -> str:
    """The same server URL pointing at another database (and optionally another scheme)."""
    parts = urlsplit(url)
    return urlunsplit(
        (scheme or parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment)
    )


def database_url() -> str:
    """The pipeline's database: TVDB_DATABASE_URL, else the embedded server's `tvdb`."""
    url = os.environ.get("TVDB_DATABASE_URL")
    if url:
        return url
    url = with_database(_embedded_server_uri(), PIPELINE_DATABASE)
    ensure_database(url)
    return url


def dagster_storage_url() -> str:
    """Dagster's storage: TVDB_DAGSTER_PG_URL, else database `dagster` on the same server.

    Dagster's Postgres storage must go through psycopg2: with psycopg 3 installed,
    SQLAlchemy >= 2.1 would pick it for a bare `postgresql://` URL and dagster-postgres
    breaks.
    """
    url = os.environ.get("TVDB_DAGSTER_PG_URL")
    if url:
        return url
    return with_database(database_url(), DAGSTER_DATABASE, scheme="postgresql+psycopg2")


def ensure_database(url: str) -> None:
    """Create the database `url` names when it is missing (needs CREATEDB on a real server)."""
    name = urlsplit(url).path.lstrip("/")
    admin = with_database(url, "postgres", scheme="postgresql")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            # Another process may create it between the check and here.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log.info("created database %s", name)
