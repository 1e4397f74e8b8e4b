"""Where uploads come from: a local inbox (`mock`) or an S3-compatible bucket (`real`)."""

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """What a cheap listing tells about one upload, before its content is read."""

    path: str  # relative to the store's root, "/"-separated, as the store gives it
    bytes: int
    # What moves when the content may have changed: a file's mtime; for an object, a number
    # made from its ETag (`lib.uploads.s3`). Only uploads whose size or stamp moved are hashed.
    mtime_ns: int
    # Why this entry is not read (a symlink leading out, a fifo...): it becomes an error row.
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of the store's paths, in the store's order: after `after` (exclusive) up to
    `through` (inclusive); None at either end is open. `only`: just these paths of it (the
    objects upload notices named). A listing speaks for its span only: an upload registered
    in it but not listed is gone; one outside it is not its business."""

    after: str | None = None
    through: str | None = None
    only: frozenset[str] | None = None

    @classmethod
    def of(cls, paths: Iterable[str]) -> "Span":
        return cls(only=frozenset(paths))

    @property
    def whole(self) -> bool:
        return self.after is None and self.through is None and self.only is None

    def holds(self, path: str) -> bool:
        return (
            (self.after is None or path > self.after)
            and (self.through is None or path <= self.through)
            and (self.only is None or path in self.only)
        )


WHOLE = Span()  # every path
NOTHING = Span.of(())  # no path: a look at what is stored only


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of a store's listing: the uploads of `span`, every one of them."""

    uploads: list[UploadInfo] = field(default_factory=list)
    span: Span = WHOLE

    @property
    def next_after(self) -> str | None:
        """Where the following page starts; None: this page reached the end."""
        return self.span.through


class UploadStore(ABC):
    """Read-only access to uploads: the pipeline never modifies or deletes them."""

    # Whether `link` gives links that others can open (a bucket's presigned URLs).
    gives_links: bool = False

    @abstractmethod
    def list(self) -> Iterator[UploadInfo]: ...

    def list_page(self, after: str | None = None, limit: int | None = None) -> Listing:
        """The uploads whose paths sort after `after`, about `limit` of them (None: all).

        A store that lists cheaply (a directory) gives everything from `after` on at once.
        """
        found = [info for info in self.list() if after is None or info.path > after]
        return Listing(found, Span(after, None))

    def look(self, paths: Iterable[str]) -> Listing:
        """The uploads at `paths` as they are now; a path with nothing there is not listed,
        so an upload registered at it is gone."""
        wanted = Span.of(paths)
        return Listing([info for info in self.list() if wanted.holds(info.path)], wanted)

    def notice_address(self) -> tuple[str, str] | None:
        """The bucket and key prefix that upload notices (`tvdb webhook serve`) name for
        this store; None: no notice is about it."""
        return None

    @abstractmethod
    def read(self, path: str) -> bytes: ...

    @abstractmethod
    def sha256(self, path: str) -> str: ...

    def head(self, path: str, size: int = 1024) -> bytes:
        """The first bytes of an upload, enough to tell its kind."""
        return self.read(path)[:size]

    def link(self, path: str, expires_seconds: int) -> str | None:
        """A link to the upload that anyone holding it may open until it expires; None
        when the store cannot give one (a local inbox is not served to anyone)."""
        return None

    def describe(self) -> str:
        """Where the uploads are, for people: a folder, or `s3://bucket/prefix/`."""
        return type(self).__name__
