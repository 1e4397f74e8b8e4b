"""`inbox_files`: the uploads as last seen, so a sensor tick only hashes what changed."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True, slots=True)
class InboxFile:
    partition_key: str
    path: str
    bytes: int
    mtime_ns: int
    sha256: str
    requested_sha256: str | None = None


_COLUMNS = "partition_key, path, bytes, mtime_ns, sha256, requested_sha256"


def load_all(conn: psycopg.Connection) -> dict[str, InboxFile]:
    """Every known upload by path: one query per tick, whatever the inbox size."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM inbox_files").fetchall()
    return {row[1]: InboxFile(*row) for row in rows}


def load(conn: psycopg.Connection, partition_keys: Sequence[str]) -> dict[str, InboxFile]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM inbox_files WHERE partition_key = ANY(%s)",
        (list(partition_keys),),
    ).fetchall()
    return {row[0]: InboxFile(*row) for row in rows}


def upsert(conn: psycopg.Connection, files: Iterable[InboxFile]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO inbox_files ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (partition_key) DO UPDATE SET
                    path = excluded.path, bytes = excluded.bytes, mtime_ns = excluded.mtime_ns,
                    sha256 = excluded.sha256, requested_sha256 = excluded.requested_sha256,
                    seen_at = now()""",
            [
                (f.partition_key, f.path, f.bytes, f.mtime_ns, f.sha256, f.requested_sha256)
                for f in files
            ],
        )


def retire(conn: psycopg.Connection, partition_keys: Sequence[str]) -> None:
    """Forget deleted uploads and every row derived from them (embeddings cascade)."""
    keys = list(partition_keys)
    for table in ("chunks", "documents", "inbox_files"):
        conn.execute(f"DELETE FROM {table} WHERE partition_key = ANY(%s)", (keys,))
    conn.execute(
        "UPDATE ingest_errors SET resolved_at = now() "
        "WHERE partition_key = ANY(%s) AND resolved_at IS NULL",
        (keys,),
    )
