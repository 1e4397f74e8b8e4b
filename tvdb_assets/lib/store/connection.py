"""Connections to the pipeline's database, with the schema migrated and pgvector registered."""

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from pgvector.psycopg import register_vector

from tvdb_assets.lib import database
from tvdb_assets.lib.store.schema import migrate

_migrated: set[str] = set()


@contextmanager
def connect(url: str | None = None) -> Iterator[psycopg.Connection]:
    """A connection to the pipeline's database; the schema is migrated once per process."""
    url = url or database.database_url()
    with psycopg.connect(url) as conn:
        if url not in _migrated:
            migrate(conn)
            _migrated.add(url)
        register_vector(conn)
        conn.commit()
        yield conn
