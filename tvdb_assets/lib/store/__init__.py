"""The pipeline's Postgres tables: one module per table family, all in plain SQL + COPY."""

from tvdb_assets.lib.store.connection import connect

__all__ = ["connect"]
