"""`parse_cache`: paid-for parses by file content, so a renamed or copied file is free."""

from collections.abc import Iterable, Sequence

import psycopg

from tvdb_assets.lib.models import ParsedDocument


def lookup(
    conn: psycopg.Connection, parser: str, hashes: Iterable[str]
) -> dict[str, ParsedDocument]:
    rows = conn.execute(
        "SELECT sha256, markdown, mime, pages, page_starts FROM parse_cache "
        "WHERE parser = %s AND sha256 = ANY(%s)",
        (parser, list(set(hashes))),
    ).fetchall()
    return {
        sha: ParsedDocument(markdown, parser, mime, pages, tuple(starts))
        for sha, markdown, mime, pages, starts in rows
    }


def save(conn: psycopg.Connection, parsed: Sequence[tuple[str, ParsedDocument]]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO parse_cache (sha256, parser, mime, pages, page_starts, markdown) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(sha, d.parser, d.mime, d.pages, list(d.page_starts), d.markdown)
             for sha, d in parsed],
        )  # fmt: skip


def has(conn: psycopg.Connection, parser: str, sha256: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM parse_cache WHERE sha256 = %s AND parser = %s", (sha256, parser)
    ).fetchone()
    return row is not None
