"""Step 4 of chunking: one over-long section cut into windows of at most `max_tokens`
tokens at the best boundary in each, overlapping (see the package docstring).

The section is encoded once; windows are cut on its token array and byte offsets, and each
piece's token count is read off the section's tokens wherever the tokenizer must cut alike.
"""

import contextlib
import functools
import re
from collections.abc import Iterator
from functools import partial

import numpy as np
import numpy.typing as npt
import tiktoken

from tvdb_assets.lib.tokens import DEFAULT_ENCODING, get_encoding

# Encodings whose pre-token regex `_counted` reasons about, and the positions where that
# regex ends a pre-token whatever came before (the match's end).
_SEGMENT_SAFE_ENCODINGS = {"cl100k_base"}
_CUT = re.compile(rb"\n(?=[ \t]*[!-~])|[A-Za-z0-9](?=[ \t\r\n])")
_CUT_WINDOW = 256  # bytes searched from each end of a piece
BLANK_LINES = re.compile(r"(?:[ \t]*\r?\n)*")
_MIDLINE_LEAD = re.compile(r"[ \t]*(?:\r?\n(?:[ \t]*\r?\n)*)?")

# Boundary levels, best first.
_EDGE, _PARAGRAPH, _LINE, _SENTENCE, _SPACE, _TOKEN, _INVALID = 6, 5, 4, 3, 2, 1, -1


def warm(encoding: str = DEFAULT_ENCODING) -> None:
    """Load what chunking needs first (the tokenizer, its token lengths) ahead of time."""
    get_encoding(encoding)
    _token_lengths(encoding)


@functools.cache
def _token_lengths(encoding: str) -> npt.NDArray[np.int64]:
    """Byte length of every token id (0 for gaps in the vocab)."""
    enc = get_encoding(encoding)
    lengths = np.zeros(enc.n_vocab, dtype=np.int64)
    ranks = getattr(enc, "_mergeable_ranks", None)
    if not isinstance(ranks, dict):
        # Asking id by id takes 0.15 s for cl100k_base, in every fork server's start-up.
        for token in range(enc.n_vocab):
            with contextlib.suppress(KeyError):  # gaps in the vocab
                lengths[token] = len(enc.decode_single_token_bytes(token))
        return lengths
    # The BPE table itself (token bytes -> id), read in one pass.
    count = len(ranks)
    lengths[np.fromiter(ranks.values(), np.int64, count)] = np.fromiter(
        map(len, ranks), np.int64, count
    )
    for special in enc.special_tokens_set:
        lengths[enc.encode_single_token(special)] = len(special.encode("utf-8"))
    return lengths


def _byte_class(*members: int) -> npt.NDArray[np.bool_]:
    """A lookup table: `table[byte_values]` is far cheaper than `np.isin` on every cut."""
    table = np.zeros(256, dtype=np.bool_)
    table[list(members)] = True
    return table


_WHITESPACE = _byte_class(32, 9, 10, 13)
_BLANK = _byte_class(32, 9)
_SENTENCE_END = _byte_class(46, 33, 63)


def _levels(data: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64]) -> npt.NDArray[np.int8]:
    """How good a cut each token boundary is; `pos` are the boundaries' byte offsets."""
    level = np.full(len(pos), _EDGE, dtype=np.int8)
    p = pos[1:-1]
    if len(p) == 0:
        return level
    cur = data[p]
    prev = data[p - 1]
    prev2 = data[np.maximum(p - 2, 0)]
    prev3 = data[np.maximum(p - 3, 0)]
    inner = np.full(len(p), _TOKEN, dtype=np.int8)
    inner[_WHITESPACE[cur] | _WHITESPACE[prev]] = _SPACE
    inner[_BLANK[cur] & _SENTENCE_END[prev]] = _SENTENCE  # ". " "! " "? "
    newline = prev == 10
    inner[newline] = _LINE
    blank = newline & ((prev2 == 10) | ((prev2 == 13) & (prev3 == 10)))
    inner[blank & (p >= 2)] = _PARAGRAPH
    inner[(cur & 0xC0) == 0x80] = _INVALID  # inside a UTF-8 character
    level[1:-1] = inner
    return level


def _best(level: npt.NDArray[np.int8], lo: int, hi: int, last: bool) -> int | None:
    """The best boundary in (lo, hi]: the last (or first) one of the highest level."""
    if hi <= lo:
        return None
    sub = level[lo + 1 : hi + 1]
    top = int(sub.max())
    if top < 0:
        return None
    hits = sub == top
    k = len(sub) - 1 - int(np.argmax(hits[::-1])) if last else int(np.argmax(hits))
    return lo + 1 + k


class _CharCursor:
    """Char offset of a byte offset, walking a running count instead of re-decoding."""

    def __init__(self, data: npt.NDArray[np.uint8]) -> None:
        self._starts = (data & 0xC0) != 0x80
        self._byte = 0
        self._char = 0

    def __call__(self, byte: int) -> int:
        if byte >= self._byte:
            self._char += int(np.count_nonzero(self._starts[self._byte : byte]))
        else:
            self._char -= int(np.count_nonzero(self._starts[byte : self._byte]))
        self._byte = byte
        return self._char


