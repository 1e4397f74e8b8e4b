"""Embedders: the abstract base that batches requests, and its implementations."""

from tvdb_assets.lib.embedding.base import Embedder, EmbedResult, InputRejected
from tvdb_assets.lib.embedding.mock import MockEmbedder

__all__ = ["EmbedResult", "Embedder", "InputRejected", "MockEmbedder"]
