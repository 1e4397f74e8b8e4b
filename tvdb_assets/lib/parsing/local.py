"""The offline parser: pure Python, no network, good enough for markdown, HTML, text and PDF."""

from collections.abc import Hashable

from tvdb_assets.lib.errors import DocumentError
from tvdb_assets.lib.models import ParsedDocument
from tvdb_assets.lib.parsing.base import Parser
from tvdb_assets.lib.parsing.detect import Kind, detect_kind
from tvdb_assets.lib.parsing.html import declared_charset, html_to_markdown
from tvdb_assets.lib.parsing.pdf import pdf_to_document
from tvdb_assets.lib.parsing.text import decode_text

DEFAULT_MAX_BYTES = 100 * 1024 * 1024


class LocalParser(Parser):
    """Parses by kind (see `detect_kind`); each result names the route, e.g. 'local/pdf'."""

    name = "local"
    runs_locally = True

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes

    @property
    def settings(self) -> Hashable:
        return (self.name, self.max_bytes)

    def parse(self, path: str, data: bytes) -> ParsedDocument:
        kind = detect_kind(path, data)
        if len(data) > self.max_bytes:
            limit = _size(self.max_bytes)
            raise DocumentError(path, f"file too large ({_size(len(data))}, limit {limit})")
        if not data:
            raise DocumentError(path, "empty file")
        if kind is Kind.PDF:
            return pdf_to_document(path, data)
        if kind is Kind.HTML:
            text = decode_text(path, data, declared_encoding=declared_charset(data))
            return ParsedDocument(
                markdown=html_to_markdown(path, text), parser="local/html", mime="text/html"
            )
        text = decode_text(path, data)
        if kind is Kind.MARKDOWN:
            return ParsedDocument(markdown=text, parser="local/markdown", mime="text/markdown")
        return ParsedDocument(markdown=text, parser="local/text", mime="text/plain")


def _size(n: int) -> str:
    """Human-readable, yet exact enough that a file just over a small limit reads as over it."""
    for unit, scale in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= 10 * scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"
