"""How FakeLlamaParse "parses" an upload: real text out of real bytes, so tests can assert on it.

PDFs (starting with %PDF) give one page per PDF page via pypdf; anything else is one page of
UTF-8 text. Failures carry the error code the fake reports for the job.
"""

import io
from dataclasses import dataclass

from pypdf import PdfReader
from pypdf.errors import PyPdfError

NO_DATA = "NO_DATA_FOUND_IN_FILE"  # the code the SDK itself checks for (partitioned parsing)
UNREADABLE = "UNREADABLE_FILE"


class ParseFailure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ParsedPage:
    number: int  # 1-based, in the original document
    text: str

    @property
    def markdown(self) -> str:
        return self.text


def extract_pages(data: bytes) -> list[ParsedPage]:
    """All pages of the upload; raises ParseFailure for empty or unreadable files."""
    if not data:
        raise ParseFailure(NO_DATA, "The uploaded file is empty.")
    if not data.startswith(b"%PDF"):
        return [ParsedPage(1, data.decode("utf-8", errors="replace").strip())]
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseFailure(UNREADABLE, "The PDF is encrypted.")
        return [
            ParsedPage(i + 1, (page.extract_text() or "").strip())
            for i, page in enumerate(reader.pages)
        ]
    except ParseFailure:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ParseFailure(UNREADABLE, f"Could not read the PDF: {exc}") from exc


def select_pages(
    pages: list[ParsedPage], target_pages: str | None, max_pages: int | None
) -> list[ParsedPage]:
    """Apply a job's `page_ranges`: `target_pages` ("1,3-5", 1-based) wins over `max_pages`."""
    chosen = pages
    if target_pages:
        wanted: set[int] = set()
        for part in target_pages.split(","):
            start, sep, end = part.strip().partition("-")
            first = int(start)
            wanted.update(range(first, int(end) + 1) if sep else [first])
        chosen = [p for p in pages if p.number in wanted]
    elif max_pages:
        chosen = chosen[:max_pages]
    if not chosen:
        raise ParseFailure(NO_DATA, "No pages in the requested range.")
    return chosen
