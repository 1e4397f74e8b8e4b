"""Stands in for a real embedder that cannot be built (no key): every call fails cleanly."""

import numpy as np
import numpy.typing as npt

from tvdb_assets.lib.embedding.base import Embedder
from tvdb_assets.lib.errors import ServiceError


class UnavailableEmbedder(Embedder):
    """Has the real model's name and dims, so hybrid mode falls back exactly as on an outage."""

    def __init__(self, service: str, model: str, dims: int, reason: str) -> None:
        super().__init__()
        self.service = service
        self.model = model
        self.dims = dims
        self.reason = reason

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.floating]:
        raise ServiceError(self.service, self.reason, retryable=False)
