"""Embedders: the abstract base that batches requests, and its implementations."""

from tvdb_assets.lib.embedding.base import Embedder
from tvdb_assets.lib.embedding.mock import MockEmbedder

__all__ = ["Embedder", "MockEmbedder"]
