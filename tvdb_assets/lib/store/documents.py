"""`documents`: each upload's parsed markdown, one row per partition."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import psycopg

from tvdb_assets.lib.store.connection import lock_partitions


@dataclass(frozen=True, slots=True)
class DocumentRow:
    partition_key: str
    path: str
    sha256: str
    bytes: int
    mime: str
    parser: str
    pages: int | None
    page_starts: tuple[int, ...]
    markdown: str
    fallback: bool = False  # hybrid: parsed locally because the service could not answer
    fallback_reason: str | None = None  # why: reported by the run, not stored


_COLUMNS = (
    "partition_key, path, sha256, bytes, mime, parser, pages, page_starts, markdown, fallback"
)


def replace(conn: psycopg.Connection, rows: Sequence[DocumentRow], run_id: str | None) -> None:
    """Replace these partitions' rows with one DELETE and one COPY (caller holds the tx)."""
    if not rows:
        return
    lock_partitions(conn, [r.partition_key for r in rows])
    conn.execute(
        "DELETE FROM documents WHERE partition_key = ANY(%s)", ([r.partition_key for r in rows],)
    )
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY documents ({_COLUMNS}, run_id) FROM STDIN") as copy,
    ):
        for r in rows:
            copy.write_row(
                (r.partition_key, r.path, r.sha256, r.bytes, r.mime, r.parser, r.pages,
                 list(r.page_starts), r.markdown, r.fallback, run_id)
            )  # fmt: skip


def mark_chunked(
    conn: psycopg.Connection,
    documents: Sequence[DocumentRow],
    max_tokens: int,
    overlap_tokens: int,
) -> None:
    """These documents' chunks were cut from these rows, with these chunker settings;
    their vectors are still to come.

    A document parsed anew meanwhile has another hash, so it stays unfinished.
    """
    conn.execute(
        "UPDATE documents d SET chunked_sha256 = d.sha256, indexed_at = NULL, "
        "chunk_max_tokens = %s, chunk_overlap_tokens = %s "
        "FROM unnest(%s::text[], %s::text[]) AS cut(partition_key, sha256) "
        "WHERE d.partition_key = cut.partition_key AND d.sha256 = cut.sha256",
        (max_tokens, overlap_tokens,
         [d.partition_key for d in documents], [d.sha256 for d in documents]),
    )  # fmt: skip


def mark_indexed(conn: psycopg.Connection, partition_keys: Sequence[str]) -> None:
    """Every chunk of these documents has its vector, or a recorded reason it has none.

    Called in the transaction that wrote the vectors; only chunks of the current content
    count.
    """
    conn.execute(
        "UPDATE documents SET indexed_at = now() "
        "WHERE partition_key = ANY(%s) AND chunked_sha256 = sha256",
        (list(partition_keys),),
    )


def load(conn: psycopg.Connection, partition_keys: Sequence[str]) -> Iterator[DocumentRow]:
    """Stream the documents of these partitions (server-side cursor: markdown can be large)."""
    with conn.cursor(name="load_documents") as cur:
        cur.itersize = 50
        cur.execute(
            f"SELECT {_COLUMNS} FROM documents WHERE partition_key = ANY(%s) "
            "ORDER BY partition_key",
            (list(partition_keys),),
        )
        for key, path, sha, size, mime, parser, pages, starts, markdown, fallback in cur:
            yield DocumentRow(
                key, path, sha, size, mime, parser, pages, tuple(starts), markdown, fallback
            )


def hashes(conn: psycopg.Connection, partition_keys: Sequence[str]) -> dict[str, str]:
    """partition key -> content hash of the stored document."""
    return _by_key(conn, partition_keys, "sha256")


def paths_and_hashes(
    conn: psycopg.Connection, partition_keys: Sequence[str]
) -> dict[str, tuple[str, str]]:
    """partition key -> (path as shown, content hash) of the stored document."""
    rows = conn.execute(
        "SELECT partition_key, path, sha256 FROM documents WHERE partition_key = ANY(%s)",
        (list(partition_keys),),
    ).fetchall()
    return {key: (path, sha) for key, path, sha in rows}


def _by_key(conn: psycopg.Connection, partition_keys: Sequence[str], column: str) -> dict[str, str]:
    rows = conn.execute(
        f"SELECT partition_key, {column} FROM documents WHERE partition_key = ANY(%s)",
        (list(partition_keys),),
    ).fetchall()
    return dict(rows)


def hashes_by_path(conn: psycopg.Connection) -> dict[str, str]:
    """path -> content hash of every stored document."""
    return dict(conn.execute("SELECT path, sha256 FROM documents").fetchall())


def empty_paths(
    conn: psycopg.Connection, partition_keys: Sequence[str] | None, limit: int = 20
) -> list[str]:
    """Paths of documents (these, or all) whose markdown is blank."""
    # A document's first characters nearly always settle it: only where they are blank is
    # all of its markdown read.
    rows = conn.execute(
        """SELECT path FROM documents
            WHERE (%(keys)s::text[] IS NULL OR partition_key = ANY(%(keys)s))
              AND CASE WHEN btrim(left(markdown, 64)) <> '' THEN false
                       ELSE btrim(markdown) = '' END
            ORDER BY path LIMIT %(limit)s""",
        {"keys": None if partition_keys is None else list(partition_keys), "limit": limit},
    ).fetchall()
    return [path for (path,) in rows]
