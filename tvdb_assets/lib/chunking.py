"""Split a document's markdown into token-bounded chunks that follow its structure.

How a document becomes chunks:

1. **Sections.** ATX headings (`#` .. `######`) and setext headings (a single-line paragraph
   underlined with `===` or `---`) start sections; `#` lines inside fenced code blocks do
   not. Text before the first heading is a section with an empty heading path. Each
   section's `heading_path` is the titles from the top level down, e.g.
   `("Guide", "Install", "Linux")`.
2. **Heading-only sections fold forward.** A heading with no body of its own (`# Guide`
   directly followed by `## Install`) is joined to the start of the next section, which
   keeps its own path: the chunk reads "# Guide / ## Install / ..." with path
   `("Guide", "Install")` instead of a chunk holding one heading line.
3. **Tiny sections merge; others do not.** Consecutive sections that are each tiny (at most
   `max_tokens // 8` tokens) and lie under the same parent heading are merged into one
   chunk while it stays within `max_tokens`; its path is the members' common prefix (their
   parent), which is true of every line in it. Anything bigger stays its own chunk, so a
   chunk's path never hides a sibling's title.
4. **Big sections split** at the best boundary inside each window of `max_tokens` tokens:
   a blank line (paragraph), then a line break, then a sentence end, then a space, then any
   token boundary that is also a character boundary. The cut is the last such boundary in
   the window, but not in the first quarter of it, so a short paragraph followed by a huge
   one does not become a near-empty chunk. Consecutive pieces of a section overlap by up
   to `overlap_tokens` tokens (at least half of that when a boundary allows), starting at
   the best boundary in that range.

A section is encoded once; windows are cut on its token array and byte offsets, and each
emitted piece's count is exact, `Chunk.tokens == count_tokens(Chunk.text)` (re-tokenising a
cut piece can differ by a token or two from the slice; a piece over the limit is cut
shorter). The count is read off the section's tokens between two positions where any
encoding must cut, and only the few characters outside them are encoded again. Chunk
texts are verbatim spans of the markdown with leading blank lines and trailing whitespace
trimmed, so `page_starts` offsets map straight onto them.
"""

import bisect
import contextlib
import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt
import tiktoken

from tvdb_assets.lib.models import Chunk
from tvdb_assets.lib.tokens import DEFAULT_ENCODING, get_encoding

# Below this a window may hold no character boundary at all (one CJK or emoji character can
# take up to 4 tokens, and byte-level merges can straddle characters).
MIN_MAX_TOKENS = 8

# One regex pass finds every line that can change the structure: fences, ATX headings and
# setext underlines. Everything else is body text and never looked at line by line.
_EVENT = re.compile(
    r"^ {0,3}(?:"
    r"(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)"
    r"|(?P<atx>#{1,6})(?P<title>[ \t][^\n]*)?\r?"
    r"|(?P<setext>=+|-{2,})[ \t]*\r?"
    r")$",
    re.MULTILINE,
)
# Lines that cannot be a setext title: indented code, list items, quotes, tables, HTML,
# fences, ATX headings and other underline-like lines.
_NOT_SETEXT_TITLE = re.compile(r" {4}|\t| {0,3}(?:[-*+>|<=#]|\d{1,9}[.)](?:[ \t]|$)|```|~~~)")
_NONSPACE = re.compile(r"\S")
# Encodings whose pre-token regex `_counted` reasons about, and the positions where that
# regex ends a pre-token whatever came before (the match's end).
_SEGMENT_SAFE_ENCODINGS = {"cl100k_base"}
_CUT = re.compile(rb"\n(?=[ \t]*[!-~])|[A-Za-z0-9](?=[ \t\r\n])")
_CUT_WINDOW = 256  # bytes searched from each end of a piece
_BLANK_LINES = re.compile(r"(?:[ \t]*\r?\n)*")
_MIDLINE_LEAD = re.compile(r"[ \t]*(?:\r?\n(?:[ \t]*\r?\n)*)?")
_SURROGATE = re.compile("[\ud800-\udfff]")

# Boundary levels, best first.
_EDGE, _PARAGRAPH, _LINE, _SENTENCE, _SPACE, _TOKEN, _INVALID = 6, 5, 4, 3, 2, 1, -1


@dataclass(slots=True)
class _Section:
    start: int  # first char of the heading (0 for the preamble)
    body: int  # first char after the heading line(s)
    end: int
    path: tuple[str, ...]


@dataclass(slots=True)
class _Unit:
    """A trimmed, non-empty section, counted."""

    start: int
    end: int
    path: tuple[str, ...]
    tokens: int
    ids: npt.NDArray[np.uint32] | None  # kept only when the unit must be split


