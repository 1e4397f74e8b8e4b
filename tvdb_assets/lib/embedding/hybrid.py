"""Hybrid embedding: the service first, the local embedder where the service cannot answer."""

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from tvdb_assets.lib.embedding.base import Embedder, EmbedResult, StandIns
from tvdb_assets.lib.resilience import CircuitBreaker


class HybridEmbedder(Embedder):
    """Stands in (flagged) on an outage, open circuit, spent retries, budget or missing key.

    A text the service refuses for its input is not an outage: it stays refused, as it
    would in real mode. The stand-ins are of the local embedder's model, never mixed with
    the service's vectors: the pipeline stores them under that model, flagged `fallback`,
    for a later heal to replace.
    """

    def __init__(self, real: Embedder, local: Embedder) -> None:
        super().__init__()
        self.real = real
        self.local = local
        self.model = real.model
        self.dims = real.dims
        self.cacheable = real.cacheable

    def circuit(self) -> CircuitBreaker | None:
        return self.real.circuit()

    def close(self) -> None:
        self.real.close()
        self.local.close()

    def embed_texts(
        self, texts: Sequence[str], token_counts: Sequence[int] | None = None
    ) -> EmbedResult:
        calls, sent = self.real.calls, self.real.texts_embedded
        result = self.real.embed_texts(texts, token_counts)
        self.calls += self.real.calls - calls
        self.texts_embedded += self.real.texts_embedded - sent
        if not result.missing:
            return result
        failed = list(result.missing)
        counts = [token_counts[i] for i in failed] if token_counts is not None else None
        made = self.local.embed([texts[i] for i in failed], counts)
        vectors = dict(zip(failed, made, strict=True))
        return replace(result, stand_ins=StandIns(self.local.model, self.local.dims, vectors))

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.floating]:
        # Never called: `embed_texts` leaves the packing into requests to the real client.
        raise NotImplementedError("HybridEmbedder embeds through its real client")