def _trim(raw: bytes, a: int, b: int) -> tuple[int, int, str]:
    """Decode raw[a:b] without leading blank lines and trailing whitespace.

    Returns the kept text and its char offsets relative to the decoded raw[a:b]. A piece
    that starts mid-line also drops the leading spaces left over from the cut.
    """
    text = raw[a:b].decode("utf-8").rstrip()
    midline = a > 0 and raw[a - 1 : a] != b"\n"
    lead = (_MIDLINE_LEAD if midline else BLANK_LINES).match(text).end()  # type: ignore[union-attr]
    return lead, len(text), text[lead:]


def _counted(
    enc: tiktoken.Encoding,
    raw: bytes,
    pos: npt.NDArray[np.int64],
    start: int,
    lead: int,
    body: str,
) -> int | None:
    """Tokens of `body` (raw[start:] less `lead` characters), mostly read off the section's
    own tokens; None where only encoding all of it again can tell.

    Encoding cuts text into pre-tokens by a regex, then each pre-token into tokens on its
    own. Some positions end a pre-token whatever text comes before them (`_CUT`, for
    cl100k_base's pattern): after a line break, before a line that starts with printable
    ASCII; after an ASCII letter or digit, before whitespace. Between the first such
    position in `body` and the last, `body` and the section are cut alike, so they share
    their tokens there; only the few characters outside are encoded again.
    """
    a = start + lead  # what `_trim` drops in front is ASCII whitespace: a byte a character
    b = a + len(body.encode("utf-8"))
    head = a if a == 0 else _first_cut(raw, pos, a, b)
    tail = b if b == len(raw) else _last_cut(raw, pos, a, b)
    if head is None or tail is None or head > tail:
        return None
    first, last = np.searchsorted(pos, (head, tail))
    shared = int(last - first)
    edges = [raw[a:head], raw[tail:b]]
    return shared + sum(len(enc.encode_ordinary(e.decode("utf-8"))) for e in edges if e)


def _first_cut(raw: bytes, pos: npt.NDArray[np.int64], a: int, b: int) -> int | None:
    for match in _CUT.finditer(raw, a, min(b, a + _CUT_WINDOW)):
        if _is_token_boundary(pos, match.end()):
            return match.end()
    return None


def _last_cut(raw: bytes, pos: npt.NDArray[np.int64], a: int, b: int) -> int | None:
    cuts = [m.end() for m in _CUT.finditer(raw, max(a, b - _CUT_WINDOW), b)]
    return next((cut for cut in reversed(cuts) if _is_token_boundary(pos, cut)), None)


def _is_token_boundary(pos: npt.NDArray[np.int64], at: int) -> bool:
    k = int(np.searchsorted(pos, at))
    return k < len(pos) and int(pos[k]) == at


def split(
    text: str,
    ids: npt.NDArray[np.uint32],
    enc: tiktoken.Encoding,
    max_tokens: int,
    overlap: int,
    encoding: str,
) -> Iterator[tuple[int, int, str, int]]:
    """(char start, char end, text, tokens) of the pieces of one over-long section."""
    raw = text.encode("utf-8")
    data = np.frombuffer(raw, dtype=np.uint8)
    n = len(ids)
    pos = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(_token_lengths(encoding)[ids], out=pos[1:])
    assert pos[-1] == len(raw), "token byte lengths must add up to the text"
    level = _levels(data, pos)
    char_at = _CharCursor(data)
    min_fill = max(1, max_tokens // 4)
    counted = partial(_counted, enc, raw, pos) if encoding in _SEGMENT_SAFE_ENCODINGS else None

    i = fresh = 0  # i: where this piece starts; fresh: the first token not yet emitted
    while fresh < n:
        limit = min(n, i + max_tokens)
        if limit == n:
            j: int | None = n
        else:
            j = _best(level, max(i, fresh) + min_fill, limit, last=True)
            if j is None:
                j = _best(level, fresh, limit, last=True)
        piece: tuple[int, int, str, int] | None = None
        while j is not None:
            lead, end, body = _trim(raw, int(pos[i]), int(pos[j]))
            tokens = counted(int(pos[i]), lead, body) if counted else None
            if tokens is None:
                tokens = len(enc.encode_ordinary(body))
            base = char_at(int(pos[i]))
            piece = (base + lead, base + end, body, tokens)
            if tokens <= max_tokens:
                break
            piece = None
            j = _best(level, fresh, j - (tokens - max_tokens), last=True)
        if j is None:
            # No character boundary fits in the window: cut this stretch by characters.
            stop = fresh + 1 + int(np.argmax(level[fresh + 1 :] >= 0))
            base = char_at(int(pos[fresh]))
            stretch = raw[pos[fresh] : pos[stop]].decode("utf-8")
            for a, b, body, tokens in _split_chars(stretch, enc, max_tokens):
                yield base + a, base + b, body, tokens
            i = fresh = stop
            continue
        if piece is not None and piece[2]:
            yield piece
        if j == n:
            return
        fresh = j
        if overlap:
            start = _best(level, max(i, j - overlap - 1), j - max(1, overlap // 2), last=False)
            i = start if start is not None else j
        else:
            i = j


def _split_chars(
    text: str, enc: tiktoken.Encoding, max_tokens: int
) -> Iterator[tuple[int, int, str, int]]:
    """Longest prefixes within the limit, found by bisection; only for pathological text."""
    start = 0
    while start < len(text):
        lo, hi = start + 1, len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(enc.encode_ordinary(text[start:mid])) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        body = text[start:lo]
        if body.strip():
            yield start, lo, body, len(enc.encode_ordinary(body))
        start = lo