@dataclass(frozen=True, slots=True)
class _Piece:
    start: int  # char offsets into the markdown
    end: int
    text: str
    tokens: int
    path: tuple[str, ...]


def chunk_markdown(
    markdown: str,
    *,
    page_starts: Sequence[int] = (),
    max_tokens: int = 512,
    overlap_tokens: int = 64,
    encoding: str = DEFAULT_ENCODING,
) -> list[Chunk]:
    """Chunks of `markdown` in document order, each at most `max_tokens` tokens.

    `page_starts[i]` is the char offset where page i + 1 begins; when given, each chunk gets
    the 1-based pages its text spans. See the module docstring for the rules.
    """
    if max_tokens < MIN_MAX_TOKENS:
        raise ValueError(f"max_tokens must be at least {MIN_MAX_TOKENS}, got {max_tokens}")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(
            f"overlap_tokens must be >= 0 and < max_tokens ({max_tokens}), got {overlap_tokens}"
        )
    starts = list(page_starts)
    if any(a > b for a, b in zip(starts, starts[1:], strict=False)):
        raise ValueError("page_starts must be in ascending order")

    md = _utf8_safe(markdown)
    enc = get_encoding(encoding)
    units = [_count(md, s, enc, max_tokens) for s in _bounded(md, _sections(md))]
    pieces: list[_Piece] = []
    for group in _groups(units, max_tokens):
        pieces.extend(_emit(md, group, enc, max_tokens, overlap_tokens, encoding))

    return [
        Chunk(
            ord=i,
            text=p.text,
            tokens=p.tokens,
            heading_path=p.path,
            page_start=_page(starts, p.start) if starts else None,
            page_end=_page(starts, p.end - 1) if starts else None,
        )
        for i, p in enumerate(pieces)
    ]


def _page(starts: list[int], offset: int) -> int:
    return max(1, bisect.bisect_right(starts, offset))


def _atx_title(rest: str) -> str:
    """The title of an ATX heading line (what follows the opening #s), without its closing
    sequence: `## Title ##` -> `Title`. String methods, not a regex: linear on any line."""
    title = rest.strip(" \t\r")
    bare = title.rstrip("#")
    if bare != title and (not bare or bare[-1] in " \t"):
        title = bare.rstrip(" \t")
    return title


def _utf8_safe(text: str) -> str:
    # Lone surrogates (from surrogateescape decoding) cannot be encoded; tiktoken replaces
    # them too. A same-length replacement keeps page offsets valid.
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


# --- sections -------------------------------------------------------------------------------


def _sections(md: str) -> Iterator[_Section]:
    """Sections in order, empty ones dropped, heading-only ones folded into their successor."""
    headings = list(_headings(md))
    raw: list[_Section] = []
    first = headings[0][0] if headings else len(md)
    if first > 0:
        raw.append(_Section(0, 0, first, ()))
    stack: list[tuple[int, str]] = []
    for k, (start, body, level, title) in enumerate(headings):
        end = headings[k + 1][0] if k + 1 < len(headings) else len(md)
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        raw.append(_Section(start, body, end, tuple(t for _, t in stack if t)))

    pending: int | None = None
    for k, sec in enumerate(raw):
        if pending is not None:
            sec.start, pending = pending, None
        has_body = _NONSPACE.search(md, sec.body, sec.end) is not None
        if sec.body > sec.start and not has_body and k + 1 < len(raw):
            pending = sec.start
            continue
        if _NONSPACE.search(md, sec.start, sec.end) is not None:
            yield sec


# A section longer than this is cut into blocks at paragraph (else line, else word) breaks
# before tokenising, so memory stays bounded for a 50 MB document with no headings: the
# per-byte arrays the splitter uses would otherwise be sized by the whole section.
BLOCK_CHARS = 1_000_000


