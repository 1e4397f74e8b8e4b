"""Where uploads come from: a local inbox today, an S3-compatible bucket later."""

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """What a cheap listing tells about one upload, before its content is read."""

    path: str  # relative, "/"-separated, as the file system gives it
    bytes: int
    mtime_ns: int
    # Why this entry is not read (a symlink leading out, a fifo...): it becomes an error row.
    refused: str | None = None


class UploadStore(ABC):
    """Read-only access to uploads: the pipeline never modifies or deletes them."""

    @abstractmethod
    def list(self) -> Iterator[UploadInfo]: ...

    @abstractmethod
    def read(self, path: str) -> bytes: ...

    @abstractmethod
    def sha256(self, path: str) -> str: ...

    def head(self, path: str, size: int = 1024) -> bytes:
        """The first bytes of an upload, enough to tell its kind."""
        return self.read(path)[:size]
