"""The embedder contract: one place that packs texts into requests, subclasses make calls."""

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tvdb_assets.lib.errors import BudgetExceeded, ServiceError
from tvdb_assets.lib.resilience import CircuitBreaker
from tvdb_assets.lib.tokens import DEFAULT_ENCODING, count_tokens, get_encoding


class InputRejected(ServiceError):
    """The service refused a request because of its input (not retryable, not an outage)."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(service, reason, retryable=False, status=400)
        self.reason = reason


@dataclass(frozen=True)
class StandIns:
    """Vectors of another model standing in for texts the service failed to embed (hybrid
    mode), by text index: stored under their own model and dims, flagged `fallback`."""

    model: str
    dims: int
    vectors: dict[int, npt.NDArray[np.float32]]


@dataclass(frozen=True)
class EmbedResult:
    """Unit vectors, one row per text; rows of texts without a vector are zeros, never used.

    `rejected`: texts the service refused (their input is at fault). `missing`: texts whose
    request failed for another reason (retries spent, circuit open, budget reached); in
    hybrid mode `stand_ins` has a vector of the fallback's model for each of them.
    """

    vectors: npt.NDArray[np.float32]
    rejected: dict[int, str]
    missing: dict[int, str] = field(default_factory=dict)
    stand_ins: StandIns | None = None

    @property
    def embedded(self) -> list[int]:
        return [
            i for i in range(len(self.vectors)) if i not in self.rejected and i not in self.missing
        ]


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
    # Whether vectors are worth keeping by text in `embedding_cache`: they cost money or
    # time to make again. A local embedder makes one faster than the cache could store it.
    cacheable: bool = True

    def __init__(self) -> None:
        self.calls = 0
        self.texts_embedded = 0

    def circuit(self) -> CircuitBreaker | None:
        """The breaker of the service it calls (its state is saved after each batch)."""
        return None

    def close(self) -> None:
        """Let go of what it holds open (a ledger's connection); a local embedder holds none."""
        return None

    def embed(
        self, texts: Sequence[str], token_counts: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]:
        """Vectors for `texts`, shape (len(texts), dims), rows of unit length.

        Raises InputRejected when the service refused any of the texts; callers that can
        live without some vectors use `embed_texts`.
        """
        result = self.embed_texts(texts, token_counts)
        if result.rejected:
            index, reason = next(iter(result.rejected.items()))
            raise InputRejected(self.model, f"text {index} rejected: {reason}")
        if result.missing:
            index, reason = next(iter(result.missing.items()))
            raise ServiceError(self.model, f"text {index} not embedded: {reason}", retryable=True)
        return result.vectors

    def embed_texts(
        self, texts: Sequence[str], token_counts: Sequence[int] | None = None
    ) -> "EmbedResult":
        """Vectors for the texts the service accepts, and the reasons for those it refused.

        `token_counts` (one per text, e.g. `Chunk.tokens`) avoids tokenising again. A text
        over `max_tokens_per_input` is cut into windows whose vectors are averaged (weighted
        by tokens), so it still gets one vector. A request refused because of its inputs is
        halved until the refused text is found: one bad text never costs the others. A
        request that fails otherwise marks its texts missing and the next request is tried
        (an open circuit or a spent budget then refuses it at once, without a call).
        """
        if token_counts is None:
            token_counts = [count_tokens(t, self.encoding) for t in texts]
        elif len(token_counts) != len(texts):
            raise ValueError(f"got {len(token_counts)} token counts for {len(texts)} texts")
        pieces, owners, piece_tokens = self._pieces(texts, token_counts)
        vectors = np.zeros((len(pieces), self.dims), dtype=np.float32)
        refused: dict[int, str] = {}
        unsent: dict[int, str] = {}
        for start, stop in self._requests(piece_tokens):
            try:
                self._embed_span(pieces, start, stop, vectors, refused)
            except (ServiceError, BudgetExceeded) as exc:
                unsent.update(dict.fromkeys(range(start, stop), str(exc)))

        combined = np.zeros((len(texts), self.dims), dtype=np.float32)
        weights = np.asarray(piece_tokens, dtype=np.float32)[:, None]
        np.add.at(combined, np.asarray(owners, dtype=np.intp), vectors * np.maximum(weights, 1))
        rejected = {owners[i]: reason for i, reason in refused.items()}
        missing = {owners[i]: reason for i, reason in unsent.items() if owners[i] not in rejected}
        norms = np.linalg.norm(combined, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return EmbedResult(combined / norms, rejected, missing)

    def _pieces(
        self, texts: Sequence[str], token_counts: Sequence[int]
    ) -> tuple[list[str], list[int], list[int]]:
        pieces: list[str] = []
        owners: list[int] = []
        piece_tokens: list[int] = []
        # Decoding a token window can add a replacement character or two at its edges;
        # the margin keeps every window under the limit after re-tokenising.
        window = max(1, self.max_tokens_per_input - 16)
        for index, (text, count) in enumerate(zip(texts, token_counts, strict=True)):
            if count <= self.max_tokens_per_input:
                pieces.append(text)
                owners.append(index)
                piece_tokens.append(count)
                continue
            encoding = get_encoding(self.encoding)
            ids = encoding.encode_ordinary(text)
            for at in range(0, len(ids), window):
                part = ids[at : at + window]
                pieces.append(encoding.decode(part))
                owners.append(index)
                piece_tokens.append(len(part))
        return pieces, owners, piece_tokens

    def _embed_span(
        self,
        pieces: list[str],
        start: int,
        stop: int,
        out: npt.NDArray[np.float32],
        refused: dict[int, str],
    ) -> None:
        batch = pieces[start:stop]
        try:
            vectors = self._embed_batch(batch)
        except InputRejected as exc:
            self.calls += 1
            if stop - start == 1:
                refused[start] = exc.reason
                return
            middle = (start + stop) // 2
            self._embed_span(pieces, start, middle, out, refused)
            self._embed_span(pieces, middle, stop, out, refused)
            return
        self.calls += 1
        out[start:stop] = self._check(vectors, len(batch))
        self.texts_embedded += len(batch)

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
