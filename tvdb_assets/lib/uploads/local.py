"""A local directory used as the inbox (the `mock` upload store)."""

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from tvdb_assets.lib.uploads.base import UploadInfo, UploadStore

# Editors and copy tools leave these behind while a file is still being written.
_PARTIAL_SUFFIXES = (".part", ".tmp", ".crdownload", "~")


def skipped_on_purpose(name: str) -> str | None:
    """Why a file or folder of this name is never ingested, or None."""
    if name.startswith("."):
        return "hidden"
    if name.endswith(_PARTIAL_SUFFIXES):
        return "temporary file, perhaps still being written"
    return None


class LocalInbox(UploadStore):
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.root = Path(directory).resolve()

    def list(self) -> Iterator[UploadInfo]:
        """Every regular file under the root, and every entry that cannot be one, refused.

        Symlinks are followed only to files inside the inbox; a link leading out, a dangling
        link, a fifo or an unreadable folder is listed with the reason it is refused, and
        the scan goes on.
        """
        if not self.root.is_dir():
            return
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                yield self._refused(folder, f"cannot list this folder ({exc.strerror})")
                continue
            for entry in entries:
                if skipped_on_purpose(entry.name):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    else:
                        yield self._entry(entry)
                except OSError as exc:
                    yield self._refused(Path(entry.path), f"cannot read ({exc.strerror})")

    def _entry(self, entry: os.DirEntry) -> UploadInfo:
        path = Path(entry.path)
        if entry.is_symlink():
            target = path.resolve()
            if not target.exists():
                return self._refused(path, "dangling symlink")
            if not target.is_relative_to(self.root):
                return self._refused(path, "symlink to outside the inbox, not followed")
            if not target.is_file():
                return self._refused(path, "symlink to a folder, not followed")
            stat = target.stat()
        elif entry.is_file(follow_symlinks=False):
            stat = entry.stat(follow_symlinks=False)
        else:
            return self._refused(path, "not a regular file (a fifo, socket or device)")
        return UploadInfo(self._relative(path), stat.st_size, stat.st_mtime_ns)

    def describe(self) -> str:
        return str(self.root)

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _refused(self, path: Path, reason: str) -> UploadInfo:
        return UploadInfo(self._relative(path), 0, 0, refused=reason)

    def _resolve(self, path: str) -> Path:
        full = (self.root / path).resolve()
        if not full.is_relative_to(self.root):
            raise ValueError(f"{path}: outside the inbox {self.root}")
        return full

    def read(self, path: str) -> bytes:
        return self._resolve(path).read_bytes()

    def head(self, path: str, size: int = 1024) -> bytes:
        with self._resolve(path).open("rb") as handle:
            return handle.read(size)

    def sha256(self, path: str) -> str:
        with self._resolve(path).open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
