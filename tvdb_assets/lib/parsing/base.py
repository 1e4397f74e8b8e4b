"""The parser interface: bytes of one uploaded document in, markdown out."""

import dataclasses
import re
from abc import ABC, abstractmethod
from collections.abc import Hashable

from tvdb_assets.lib.models import ParsedDocument
from tvdb_assets.lib.resilience import CircuitBreaker

# Text extracted from an upload may be this many characters per byte of it (and at least
# MIN_CHARS): far above any real document (PDF text is rarely more than a few per byte),
# far below a compression bomb (70 MB of text from a 68 KB PDF).
CHARS_PER_BYTE = 100
MIN_CHARS = 2_000_000
# And at most this many per document, whatever its size (a 100 MB text file fits).
MAX_CHARS = 150_000_000


def char_limit(upload_bytes: int) -> int:
    return min(MAX_CHARS, max(MIN_CHARS, CHARS_PER_BYTE * upload_bytes))


# Postgres text holds neither NUL nor unpaired surrogates (which are not UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class Parser(ABC):
    """Turns one document into markdown.

    Implementations raise `DocumentError(path, reason)` for input they cannot handle, so the
    pipeline can record the failure and carry on with the other documents.
    """

    name: str
    # A paid service: results are cached by content hash, so the same bytes are paid once.
    cacheable: bool = False
    # Documents the parser may work on at once (threads waiting on a service).
    concurrency: int = 1
    # CPU-bound work on this machine: spread over processes, each document within limits.
    runs_locally: bool = False

    @property
    def settings(self) -> Hashable:
        """What decides its output besides the bytes: two parsers with the same settings
        parse alike, so one may take what the other parsed."""
        return self.name

    def circuit(self) -> CircuitBreaker | None:
        """The breaker of the service it calls (its state is saved after each batch)."""
        return None

    def close(self) -> None:
        """Let go of what it holds open (a ledger's connection); a local parser holds none."""
        return None

    @abstractmethod
    def parse(self, path: str, data: bytes) -> ParsedDocument:
        """Parse `data`, the bytes of the document at relative path `path`.

        `path` is used for messages and to pick the document type from its extension.
        """


def storable(document: ParsedDocument) -> ParsedDocument:
    """What a parser (or a service) returned, fit to store: each NUL and unpaired surrogate
    becomes U+FFFD, one character for one, so page offsets stay true."""
    if _UNSTORABLE.search(document.markdown) is None:
        return document
    return dataclasses.replace(document, markdown=_UNSTORABLE.sub("\ufffd", document.markdown))
