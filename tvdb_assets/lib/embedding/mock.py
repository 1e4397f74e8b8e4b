"""An offline embedder whose vectors still mean something: hashed word features.

Each lower-cased word, and at half weight each pair of adjacent words, is a feature. A
feature's 64-bit hash picks its dimension (hash % dims) and sign (top bit); its weight is
1 + ln(term frequency in the text). Texts that share words share dimensions, so cosine
similarity tracks word overlap and offline search returns sensible neighbours.

Words are hashed with blake2b, which unlike `hash()` is the same in every process; pairs
combine their words' hashes with a 64-bit mixer in numpy, so the per-word Python work is one
dict lookup; a call's texts are counted in one vectorised pass (and, when the worker pool
runs, in slices across it). Each text is summed on its own, so its vector never depends on
its batch.
"""

import hashlib
import re
from functools import partial
from itertools import chain

import numpy as np
import numpy.typing as npt

from tvdb_assets.lib import workers
from tvdb_assets.lib.embedding.base import Embedder

_WORD = re.compile(r"\w+")
_BIGRAM_WEIGHT = 0.5
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_CACHE_MAX = 1 << 20
_ROW_SHIFT = 40  # row numbers take the top 24 bits of a feature's key: 16M texts a call
_PARALLEL_FROM = 512  # texts; below, one process is faster than shipping them to workers

# word -> blake2b hash; words repeat across chunks, so most lookups skip blake2b.
_word_hashes: dict[str, int] = {}


class MockEmbedder(Embedder):
    """Deterministic feature-hashing embedder; free, offline, `dims` configurable."""

    model = "mock-feature-hash"
    cacheable = False

    def __init__(self, dims: int = 1536) -> None:
        super().__init__()
        if dims < 2:
            raise ValueError(f"dims must be at least 2, got {dims}")
        self.dims = dims

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        # Spread over the worker pool when it runs (an ingest has started it to parse):
        # whole slices, so each worker does one vectorised pass.
        size = -(-len(texts) // workers.worker_count()) if len(texts) >= _PARALLEL_FROM else 0
        slices = [texts[at : at + size] for at in range(0, len(texts), size)] if size else []
        if len(slices) < 2:
            return vectors(self.dims, texts)
        return np.vstack(workers.map_in_order(partial(vectors, self.dims), slices))


def vectors(dims: int, texts: list[str]) -> npt.NDArray[np.float32]:
    """The texts' vectors (not yet normalised), in one vectorised pass over all their words."""
    words = [_WORD.findall(t.lower()) for t in texts]
    lengths = np.fromiter(map(len, words), np.int64, len(words))
    hashes = np.array(_hash_words(list(chain.from_iterable(words))), dtype=np.uint64)
    rows = np.repeat(np.arange(len(texts), dtype=np.uint64), lengths)
    within = rows[:-1] == rows[1:]  # adjacent words of one text, not across two
    bigrams = _mix((hashes[:-1] * _GOLDEN) ^ hashes[1:])[within]
    flat = np.zeros(len(texts) * dims, dtype=np.float64)
    flat += _project(dims, len(texts), rows, hashes, 1.0)
    flat += _project(dims, len(texts), rows[:-1][within], bigrams, _BIGRAM_WEIGHT)
    out = flat.reshape(len(texts), dims).astype(np.float32)
    for row in np.flatnonzero(lengths == 0):
        if squeezed := " ".join(texts[row].split()):
            # No words (punctuation, symbols): the squeezed text is the one feature.
            feature = np.array([_blake(f"\x00{squeezed}")], dtype=np.uint64)
            out[row] = _project(dims, 1, np.zeros(1, dtype=np.uint64), feature, 1.0)
    # Blank text, or features whose signed weights cancel out, would give a zero row:
    # use a fixed direction instead. The base class normalises the rows.
    out[~np.any(out, axis=1), 0] = 1.0
    return out


def _project(
    dims: int,
    count: int,
    rows: npt.NDArray[np.uint64],
    features: npt.NDArray[np.uint64],
    scale: float,
) -> npt.NDArray[np.float64]:
    """Per row, the sum of its features' signed, sublinear-tf weights in their hashed
    dimensions, flattened. A feature is counted per row by its top 40 bits next to the row
    number (a shared top with another feature of the same text: about 1 in 10^12)."""
    keys = (rows << np.uint64(_ROW_SHIFT)) | (features >> np.uint64(64 - _ROW_SHIFT))
    unique, first, tf = np.unique(keys, return_index=True, return_counts=True)
    feature = features[first]
    sign = np.where(feature >> np.uint64(63), -scale, scale)
    row = (unique >> np.uint64(_ROW_SHIFT)).astype(np.int64)
    column = row * dims + (feature % np.uint64(dims)).astype(np.int64)
    summed = np.bincount(column, weights=sign * (1.0 + np.log(tf)), minlength=count * dims)
    return summed.astype(np.float64, copy=False)  # bincount's stub says int


def _blake(feature: str) -> int:
    return int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")


def _hash_words(words: list[str]) -> list[int]:
    get = _word_hashes.get
    out = [get(w, -1) for w in words]
    for k, value in enumerate(out):
        if value < 0:
            value = _blake(words[k])
            if len(_word_hashes) >= _CACHE_MAX:
                _word_hashes.clear()
            _word_hashes[words[k]] = value
            out[k] = value
    return out


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser: every input bit affects the dimension and the sign bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
