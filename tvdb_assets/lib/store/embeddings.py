"""`embeddings`: one vector per chunk, of the model it was made with, and its HNSW index."""

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from tvdb_assets.lib import settings
from tvdb_assets.lib.store import schema
from tvdb_assets.lib.store.connection import copy_binary
from tvdb_assets.lib.store.schema import index_name, vector_cast

__all__ = ["index_name"]

# Inserting into an HNSW index costs ~7 ms a vector here; building one costs ~0.5 ms a
# vector, over a second per thousand 1,536-dim vectors. So collections up to 100,000 vectors
# (pgai's threshold too) are searched exactly, which is precise and takes well under a
# second; the index is built in bulk once a model has that many vectors, and a batch large
# next to what is indexed rebuilds it rather than inserting one by one.
REBUILD_RATIO = 14


@dataclass(frozen=True, slots=True)
class PendingChunk:
    """A chunk that has no vector of the configured model yet."""

    id: uuid.UUID
    partition_key: str
    text_sha256: str
    tokens: int


def pending_chunks(
    conn: psycopg.Connection, partition_keys: Sequence[str], model: str, dims: int
) -> list[PendingChunk]:
    """Without their text: most get a vector from the cache (or made ahead) by its hash."""
    rows = conn.execute(
        """SELECT c.id, c.partition_key, c.text_sha256, c.tokens
             FROM chunks c LEFT JOIN embeddings e ON e.chunk_id = c.id
            WHERE c.partition_key = ANY(%s) AND NOT c.superseded
              AND (e.chunk_id IS NULL OR e.model <> %s OR e.dims <> %s OR e.fallback)
            ORDER BY c.partition_key, c.ord""",
        (list(partition_keys), model, dims),
    ).fetchall()
    return [PendingChunk(*row) for row in rows]


def write(
    conn: psycopg.Connection,
    model: str,
    dims: int,
    rows: Sequence[tuple[uuid.UUID, str, np.ndarray]],
    fallback: bool = False,
) -> None:
    """Store (chunk id, partition key, vector) rows, replacing any older vector of a chunk.

    Callers writing many rows wrap their writes in `index_maintenance`.
    """
    if not rows:
        return
    conn.execute("DELETE FROM embeddings WHERE chunk_id = ANY(%s)", ([r[0] for r in rows],))
    copy_binary(
        conn,
        "embeddings",
        (("chunk_id", "uuid"), ("partition_key", "text"), ("model", "text"), ("dims", "int4"),
         ("embedding", "vector"), ("fallback", "bool")),
        ((chunk, key, model, dims, vector, fallback) for chunk, key, vector in rows),
    )  # fmt: skip


@contextmanager
def index_maintenance(
    conn: psycopg.Connection, model: str, dims: int, incoming: int
) -> Iterator[None]:
    """Keep the (model, dims) HNSW index in the cheapest way around writing `incoming` rows.

    Small collections go without (search is exact); the index is built in bulk once the
    model has `settings.hnsw_min_rows()` vectors; a batch large next to what is indexed drops it
    first and rebuilds it after, instead of inserting vector by vector.
    """
    indexable = dims <= schema.HNSW_MAX_DIMS and incoming > 0
    indexed = indexable and schema.has_vector_index(conn, model, dims)
    stored = _count(conn, model, dims) if indexable else 0
    rebuild = indexed and incoming * REBUILD_RATIO > stored + incoming
    if rebuild:
        schema.drop_vector_index(conn, model, dims)
    yield
    if rebuild:
        schema.create_vector_index(conn, model, dims)
    elif indexable and not indexed:
        build_index_when_due(conn, model, dims)


def build_index_when_due(conn: psycopg.Connection, model: str, dims: int) -> None:
    """Build the (model, dims) index once the model has `settings.hnsw_min_rows()` vectors."""
    if dims > schema.HNSW_MAX_DIMS or schema.has_vector_index(conn, model, dims):
        return
    if _count(conn, model, dims) >= settings.hnsw_min_rows():
        schema.create_vector_index(conn, model, dims)


