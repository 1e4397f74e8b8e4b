"""`embedding_cache`: a vector per (model, dims, text hash), so the same text is paid once."""

from collections.abc import Iterable

import numpy as np
import psycopg

from tvdb_assets.lib.store.connection import copy_binary


def lookup(
    conn: psycopg.Connection, model: str, dims: int, text_hashes: Iterable[str]
) -> dict[str, np.ndarray]:
    rows = conn.execute(
        "SELECT text_sha256, embedding FROM embedding_cache "
        "WHERE model = %s AND dims = %s AND text_sha256 = ANY(%s)",
        (model, dims, list(set(text_hashes))),
    ).fetchall()
    return {text_hash: vector for text_hash, vector in rows}


def remember(
    conn: psycopg.Connection, model: str, dims: int, vectors: dict[str, np.ndarray]
) -> None:
    """Add freshly paid-for vectors to the cache (another run may have added some first)."""
    if not vectors:
        return
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS incoming_cache "
        "(LIKE embedding_cache INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    copy_binary(
        conn,
        "incoming_cache",
        (("model", "text"), ("dims", "int4"), ("text_sha256", "text"), ("embedding", "vector")),
        ((model, dims, text_hash, vector) for text_hash, vector in vectors.items()),
    )
    conn.execute("INSERT INTO embedding_cache SELECT * FROM incoming_cache ON CONFLICT DO NOTHING")
    conn.execute("TRUNCATE incoming_cache")
