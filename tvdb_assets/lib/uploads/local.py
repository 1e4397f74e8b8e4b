"""A local directory used as the inbox (the `mock` upload store)."""

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from tvdb_assets.lib.uploads.base import UploadInfo, UploadStore

# Editors and copy tools leave these behind while a file is still being written.
_PARTIAL_SUFFIXES = (".part", ".tmp", ".crdownload", "~")


class LocalInbox(UploadStore):
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.root = Path(directory).resolve()
        self.location = str(self.root)

    def list(self) -> Iterator[UploadInfo]:
        if not self.root.is_dir():
            return
        stack = [self.root]
        while stack:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or entry.name.endswith(_PARTIAL_SUFFIXES):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file():
                        stat = entry.stat()
                        relative = Path(entry.path).relative_to(self.root).as_posix()
                        yield UploadInfo(relative, stat.st_size, stat.st_mtime_ns)

    def _resolve(self, path: str) -> Path:
        full = (self.root / path).resolve()
        if not full.is_relative_to(self.root):
            raise ValueError(f"{path}: outside the inbox {self.root}")
        return full

    def read(self, path: str) -> bytes:
        return self._resolve(path).read_bytes()

    def sha256(self, path: str) -> str:
        with self._resolve(path).open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