def _count(conn: psycopg.Connection, model: str, dims: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM embeddings WHERE model = %s AND dims = %s", (model, dims)
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class SearchHit:
    score: float
    document: str
    partition_key: str
    heading_path: tuple[str, ...]
    page_start: int | None
    page_end: int | None
    text: str


def nearest(
    conn: psycopg.Connection, query: np.ndarray, model: str, dims: int, k: int
) -> list[SearchHit]:
    """The k chunks nearest to `query` among vectors of this one model (never mixed)."""
    cast = sql.SQL(vector_cast(dims))
    statement = sql.SQL(
        """SELECT 1 - (e.embedding::{cast} <=> %(q)s::{cast}) AS score, d.path,
                  c.partition_key, c.heading_path, c.page_start, c.page_end, c.text
             FROM embeddings e
             JOIN chunks c ON c.id = e.chunk_id
             JOIN documents d ON d.partition_key = c.partition_key
            WHERE e.model = %(model)s AND e.dims = %(dims)s
            ORDER BY e.embedding::{cast} <=> %(q)s::{cast}
            LIMIT %(k)s"""
    ).format(cast=cast)
    rows = conn.execute(statement, {"q": query, "model": model, "dims": dims, "k": k}).fetchall()
    return [
        SearchHit(float(score), path, key, tuple(heading), start, end, text)
        for score, path, key, heading, start, end, text in rows
    ]


@dataclass(frozen=True, slots=True)
class Coverage:
    """How the chunks of some documents stand: which lack a vector or hold a broken one,
    and how many vectors each model wrote (a hybrid fallback or a model change in progress
    leaves several)."""

    chunks: int
    without_vector: int
    without_vector_known_why: int  # an open embed error in `ingest_errors` says why
    with_wrong_dims: int  # the vector's length is not its model's dims
    zero: int  # vectors of length 0: they match nothing (pgvector refuses NaN itself)
    by_model: dict[tuple[str, int, bool], int]  # (model, dims, fallback) -> vectors


def coverage(conn: psycopg.Connection, partition_keys: Sequence[str] | None) -> Coverage:
    """Of these documents' current chunks (or all): the gaps, and the vectors per model."""
    keys = None if partition_keys is None else list(partition_keys)
    scope = """(%(keys)s::text[] IS NULL OR c.partition_key = ANY(%(keys)s))
               AND NOT c.superseded"""
    known = conn.execute(
        f"""SELECT count(*) FROM chunks c
             WHERE {scope}
               AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.chunk_id = c.id)
               AND EXISTS (SELECT 1 FROM ingest_errors i WHERE i.partition_key = c.partition_key
                           AND i.stage = 'embed' AND i.resolved_at IS NULL)""",
        {"keys": keys},
    ).fetchone()
    rows = conn.execute(
        f"""SELECT e.model, e.dims, e.fallback, count(*),
                   count(*) FILTER (WHERE e.chunk_id IS NOT NULL
                                      AND vector_dims(e.embedding) <> e.dims),
                   count(*) FILTER (WHERE vector_norm(e.embedding) = 0)
              FROM chunks c LEFT JOIN embeddings e ON e.chunk_id = c.id
             WHERE {scope}
             GROUP BY 1, 2, 3""",
        {"keys": keys},
    ).fetchall()
    by_model = {(m, d, f): n for m, d, f, n, _, _ in rows if m is not None}
    return Coverage(
        chunks=sum(r[3] for r in rows),
        without_vector=sum(r[3] for r in rows if r[0] is None),
        without_vector_known_why=known[0] if known else 0,
        with_wrong_dims=sum(r[4] for r in rows),
        zero=sum(r[5] for r in rows),
        by_model=by_model,
    )
