"""Plain values passed between the pipeline's stages."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A document turned into markdown.

    `page_starts[i]` is the character offset in `markdown` where page i + 1 begins; it is
    empty for documents without pages (markdown, HTML, text), and `pages` is then None.
    """

    markdown: str
    parser: str
    mime: str
    pages: int | None = None
    page_starts: tuple[int, ...] = ()
    fallback: bool = False  # hybrid: the local parser stood in for the service
    fallback_reason: str | None = None  # why it stood in (shown, not stored)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A token-bounded piece of a document's markdown, in document order."""

    ord: int
    text: str
    tokens: int
    heading_path: tuple[str, ...] = ()
    page_start: int | None = None
    page_end: int | None = None
