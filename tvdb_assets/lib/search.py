"""Semantic search over the stored vectors: the Python face of `tvdb search`."""

from collections.abc import Sequence

from tvdb_assets.lib import clients, store
from tvdb_assets.lib.embedding import Embedder, MockEmbedder
from tvdb_assets.lib.errors import ServiceError
from tvdb_assets.lib.store.embeddings import SearchHit, nearest
from tvdb_assets.lib.uploads import UploadStore, links


def search(query: str, k: int = 5, embedder: Embedder | None = None) -> list[SearchHit]:
    """The k chunks closest to `query`, best first, among vectors of one model.

    The query is embedded by the same embedder as the documents (mock unless given); when a
    hybrid embedder cannot reach its service, the query's stand-in vector is searched among
    the other stand-ins (the fallback's model), never among a mix of the two.
    """
    embedder = embedder or MockEmbedder()
    result = embedder.embed_texts([query])
    stand_in = result.stand_ins
    if result.embedded:
        vector, model, dims = result.vectors[0], embedder.model, embedder.dims
    elif stand_in is not None:
        vector, model, dims = stand_in.vectors[0], stand_in.model, stand_in.dims
    else:
        reason = next(iter({**result.rejected, **result.missing}.values()), "no vector")
        raise ServiceError(embedder.model, f"cannot embed the query: {reason}", retryable=False)
    with store.connect() as conn:
        return nearest(conn, vector, model, dims, k)


def upload_links(
    hits: Sequence[SearchHit],
    uploads: UploadStore | None = None,
    expires_seconds: int = links.DEFAULT_EXPIRES_SECONDS,
) -> dict[str, str]:
    """Links to the hits' original uploads, by partition key, when the uploads are in a
    bucket (the configured store unless given); a local inbox gives none."""
    uploads = uploads or clients.upload_store()
    if not hits or not uploads.gives_links:
        return {}
    with store.connect() as conn:
        keys = [hit.partition_key for hit in hits]
        return links.for_documents(conn, uploads, keys, expires_seconds)
