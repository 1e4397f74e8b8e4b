"""PDF -> markdown, one page at a time, remembering where each page starts."""

import io
import logging
import zlib

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError

from tvdb_assets.lib.errors import DocumentError
from tvdb_assets.lib.models import ParsedDocument
from tvdb_assets.lib.parsing.base import char_limit

# pypdf logs a WARNING for each repair it makes to a damaged file ("EOF marker not found",
# "invalid pdf header", ...), which floods the logs on bad uploads. The outcome reaches the
# user as a DocumentError instead, so only pypdf's errors are let through.
logging.getLogger("pypdf").setLevel(logging.ERROR)

PAGE_SEPARATOR = "\n\n"
# Ligature glyphs break word search ("ﬁle" != "file"); NULs come from broken font maps.
_CLEANUP = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl"}
    | {"\ufb05": "st", "\ufb06": "st", "\x00": None}
)
_MAX_CAUSE_CHARS = 80
# Where the PDF spec lets the header and the end marker sit.
_HEADER_WINDOW = 1024
_EOF_WINDOW = 1024
# pypdf decrypts AES only with the optional `cryptography` package (pypdf[crypto]).
_AES_UNSUPPORTED = "encrypted PDF (AES needs the 'cryptography' package)"


def pdf_to_document(path: str, data: bytes) -> ParsedDocument:
    """Extract each page's text; markdown is the pages joined by a blank line."""
    reader = _open(path, data)
    try:
        page_count = len(reader.pages)
    except Exception as exc:  # pypdf raises many types on a broken page tree
        raise DocumentError(path, f"corrupt PDF ({_cause(exc)})") from None
    if page_count == 0:
        raise DocumentError(path, "PDF has no pages")
    # Page by page: only one page's text is being built at a time, and the markdown is
    # joined once at the end rather than grown by repeated concatenation.
    parts: list[str] = []
    starts: list[int] = []
    offset = 0
    for number in range(page_count):
        try:
            text = _clean(reader.pages[number].extract_text())
        except MemoryError:
            raise
        except Exception as exc:
            if _out_of_memory(exc):
                raise MemoryError from exc  # not a corrupt file: a limit, and said as one
            raise DocumentError(path, f"corrupt PDF (page {number + 1}: {_cause(exc)})") from None
        starts.append(offset)
        parts.append(text)
        offset += len(text) + len(PAGE_SEPARATOR)
        if offset > char_limit(len(data)):  # stop extracting a bomb as soon as it shows
            raise DocumentError(
                path,
                f"text far larger than the file (over {offset:,} characters from "
                f"{len(data):,} bytes by page {number + 1}): a compression bomb?",
            )
    if not any(parts):
        raise DocumentError(path, "PDF has no extractable text (scanned images?)")
    return ParsedDocument(
        markdown=PAGE_SEPARATOR.join(parts),
        parser="local/pdf",
        mime="application/pdf",
        pages=page_count,
        page_starts=tuple(starts),
    )


def _open(path: str, data: bytes) -> PdfReader:
    if b"%PDF-" not in data[:_HEADER_WINDOW]:
        raise DocumentError(path, "corrupt PDF (no %PDF- header)")
    try:
        # strict=False: repair what can be repaired, as viewers do.
        reader = PdfReader(io.BytesIO(data), strict=False)
    except DependencyError:
        raise DocumentError(path, _AES_UNSUPPORTED) from None
    except Exception as exc:
        raise DocumentError(path, f"corrupt PDF ({_open_failure_cause(data, exc)})") from None
    if reader.is_encrypted:
        # Many PDFs are encrypted only to restrict printing/copying, with an empty user
        # password; those open fine. Anything else needs a password we do not have.
        try:
            opened = reader.decrypt("") != PasswordType.NOT_DECRYPTED
        except DependencyError:
            raise DocumentError(path, _AES_UNSUPPORTED) from None
        except Exception:
            opened = False
        if not opened:
            raise DocumentError(path, "encrypted PDF")
    return reader


def _open_failure_cause(data: bytes, exc: Exception) -> str:
    # pypdf's own message for a truncated file ("Stream has ended unexpectedly") hides the
    # usual reason: the upload was cut short.
    if b"%%EOF" not in data[-_EOF_WINDOW:]:
        return "EOF marker not found"
    return _cause(exc)


def _out_of_memory(exc: Exception) -> bool:
    # zlib reports Z_MEM_ERROR as zlib.error, not MemoryError, when a stream unpacks past
    # the memory the process may use.
    return isinstance(exc, zlib.error) and "allocate" in str(exc)


def _cause(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    cause = lines[0] if lines else type(exc).__name__
    if len(cause) > _MAX_CAUSE_CHARS:
        cause = cause[: _MAX_CAUSE_CHARS - 3] + "..."
    return cause


def _clean(text: str) -> str:
    text = text.translate(_CLEANUP)
    return "\n".join(line.rstrip() for line in text.splitlines()).strip()