def _bounded(md: str, sections: Iterator[_Section]) -> Iterator[_Section]:
    for sec in sections:
        start = sec.start
        while sec.end - start > BLOCK_CHARS:
            limit = start + BLOCK_CHARS
            cut = -1
            for separator in ("\n\n", "\n", " "):
                cut = md.rfind(separator, start + BLOCK_CHARS // 2, limit)
                if cut != -1:
                    cut += len(separator)
                    break
            if cut == -1:
                cut = limit
            yield _Section(start, sec.body if start == sec.start else start, cut, sec.path)
            start = cut
        yield _Section(start, sec.body if start == sec.start else start, sec.end, sec.path)


def _headings(md: str) -> Iterator[tuple[int, int, int, str]]:
    """(start, body start, level, title) of every heading outside fenced code."""
    fence: tuple[str, int] | None = None
    last_body = -1
    for m in _EVENT.finditer(md):
        marker = m.group("fence")
        if fence is not None:
            if (
                marker
                and marker[0] == fence[0]
                and len(marker) >= fence[1]
                and not m.group("info").strip()
            ):
                fence = None
            continue
        if marker:
            if not (marker[0] == "`" and "`" in m.group("info")):  # else inline code
                fence = (marker[0], len(marker))
            continue
        body = min(m.end() + 1, len(md))
        if m.group("atx"):
            title = _atx_title(m.group("title") or "")
            yield m.start(), body, len(m.group("atx")), title
            last_body = body
            continue
        found = _setext_title(md, m.start(), last_body)
        if found is not None:
            yield found[0], body, 1 if m.group("setext")[0] == "=" else 2, found[1]
            last_body = body


def _setext_title(md: str, underline: int, last_body: int) -> tuple[int, str] | None:
    """The title line above an underline, if it is a one-line paragraph."""
    if underline == 0:
        return None
    start = md.rfind("\n", 0, underline - 1) + 1
    line = md[start : underline - 1]
    if not line.strip() or _NOT_SETEXT_TITLE.match(line):
        return None
    # Only a paragraph of one line: the line above must be blank, the start, or a heading.
    if start > 0 and start != last_body:
        above = md.rfind("\n", 0, start - 1) + 1
        if md[above : start - 1].strip():
            return None
    return start, line.strip()


def _count(md: str, sec: _Section, enc: tiktoken.Encoding, max_tokens: int) -> _Unit:
    start = _BLANK_LINES.match(md, sec.start, sec.end).end()  # type: ignore[union-attr]
    end = sec.end
    while end > start and md[end - 1].isspace():
        end -= 1
    ids = enc.encode_to_numpy(md[start:end], disallowed_special=())
    return _Unit(start, end, sec.path, len(ids), ids if len(ids) > max_tokens else None)


def _groups(units: list[_Unit], max_tokens: int) -> Iterator[list[_Unit]]:
    tiny = max_tokens // 8
    group: list[_Unit] = []
    parent: tuple[str, ...] = ()
    total = 0
    for unit in units:
        if (
            group
            and unit.tokens <= tiny
            and group[0].tokens <= tiny
            and total + unit.tokens <= max_tokens
            and unit.path[: len(parent)] == parent
        ):
            group.append(unit)
            total += unit.tokens
            continue
        if group:
            yield group
        group, total, parent = [unit], unit.tokens, unit.path[:-1]
    if group:
        yield group


def _emit(
    md: str,
    group: list[_Unit],
    enc: tiktoken.Encoding,
    max_tokens: int,
    overlap: int,
    encoding: str,
) -> Iterator[_Piece]:
    if len(group) > 1:
        text = md[group[0].start : group[-1].end]
        tokens = len(enc.encode_ordinary(text))
        if tokens <= max_tokens:
            path = _common_prefix([u.path for u in group])
            yield _Piece(group[0].start, group[-1].end, text, tokens, path)
            return
        # Joining re-tokenised the seams past the limit: keep the members apart.
    for unit in group:
        if unit.ids is None:
            yield _Piece(unit.start, unit.end, md[unit.start : unit.end], unit.tokens, unit.path)
            continue
        text = md[unit.start : unit.end]
        for start, end, piece, tokens in _split(text, unit.ids, enc, max_tokens, overlap, encoding):
            yield _Piece(unit.start + start, unit.start + end, piece, tokens, unit.path)


def _common_prefix(paths: list[tuple[str, ...]]) -> tuple[str, ...]:
    prefix = paths[0]
    for path in paths[1:]:
        n = 0
        while n < min(len(prefix), len(path)) and prefix[n] == path[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


# --- splitting one big section ----------------------------------------------------------------


def warm(encoding: str = DEFAULT_ENCODING) -> None:
    """Load what chunking needs first (the tokenizer, its token lengths) ahead of time."""
    get_encoding(encoding)
    _token_lengths(encoding)


@functools.cache
def _token_lengths(encoding: str) -> npt.NDArray[np.int64]:
    """Byte length of every token id (0 for ids that are not mergeable tokens)."""
    enc = get_encoding(encoding)
    lengths = np.zeros(enc.n_vocab, dtype=np.int64)
    for token in range(enc.n_vocab):
        with contextlib.suppress(KeyError):  # ids of special tokens and gaps in the vocab
            lengths[token] = len(enc.decode_single_token_bytes(token))
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
    lead = (_MIDLINE_LEAD if midline else _BLANK_LINES).match(text).end()  # type: ignore[union-attr]
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


def _split(
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
