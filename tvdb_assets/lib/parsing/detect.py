"""Which parser a document needs, from its extension and, when that is missing, its bytes."""

import posixpath
from enum import StrEnum

from tvdb_assets.lib.errors import DocumentError


class Kind(StrEnum):
    PDF = "pdf"
    HTML = "html"
    MARKDOWN = "markdown"
    TEXT = "text"


EXTENSION_KINDS: dict[str, Kind] = {
    ".pdf": Kind.PDF,
    ".html": Kind.HTML,
    ".htm": Kind.HTML,
    ".md": Kind.MARKDOWN,
    ".markdown": Kind.MARKDOWN,
    ".txt": Kind.TEXT,
    ".text": Kind.TEXT,
    # reStructuredText reads fine as plain text; there is no rst -> markdown converter here.
    ".rst": Kind.TEXT,
}

PDF_MAGIC = b"%PDF-"
_HTML_PREFIXES = (b"<!doctype html", b"<html")
_UTF8_BOM = b"\xef\xbb\xbf"


def extension(path: str) -> str:
    """The lower-cased extension of `path` ('' if none); '.bashrc' counts as no extension."""
    # Upload paths are relative and '/'-separated whatever the OS; backslashes are taken as
    # separators too so a Windows-made name cannot smuggle in a fake extension.
    name = posixpath.basename(path.replace("\\", "/"))
    return posixpath.splitext(name)[1].lower()


def is_pdf(data: bytes) -> bool:
    return data.startswith(PDF_MAGIC)


def looks_like_html(data: bytes) -> bool:
    head = data[:512].removeprefix(_UTF8_BOM).lstrip().lower()
    return head.startswith(_HTML_PREFIXES)


def detect_kind(path: str, data: bytes) -> Kind:
    """The document's kind; raises DocumentError for types no parser supports.

    Text-like kinds are only a claim: decoding (see `text.decode_text`) still rejects binary
    content. A file named like text that starts with the PDF magic is a misnamed PDF.
    """
    ext = extension(path)
    if not ext:
        if is_pdf(data):
            return Kind.PDF
        return Kind.HTML if looks_like_html(data) else Kind.TEXT
    kind = EXTENSION_KINDS.get(ext)
    if kind is None:
        raise DocumentError(path, f"unsupported file type '{ext}'")
    if kind is not Kind.PDF and is_pdf(data):
        return Kind.PDF
    return kind
