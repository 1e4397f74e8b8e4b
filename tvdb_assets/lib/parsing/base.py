"""The parser interface: bytes of one uploaded document in, markdown out."""

from abc import ABC, abstractmethod

from tvdb_assets.lib.models import ParsedDocument


class Parser(ABC):
    """Turns one document into markdown.

    Implementations raise `DocumentError(path, reason)` for input they cannot handle, so the
    pipeline can record the failure and carry on with the other documents.
    """

    name: str

    @abstractmethod
    def parse(self, path: str, data: bytes) -> ParsedDocument:
        """Parse `data`, the bytes of the document at relative path `path`.

        `path` is used for messages and to pick the document type from its extension.
        """
