"""An offline embedder whose vectors still mean something: hashed word features.

Each lower-cased word, and at half weight each pair of adjacent words, is a feature. A
feature's 64-bit hash picks its dimension (hash % dims) and sign (top bit); its weight is
1 + ln(term frequency in the text). Texts that share words share dimensions, so cosine
similarity tracks word overlap and offline search returns sensible neighbours.

A word's hash is a polynomial over its UTF-8 bytes, read off prefix sums of the whole
call's text and then mixed, so that no Python runs per word and, unlike `hash()`, it is the
same in every process. Pairs combine their words' hashes with the same mixer. A call's texts
are counted in one vectorised pass (and, when the worker pool runs, in slices across it).
Each text is summed on its own, so its vector never depends on its batch.
"""

import re
import string
from functools import partial

import numpy as np
import numpy.typing as npt

from tvdb_assets.lib import workers
from tvdb_assets.lib.embedding.base import Embedder

_NON_WORD = re.compile(r"\W+")
# What `\w` leaves out of ASCII, as spaces: lower-cased ASCII text (most text) is cut into
# words by a table and a split, three times faster than by the regex.
_ASCII_NON_WORD = str.maketrans(
    {c: " " for c in map(chr, range(128)) if c not in string.ascii_letters + string.digits + "_"}
)
_BIGRAM_WEIGHT = 0.5
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# An odd multiplier has an inverse modulo 2**64: a word's sum can be scaled back to its start.
_BASE = 0x100000001B3
_BASE_INVERSE = pow(_BASE, -1, 1 << 64)
_ROW_SHIFT = 40  # row numbers take the top 24 bits of a feature's key: 16M texts a call
_PARALLEL_FROM = 512  # texts; below, one process is faster than shipping them to workers


class MockEmbedder(Embedder):
    """Deterministic feature-hashing embedder; free, offline, `dims` configurable."""

    # Named anew whenever its vectors change: stored ones are then re-embedded, never mixed.
    model = "mock-feature-hash-2"
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
    words = [_words(t) for t in texts]
    lengths = np.fromiter((w.count(" ") + 1 if w else 0 for w in words), np.int64, len(words))
    hashes = _hash_joined(" ".join(w for w in words if w))
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
            feature = _hash_joined(squeezed) ^ _GOLDEN  # apart from the same word's
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


def _words(text: str) -> str:
    """The lower-cased text's words (runs of `\\w`), joined by single spaces."""
    lower = text.lower()
    if lower.isascii():
        return " ".join(lower.translate(_ASCII_NON_WORD).split())
    return _NON_WORD.sub(" ", lower).strip(" ")


def _hash_joined(joined: str) -> npt.NDArray[np.uint64]:
    """The hash of each space-separated word: the sum of its bytes times powers of `_BASE`
    (mod 2**64), mixed.

    Byte i of the joined words weighs `_BASE**i`; a word's stretch of the running sum,
    scaled back by `_BASE**-start`, depends on its own bytes only, wherever it stands.
    """
    if not joined:
        return np.zeros(0, dtype=np.uint64)
    data = np.frombuffer(joined.encode(), dtype=np.uint8)
    gaps = np.flatnonzero(data == 32)
    starts = np.concatenate(([0], gaps + 1))
    ends = np.concatenate((gaps, [len(data)]))
    # One array of the text's length, weighted and summed in place: nine bytes a character.
    running = np.full(len(data), _BASE, dtype=np.uint64)
    running[0] = 1
    np.cumprod(running, out=running)
    running *= data
    np.cumsum(running, out=running)
    before = np.where(starts > 0, running[starts - 1], np.uint64(0))
    unscale = np.power(np.uint64(_BASE_INVERSE), starts.astype(np.uint64))
    own = (running[ends - 1] - before) * unscale
    return _mix(own ^ ((ends - starts).astype(np.uint64) * _GOLDEN))


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser: every input bit affects the dimension and the sign bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
