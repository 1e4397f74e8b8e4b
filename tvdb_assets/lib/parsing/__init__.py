"""Document parsers: uploaded bytes in, `ParsedDocument` (markdown + page offsets) out."""

from tvdb_assets.lib.parsing.base import Parser
from tvdb_assets.lib.parsing.detect import EXTENSION_KINDS, Kind, detect_kind
from tvdb_assets.lib.parsing.html import html_to_markdown
from tvdb_assets.lib.parsing.local import DEFAULT_MAX_BYTES, LocalParser
from tvdb_assets.lib.parsing.pdf import pdf_to_document
from tvdb_assets.lib.parsing.text import decode_text

__all__ = [
    "DEFAULT_MAX_BYTES",
    "EXTENSION_KINDS",
    "Kind",
    "LocalParser",
    "Parser",
    "decode_text",
    "detect_kind",
    "html_to_markdown",
    "pdf_to_document",
]
