"""`claims` and `owned_runs`: which live process is ingesting which documents, in which runs.

An owner is a process that holds the session advisory lock (OWNER_LOCK_CLASS, owner) on a
connection of its own for as long as it lives. Postgres drops the lock when the process
dies, whatever the way (SIGKILL, a lost connection, a restarted server), so liveness is
one look at `pg_locks`, never a heartbeat or a time-out.
"""

import random
from collections.abc import Sequence

import psycopg

from tvdb_assets.lib.store.inbox_files import InboxFile

# The first half of the two-key advisory lock; the second is the owner's number.
OWNER_LOCK_CLASS = 0x7476  # "tv"

_LIVE = """EXISTS (SELECT 1 FROM pg_locks l
                    WHERE l.locktype = 'advisory' AND l.granted
                      AND l.database = (SELECT oid FROM pg_database
                                         WHERE datname = current_database())
                      AND l.classid = %(lock_class)s AND l.objid::bigint = {owner}::bigint
                      AND l.objsubid = 2)"""


class Owner:
    """This process as an owner of claims and runs, for as long as `conn` stays open."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        while True:
            number = random.randint(1, 2**31 - 1)
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (OWNER_LOCK_CLASS, number)
            ).fetchone()
            if row and row[0]:
                self.number = number
                return

    def close(self) -> None:
        """Give up every claim; the lock goes with the connection."""
        try:
            with self.conn.transaction():
                self.conn.execute("DELETE FROM claims WHERE owner = %s", (self.number,))
                self.conn.execute("DELETE FROM owned_runs WHERE owner = %s", (self.number,))
        except psycopg.Error:
            pass  # the database is gone: the claims died with the lock
        finally:
            self.conn.close()


def busy_elsewhere(conn: psycopg.Connection, owner: int | None) -> dict[str, int]:
    """Partition key -> owner, for claims that a live process other than `owner` holds."""
    rows = conn.execute(
        "SELECT c.partition_key, c.owner FROM claims c "
        "WHERE c.owner <> %(me)s AND " + _LIVE.format(owner="c.owner"),
        {"me": owner or 0, "lock_class": OWNER_LOCK_CLASS},
    ).fetchall()
    return dict(rows)


def claim(conn: psycopg.Connection, owner: int, files: Sequence[InboxFile]) -> None:
    """Take these documents for `owner` (the caller checked that no live owner has them)."""
    conn.execute(
        "INSERT INTO claims (partition_key, sha256, owner) "
        "SELECT k, s, %s FROM unnest(%s::text[], %s::text[]) AS claimed(k, s) "
        "ON CONFLICT (partition_key) DO UPDATE SET sha256 = excluded.sha256, "
        "owner = excluded.owner, claimed_at = now()",
        (owner, [f.partition_key for f in files], [f.sha256 for f in files]),
    )


def release(conn: psycopg.Connection, owner: int, partition_keys: Sequence[str]) -> None:
    conn.execute(
        "DELETE FROM claims WHERE owner = %s AND partition_key = ANY(%s)",
        (owner, list(partition_keys)),
    )


def own_run(conn: psycopg.Connection, owner: int, run_id: str) -> None:
    """Record, before it starts, that `owner` executes this run in its own process."""
    conn.execute(
        "INSERT INTO owned_runs (run_id, owner) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (run_id, owner),
    )


def disown_runs(conn: psycopg.Connection, run_ids: Sequence[str]) -> None:
    conn.execute("DELETE FROM owned_runs WHERE run_id = ANY(%s)", (list(run_ids),))


def orphaned_runs(conn: psycopg.Connection) -> list[str]:
    """Runs whose owning process is gone: they can never finish, and must be marked failed."""
    rows = conn.execute(
        "SELECT r.run_id FROM owned_runs r WHERE NOT " + _LIVE.format(owner="r.owner"),
        {"lock_class": OWNER_LOCK_CLASS},
    ).fetchall()
    return [run_id for (run_id,) in rows]
