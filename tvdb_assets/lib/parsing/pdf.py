"""PDF -> markdown through PDFium (`pypdfium2`), one page at a time, remembering where each
page starts."""

import pypdfium2 as pdfium

from tvdb_assets.lib.errors import DocumentError
from tvdb_assets.lib.models import ParsedDocument
from tvdb_assets.lib.parsing.base import char_limit

PAGE_SEPARATOR = "\n\n"
# Ligature glyphs break word search ("ﬁle" != "file"); PDFium marks a hyphen that breaks a
# word at a line's end as U+0002; NULs come from broken font maps. No replacement holds a
# character replaced, so the order does not matter.
_CLEANUP = tuple(
    (
        {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl"}
        | {"\ufb05": "st", "\ufb06": "st", "\x02": "-", "\x00": "", "\r": ""}
    ).items()
)
_MAX_CAUSE_CHARS = 80
# Where the PDF spec lets the header and the end marker sit.
_HEADER_WINDOW = 1024
_EOF_WINDOW = 1024
# PDFium's FPDF_GetLastError codes for a document that does not open.
_ERR_PASSWORD, _ERR_SECURITY = 4, 5


def pdf_to_document(path: str, data: bytes) -> ParsedDocument:
    """Extract each page's text; markdown is the pages joined by a blank line."""
    document = _open(path, data)
    try:
        page_count = len(document)
        if page_count == 0:
            raise DocumentError(path, "PDF has no pages")
        parts: list[str] = []
        starts: list[int] = []
        offset = 0
        for number in range(page_count):
            text = _page_text(path, document, number)
            starts.append(offset)
            parts.append(text)
            offset += len(text) + len(PAGE_SEPARATOR)
            if offset > char_limit(len(data)):  # stop extracting a bomb as soon as it shows
                raise DocumentError(
                    path,
                    f"text far larger than the file (over {offset:,} characters from "
                    f"{len(data):,} bytes by page {number + 1}): a compression bomb?",
                )
    finally:
        document.close()
    if not any(parts):
        raise DocumentError(path, "PDF has no extractable text (scanned images?)")
    return ParsedDocument(
        markdown=PAGE_SEPARATOR.join(parts),
        parser="local/pdf",
        mime="application/pdf",
        pages=page_count,
        page_starts=tuple(starts),
    )


def count_pages(path: str, data: bytes) -> int:
    """How many pages the PDF has; fails as `pdf_to_document` would on a file it cannot open."""
    document = _open(path, data)
    try:
        return len(document)
    finally:
        document.close()


def _open(path: str, data: bytes) -> pdfium.PdfDocument:
    if b"%PDF-" not in data[:_HEADER_WINDOW]:
        raise DocumentError(path, "corrupt PDF (no %PDF- header)")
    try:
        # No password: PDFium then tries the empty one, which opens the many PDFs that are
        # encrypted only to restrict printing or copying.
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == _ERR_PASSWORD:
            raise DocumentError(path, "encrypted PDF (needs a password)") from None
        if code == _ERR_SECURITY:
            raise DocumentError(path, "encrypted PDF (unsupported security handler)") from None
        raise DocumentError(path, f"corrupt PDF ({_open_failure_cause(data, exc)})") from None


def _page_text(path: str, document: pdfium.PdfDocument, number: int) -> str:
    try:
        page = document[number]
        try:
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_range()
            finally:
                textpage.close()
        finally:
            page.close()
    except pdfium.PdfiumError as exc:
        raise DocumentError(path, f"corrupt PDF (page {number + 1}: {_cause(exc)})") from None
    return _clean(text)


def _open_failure_cause(data: bytes, exc: Exception) -> str:
    # PDFium says "Data format error" for any file it cannot read; an upload cut short is
    # the usual reason, and says more.
    if b"%%EOF" not in data[-_EOF_WINDOW:]:
        return "EOF marker not found"
    return _cause(exc)


def _cause(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    cause = lines[0] if lines else type(exc).__name__
    if len(cause) > _MAX_CAUSE_CHARS:
        cause = cause[: _MAX_CAUSE_CHARS - 3] + "..."
    return cause


def _clean(text: str) -> str:
    # What is there, replaced: `str.translate` looks every character of a non-ASCII page
    # up in a table, a twentieth of the whole parse.
    for glyph, replacement in _CLEANUP:
        if glyph in text:
            text = text.replace(glyph, replacement)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()
