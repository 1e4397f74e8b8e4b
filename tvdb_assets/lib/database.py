"""Which Postgres to use, and the embedded one (pgserver) when none is named.

One server holds both the pipeline's tables (database `tvdb`) and Dagster's run, event and
schedule storage (database `dagster`).
"""

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

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
    _forget_dead_users(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    return str(server.get_uri("postgres"))


def _forget_dead_users(pgdata: Path) -> None:
    """Drop processes that no longer exist from pgserver's list of the server's users.

    pgserver stops the server when its last user exits, but a killed process never takes
    itself off the list, so the server would outlive everyone. The last process to exit
    after this one stops it again.
    """
    # pgserver 0.1.4 keeps the list in this file and guards it with this class-wide lock;
    # the leak test in tvdb_assets_tests/test_recovery.py fails if either moves.
    from pgserver.postgres_server import PostgresServer

    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    with PostgresServer._lock:
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def with_database(url: str, database: str, scheme: str | None = None) -> str:
    """The same server URL pointing at another database (and optionally another scheme)."""
    parts = urlsplit(url)
    return urlunsplit(
        (scheme or parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment)
    )


def database_url() -> str:
    """The pipeline's database: TVDB_DATABASE_URL, else the embedded server's `tvdb`."""
    url = settings.database_url()
    if url:
        return url
    url = with_database(_embedded_server_uri(), PIPELINE_DATABASE)
    ensure_database(url)
    return url


def location(url: str | None = None) -> str:
    """Where a database is, for messages: host (or socket directory), port and name only."""
    parts = urlsplit(url or settings.database_url() or "")
    host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}/{parts.path.lstrip('/')}"


def dagster_storage_url() -> str:
    """Dagster's storage: TVDB_DAGSTER_PG_URL, else database `dagster` on the same server.

    Dagster's Postgres storage must go through psycopg2: with psycopg 3 installed,
    SQLAlchemy >= 2.1 would pick it for a bare `postgresql://` URL and dagster-postgres
    breaks.
    """
    url = settings.dagster_storage_url()
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
            # Another process may create it between the check and here: Postgres then
            # says DuplicateDatabase, or UniqueViolation when both were creating it at once.
            with contextlib.suppress(
                psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
            ):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log.info("created database %s", name)


def has_table(url: str, table: str) -> bool:
    with psycopg.connect(with_database(url, _name(url), scheme="postgresql")) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


@contextlib.contextmanager
def advisory_lock(url: str, name: str) -> Iterator[None]:
    """A session advisory lock on the database `url` names, held for the block."""
    with psycopg.connect(with_database(url, _name(url), scheme="postgresql")) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
        yield


def _name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")
