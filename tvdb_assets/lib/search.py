"""Semantic search over the stored vectors: the Python face of `tvdb search`."""

from tvdb_assets.lib import store
from tvdb_assets.lib.embedding import Embedder, MockEmbedder
from tvdb_assets.lib.store.vectors import SearchHit, nearest


def search(query: str, k: int = 5, embedder: Embedder | None = None) -> list[SearchHit]:
    """The k chunks closest to `query`, best first, among vectors of the embedder's model."""
    embedder = embedder or MockEmbedder()
    vector = embedder.embed([query])[0]
    with store.connect() as conn:
        return nearest(conn, vector, embedder.model, embedder.dims, k)
