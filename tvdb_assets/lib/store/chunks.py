"""`chunks`: token-bounded pieces of each document, with stable content-derived ids."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from tvdb_assets.lib.store.connection import lock_partitions


@dataclass(frozen=True, slots=True)
class ChunkRow:
    id: uuid.UUID
    partition_key: str
    ord: int
    heading_path: tuple[str, ...]
    text: str
    text_sha256: str
    tokens: int
    page_start: int | None
    page_end: int | None


_COLUMNS = "id, partition_key, ord, heading_path, text, text_sha256, tokens, page_start, page_end"
_TYPES = ["uuid", "text", "int4", "text[]", "text", "text", "int4", "int4", "int4"]


def replace(
    conn: psycopg.Connection, partition_keys: Sequence[str], rows: Sequence[ChunkRow]
) -> tuple[int, int]:
    """Make these partitions' chunks exactly `rows`; return (added, superseded).

    Ids derive from content, so unchanged chunks keep their rows and their embeddings; only
    new ones are inserted. Chunks that are gone are not deleted yet: superseded, they and
    their vectors keep serving search until `drop_superseded`, in the transaction that
    writes the new chunks' vectors.
    """
    keys = list(partition_keys)
    ids = [r.id for r in rows]
    lock_partitions(conn, keys)
    superseded = conn.execute(
        "UPDATE chunks SET superseded = true "
        "WHERE partition_key = ANY(%s) AND NOT (id = ANY(%s)) AND NOT superseded",
        (keys, ids),
    ).rowcount
    # A chunk cut again as it was before the last change is current again.
    conn.execute("UPDATE chunks SET superseded = false WHERE id = ANY(%s) AND superseded", (ids,))
    kept = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM chunks WHERE partition_key = ANY(%s))", (keys,)
    ).fetchone()
    if kept is not None and not kept[0]:
        # Nothing of these documents is stored (a first ingest, or every chunk changed):
        # no row can clash, so the rows go straight in.
        _copy(conn, "chunks", rows)
        return len(rows), superseded
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS incoming_chunks "
        "(LIKE chunks INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    _copy(conn, "incoming_chunks", rows)
    added = conn.execute(
        f"INSERT INTO chunks ({_COLUMNS}) SELECT {_COLUMNS} FROM incoming_chunks "
        "ON CONFLICT (id) DO NOTHING"
    ).rowcount
    conn.execute("TRUNCATE incoming_chunks")
    return added, superseded


def drop_superseded(conn: psycopg.Connection, partition_keys: Sequence[str]) -> int:
    """Delete these documents' superseded chunks (their vectors cascade): their new chunks
    have their vectors now."""
    return conn.execute(
        "DELETE FROM chunks WHERE partition_key = ANY(%s) AND superseded",
        (list(partition_keys),),
    ).rowcount


def _copy(conn: psycopg.Connection, table: str, rows: Sequence[ChunkRow]) -> None:
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY {table} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(_TYPES)
        for r in rows:
            copy.write_row(
                (r.id, r.partition_key, r.ord, list(r.heading_path), r.text, r.text_sha256,
                 r.tokens, r.page_start, r.page_end)
            )  # fmt: skip


def counts(conn: psycopg.Connection, partition_keys: Sequence[str]) -> dict[str, tuple[int, int]]:
    """partition key -> (current chunks, tokens)."""
    rows = conn.execute(
        "SELECT partition_key, count(*), coalesce(sum(tokens), 0) FROM chunks "
        "WHERE partition_key = ANY(%s) AND NOT superseded GROUP BY partition_key",
        (list(partition_keys),),
    ).fetchall()
    return {key: (n, tokens) for key, n, tokens in rows}


def texts(conn: psycopg.Connection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    rows = conn.execute("SELECT id, text FROM chunks WHERE id = ANY(%s)", (list(ids),))
    return dict(rows.fetchall())
