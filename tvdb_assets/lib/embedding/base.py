"""The embedder contract: one place that packs texts into requests, subclasses make calls."""

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from tvdb_assets.lib.tokens import DEFAULT_ENCODING, count_tokens


class Embedder(ABC):
    """Turns texts into L2-normalised float32 vectors of `dims` dimensions.

    `embed` splits the texts into requests that respect the provider's limits (inputs per
    request, tokens per request, tokens per input) and calls `_embed_batch` once per
    request, in order. Subclasses implement only `_embed_batch`; retries, rate limits and
    costs belong to the real clients' `_embed_batch`, never to the packing.

    `calls` and `texts_embedded` count requests made and texts sent, so callers can report
    (and tests can assert) that cached or empty input cost no call at all.
    """

    model: str
    dims: int
    # OpenAI's documented limits for the embeddings endpoint.
    max_inputs_per_request: int = 2048
    max_tokens_per_request: int = 300_000
    max_tokens_per_input: int = 8192
    # Tokeniser used to size requests (text-embedding-3-* use cl100k_base).
    encoding: str = DEFAULT_ENCODING

    def __init__(self) -> None:
        self.calls = 0
        self.texts_embedded = 0

    def embed(
        self, texts: Sequence[str], token_counts: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]:
        """Vectors for `texts`, shape (len(texts), dims), rows of unit length.

        `token_counts` (one per text, e.g. `Chunk.tokens`) avoids tokenising again. A text
        longer than `max_tokens_per_input` raises ValueError before any request is made.
        """
        if token_counts is None:
            token_counts = [count_tokens(t, self.encoding) for t in texts]
        elif len(token_counts) != len(texts):
            raise ValueError(f"got {len(token_counts)} token counts for {len(texts)} texts")
        for index, tokens in enumerate(token_counts):
            if tokens > self.max_tokens_per_input:
                raise ValueError(
                    f"text {index} has {tokens} tokens; {self.model} accepts at most "
                    f"{self.max_tokens_per_input} per input"
                )

        parts: list[npt.NDArray[np.float32]] = []
        for start, stop in self._requests(token_counts):
            batch = list(texts[start:stop])
            vectors = self._embed_batch(batch)
            self.calls += 1
            parts.append(self._check(vectors, len(batch)))
            self.texts_embedded += len(batch)
        if not parts:
            return np.empty((0, self.dims), dtype=np.float32)
        return np.concatenate(parts)

    @abstractmethod
    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.floating]:
        """One request: a (len(texts), dims) array in the order of `texts`."""

    def _requests(self, token_counts: Sequence[int]) -> Iterator[tuple[int, int]]:
        """[start, stop) ranges packed greedily under both per-request limits."""
        start = 0
        tokens = 0
        for index, count in enumerate(token_counts):
            full = index - start >= self.max_inputs_per_request
            if index > start and (full or tokens + count > self.max_tokens_per_request):
                yield start, index
                start, tokens = index, 0
            tokens += count
        if start < len(token_counts):
            yield start, len(token_counts)

    def _check(self, vectors: npt.NDArray[np.floating], expected: int) -> npt.NDArray[np.float32]:
        out = np.asarray(vectors, dtype=np.float32)
        if out.shape != (expected, self.dims):
            raise ValueError(
                f"{self.model} returned shape {out.shape}, expected ({expected}, {self.dims})"
            )
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise ValueError(f"{self.model} returned a zero or non-finite vector")
        return out / norms
