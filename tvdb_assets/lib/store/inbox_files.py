"""`inbox_files`: the uploads as last seen, so a sensor tick only hashes what changed."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg

from tvdb_assets.lib.ids import path_bytes, shown_path


@dataclass(frozen=True, slots=True)
class InboxFile:
    partition_key: str
    path: str  # as the file system gives it; `shown` is for people and for Postgres
    bytes: int
    mtime_ns: int
    sha256: str

    @property
    def shown(self) -> str:
        return shown_path(self.path)


# `path` in memory is the name as the file system gives it; the table keeps its bytes.
_COLUMNS = "partition_key, raw_path, bytes, mtime_ns, sha256"


def _file(row: tuple) -> InboxFile:
    key, raw, size, mtime, sha = row
    return InboxFile(key, bytes(raw).decode("utf-8", "surrogateescape"), size, mtime, sha)


def load_all(conn: psycopg.Connection) -> dict[str, InboxFile]:
    """Every known upload by path: one query per tick, whatever the inbox size."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM inbox_files").fetchall()
    files = [_file(row) for row in rows]
    return {f.path: f for f in files}


def load(conn: psycopg.Connection, partition_keys: Sequence[str]) -> dict[str, InboxFile]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM inbox_files WHERE partition_key = ANY(%s)",
        (list(partition_keys),),
    ).fetchall()
    return {row[0]: _file(row) for row in rows}


def unfinished(
    conn: psycopg.Connection, partition_keys: Sequence[str] | None = None
) -> list[InboxFile]:
    """Uploads whose current content is not stored, in path order.

    Content is stored when its document row carries the upload's hash, chunked and marked
    indexed by the last asset, or when it failed: an open ingest error for that hash.
    """
    query = f"""SELECT {_COLUMNS} FROM inbox_files i
                 WHERE NOT EXISTS (SELECT 1 FROM documents d
                                    WHERE d.partition_key = i.partition_key
                                      AND d.sha256 = i.sha256
                                      AND d.chunked_sha256 = i.sha256
                                      AND d.indexed_at IS NOT NULL)
                   AND NOT EXISTS (SELECT 1 FROM ingest_errors e
                                    WHERE e.partition_key = i.partition_key
                                      AND e.sha256 = i.sha256 AND e.resolved_at IS NULL)"""
    params: tuple[object, ...] = ()
    if partition_keys is not None:
        query += " AND i.partition_key = ANY(%s)"
        params = (list(partition_keys),)
    rows = conn.execute(query + " ORDER BY i.raw_path", params).fetchall()
    return [_file(row) for row in rows]


def upsert(conn: psycopg.Connection, files: Iterable[InboxFile]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO inbox_files ({_COLUMNS}, path) VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (partition_key) DO UPDATE SET
                    raw_path = excluded.raw_path, path = excluded.path,
                    bytes = excluded.bytes, mtime_ns = excluded.mtime_ns,
                    sha256 = excluded.sha256, seen_at = now()""",
            [
                (
                    f.partition_key,
                    path_bytes(f.path),
                    f.bytes,
                    f.mtime_ns,
                    f.sha256,
                    shown_path(f.path),
                )
                for f in files
            ],  # fmt: skip
        )


def retire(conn: psycopg.Connection, partition_keys: Sequence[str]) -> None:
    """Forget deleted uploads and every row derived from them (embeddings cascade)."""
    keys = list(partition_keys)
    for table in ("chunks", "documents", "inbox_files", "claims"):
        conn.execute(f"DELETE FROM {table} WHERE partition_key = ANY(%s)", (keys,))
    conn.execute(
        "UPDATE ingest_errors SET resolved_at = now() "
        "WHERE partition_key = ANY(%s) AND resolved_at IS NULL",
        (keys,),
    )


# Which uploads to run again (`lib.reruns`), each in path order. Only uploads still in the
# inbox are run again: one that is gone retires instead.


def with_passing_failures(
    conn: psycopg.Connection, max_attempts: int | None, first_pause_seconds: float
) -> list[InboxFile]:
    """Uploads whose current content failed for a passing cause, and for nothing else.
    With `max_attempts`, only those due: fewer failed tries than that, and the last one
    older than a pause that doubles with each try."""
    due = (
        """AND e.attempt < %(max_attempts)s
           AND e.at + make_interval(secs => %(pause)s * 2 ^ (e.attempt - 1)) <= now()"""
        if max_attempts is not None
        else ""
    )
    return _where(
        conn,
        f"""EXISTS (SELECT 1 FROM ingest_errors e
                     WHERE e.partition_key = i.partition_key AND e.resolved_at IS NULL
                       AND e.transient AND (e.sha256 IS NULL OR e.sha256 = i.sha256) {due})
            AND NOT EXISTS (SELECT 1 FROM ingest_errors e
                             WHERE e.partition_key = i.partition_key
                               AND e.resolved_at IS NULL AND NOT e.transient)""",
        {"max_attempts": max_attempts, "pause": first_pause_seconds},
    )


def with_fallbacks(conn: psycopg.Connection) -> list[InboxFile]:
    """Uploads whose stored document was parsed, or any of whose chunks was embedded, by
    the hybrid mode's local stand-in."""
    return _where(
        conn,
        """EXISTS (SELECT 1 FROM documents d WHERE d.partition_key = i.partition_key
                      AND d.sha256 = i.sha256 AND d.fallback)
           OR EXISTS (SELECT 1 FROM embeddings e WHERE e.partition_key = i.partition_key
                         AND e.fallback)""",
        {},
    )


def built_otherwise(
    conn: psycopg.Connection, max_tokens: int, overlap_tokens: int, model: str, dims: int
) -> list[InboxFile]:
    """Uploads whose current content is parsed but not built with these settings: cut
    with other chunker settings, embedded by another model or at other dims (stand-ins
    aside), or not built through (a run stopped half-way through a rebuild)."""
    return _where(
        conn,
        """EXISTS (SELECT 1 FROM documents d
                    WHERE d.partition_key = i.partition_key AND d.sha256 = i.sha256
                      AND (d.indexed_at IS NULL
                           OR d.chunk_max_tokens IS DISTINCT FROM %(max_tokens)s
                           OR d.chunk_overlap_tokens IS DISTINCT FROM %(overlap)s
                           OR EXISTS (SELECT 1 FROM embeddings e
                                       WHERE e.partition_key = d.partition_key
                                         AND NOT e.fallback
                                         AND (e.model <> %(model)s OR e.dims <> %(dims)s))))""",
        {"max_tokens": max_tokens, "overlap": overlap_tokens, "model": model, "dims": dims},
    )


def everything(conn: psycopg.Connection) -> list[InboxFile]:
    return _where(conn, "true", {})


def _where(conn: psycopg.Connection, condition: str, params: dict[str, object]) -> list[InboxFile]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM inbox_files i WHERE {condition} ORDER BY i.raw_path", params
    ).fetchall()
    return [_file(row) for row in rows]


def rows_without_upload(conn: psycopg.Connection) -> list[str]:
    """Partition keys of documents (or their chunks) whose upload the registry no longer
    holds: left by a crash between forgetting an upload and retiring its rows."""
    rows = conn.execute(
        """SELECT partition_key FROM documents UNION SELECT partition_key FROM chunks
           EXCEPT SELECT partition_key FROM inbox_files ORDER BY 1"""
    ).fetchall()
    return [row[0] for row in rows]


def keys(conn: psycopg.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT partition_key FROM inbox_files")}
