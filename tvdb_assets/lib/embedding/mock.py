"""An offline embedder whose vectors still mean something: hashed word features.

Each lower-cased word, and at half weight each pair of adjacent words, is a feature. A
feature's 64-bit hash picks its dimension (hash % dims) and sign (top bit); its weight is
1 + ln(term frequency in the text). Texts that share words share dimensions, so cosine
similarity tracks word overlap and offline search returns sensible neighbours.

Words are hashed with blake2b, which unlike `hash()` is the same in every process; pairs
combine their words' hashes with a 64-bit mixer in numpy, so the per-word Python work is one
dict lookup. Each text is summed on its own, so its vector never depends on its batch.
"""

import hashlib
import re
from itertools import chain

import numpy as np
import numpy.typing as npt

from tvdb_assets.lib.embedding.base import Embedder

_WORD = re.compile(r"\w+")
_BIGRAM_WEIGHT = 0.5
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_CACHE_MAX = 1 << 20

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
        words = [_WORD.findall(t.lower()) for t in texts]
        hashes = np.array(_hash_words(list(chain.from_iterable(words))), dtype=np.uint64)
        bounds = np.cumsum([0] + [len(w) for w in words])
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for row, text in enumerate(texts):
            unigrams = hashes[bounds[row] : bounds[row + 1]]
            if len(unigrams):
                bigrams = _mix((unigrams[:-1] * _GOLDEN) ^ unigrams[1:])
                out[row] = self._project(unigrams, 1.0) + self._project(bigrams, _BIGRAM_WEIGHT)
            elif squeezed := " ".join(text.split()):
                # No words (punctuation, symbols): the squeezed text is the one feature.
                feature = np.array([_blake(f"\x00{squeezed}")], dtype=np.uint64)
                out[row] = self._project(feature, 1.0)
        # Blank text, or features whose signed weights cancel out, would give a zero row:
        # use a fixed direction instead. The base class normalises the rows.
        out[~np.any(out, axis=1), 0] = 1.0
        return out

    def _project(self, features: npt.NDArray[np.uint64], scale: float) -> npt.NDArray[np.float64]:
        """Sum of the features' signed, sublinear-tf weights in their hashed dimensions."""
        unique, tf = np.unique(features, return_counts=True)
        sign = np.where(unique >> np.uint64(63), -scale, scale)
        column = (unique % np.uint64(self.dims)).astype(np.int64)
        summed = np.bincount(column, weights=sign * (1.0 + np.log(tf)), minlength=self.dims)
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
