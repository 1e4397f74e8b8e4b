"""Markdown in, chunks out: sections counted, tiny ones grouped, big ones split (steps
2-4 of the package docstring)."""

import bisect
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import tiktoken

from tvdb_assets.lib.chunking.sections import Section, sections
from tvdb_assets.lib.chunking.windows import BLANK_LINES, split
from tvdb_assets.lib.models import Chunk
from tvdb_assets.lib.tokens import DEFAULT_ENCODING, get_encoding

# Below this a window may hold no character boundary at all (one CJK or emoji character can
# take up to 4 tokens, and byte-level merges can straddle characters).
MIN_MAX_TOKENS = 8

_SURROGATE = re.compile("[\ud800-\udfff]")


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
    units = [_count(md, s, enc, max_tokens) for s in sections(md)]
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


def _count(md: str, sec: Section, enc: tiktoken.Encoding, max_tokens: int) -> _Unit:
    start = BLANK_LINES.match(md, sec.start, sec.end).end()  # type: ignore[union-attr]
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
        for start, end, piece, tokens in split(text, unit.ids, enc, max_tokens, overlap, encoding):
            yield _Piece(unit.start + start, unit.start + end, piece, tokens, unit.path)


def _common_prefix(paths: list[tuple[str, ...]]) -> tuple[str, ...]:
    prefix = paths[0]
    for path in paths[1:]:
        n = 0
        while n < min(len(prefix), len(path)) and prefix[n] == path[n]:
            n += 1
        prefix = prefix[:n]
    return prefix
