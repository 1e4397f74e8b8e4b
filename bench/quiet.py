"""Wait for the machine to be quiet before a timed measurement.

A system measured right after another pays for its predecessor: Postgres flushing the
pages the last ingest dirtied, autovacuum analyzing its tables, a peer's processes still
exiting. Each measurement that is compared with another starts from the same quiet state:
every database vacuumed and analyzed, a checkpoint done, no autovacuum worker busy, and no
more runnable tasks than this process.

The vacuum matters most to whoever comes last: the launcher visits each database in turn,
so a worker may start on an earlier system's tables a few seconds into the measurement,
and the more systems came before, the more it finds to do. Vacuumed, they leave it nothing.
"""

import time

import psycopg

from tvdb_assets.lib import database

# Runnable tasks (/proc/loadavg's fourth field) when only the bench itself runs.
_QUIET_RUNNABLE = 1
_CALM_SAMPLES = 5  # consecutive quiet samples, 0.1 s apart
_MAX_WAIT_SECONDS = 60.0


def settle(root_uri: str) -> float:
    """Vacuum every database and checkpoint the server, then wait (at most a minute) until
    nothing else runs; return the seconds it waited."""
    _vacuum_everything(root_uri)
    started = time.monotonic()
    with psycopg.connect(root_uri, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        calm = 0
        while calm < _CALM_SAMPLES and time.monotonic() - started < _MAX_WAIT_SECONDS:
            vacuuming = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
            ).fetchone()
            busy = (vacuuming[0] if vacuuming else 0) > 0 or _runnable() > _QUIET_RUNNABLE
            calm = 0 if busy else calm + 1
            time.sleep(0.1)
    return round(time.monotonic() - started, 2)


def _vacuum_everything(root_uri: str) -> None:
    with psycopg.connect(root_uri, autocommit=True) as conn:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate"
            )
        ]
    for name in names:
        with psycopg.connect(database.with_database(root_uri, name), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")


def _runnable() -> int:
    with open("/proc/loadavg") as loadavg:
        running = loadavg.read().split()[3].split("/")[0]
    return int(running) - 1  # the reading process itself is running
