"""What `tvdb ingest` does before any run: copy the sources in (or list them where they are,
in the uploads bucket), see what changed, and say so.

Free of Dagster, so an ingest with nothing new to do finishes without loading it.
"""

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tvdb_assets.lib import settings, store, sync
from tvdb_assets.lib.errors import ConfigError
from tvdb_assets.lib.ids import partition_key_for, shown_path
from tvdb_assets.lib.store import chunks as chunk_store
from tvdb_assets.lib.store import claims, documents, inbox_files, ingest_errors
from tvdb_assets.lib.store.inbox_files import InboxFile
from tvdb_assets.lib.store.ingest_errors import IngestError
from tvdb_assets.lib.uploads import LocalInbox, UploadInfo, UploadStore
from tvdb_assets.lib.uploads.local import skipped_on_purpose
from tvdb_assets.lib.uploads.s3 import S3Bucket


@dataclass
class IngestSummary:
    files: int = 0
    new: int = 0
    changed: int = 0
    resumed: int = 0  # parsed, but an earlier ingest or run stopped before its vectors
    unchanged: int = 0
    ingested: int = 0
    chunks: int = 0
    tokens: int = 0
    runs: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)
    errors: list[IngestError] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # paths not stored when we stopped
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), not copied
    interrupted: bool = False
    seconds: float = 0.0


@dataclass
class Targets:
    """What to copy into the inbox, and what is left out on purpose, with the reason."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)  # (source file, inbox file)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (shown path, reason)


def inbox_targets(sources: Sequence[Path], inbox: Path) -> Targets:
    """Each source goes under a folder named after it; its files are read where they are.

    Symlinks are followed only to files inside their source folder; hidden and temporary
    files, links leading out, dangling links, special files and the inbox itself (when a
    source contains it) are skipped and named.
    """
    targets = Targets()
    inbox = inbox.resolve()
    for source in sources:
        source = source.resolve()
        if source.is_dir():
            if source.is_relative_to(inbox):
                targets.skipped.append((shown_path(str(source)), "already in the inbox"))
                continue
            _walk(source, inbox / source.name, inbox, targets)
        elif source.is_file():
            targets.pairs.append((source, inbox / source.parent.name / source.name))
        else:
            # A mistyped path: one line for the user (`tvdb ingest`), not a traceback.
            raise ConfigError(f"{shown_path(str(source))}: no such file or directory")
    return targets


def _walk(source: Path, destination: Path, inbox: Path, targets: Targets) -> None:
    def skip(path: Path, reason: str) -> None:
        shown = shown_path(f"{source.name}/{path.relative_to(source).as_posix()}")
        targets.skipped.append((shown, reason))

    def unreadable(error: OSError) -> None:
        skip(Path(error.filename or source), f"cannot read ({error.strerror})")

    for folder, dirs, files in os.walk(source, onerror=unreadable):
        here = Path(folder)
        for name in list(dirs):
            path = here / name
            reason = skipped_on_purpose(name)
            if path.is_symlink():
                reason = "symlink to a folder, not followed"
            elif path.resolve() == inbox:
                reason = "the inbox itself"
            if reason:
                dirs.remove(name)
                skip(path, reason)
        dirs.sort()
        for name in sorted(files):
            path = here / name
            reason = skipped_on_purpose(name) or _file_problem(path, source)
            if reason:
                skip(path, reason)
            else:
                targets.pairs.append((path.resolve(), destination / path.relative_to(source)))


def _file_problem(path: Path, source: Path) -> str | None:
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            return "dangling symlink"
        if not target.is_relative_to(source):
            return "symlink to outside the folder, not followed"
    if not path.is_file():
        return "not a regular file (a fifo, socket or device)"
    return None


def copy_into_inbox(sources: Sequence[Path], inbox: Path) -> Targets:
    """Copy the sources into the inbox; return what was taken and what was skipped.

    A file whose copy already has the same size and mtime is left alone, so re-ingesting an
    unchanged corpus touches nothing.
    """
    targets = inbox_targets(sources, inbox)
    for src, dest in targets.pairs:
        if _copied_already(src, dest):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    return targets


def would_copy(sources: Sequence[Path]) -> bool:
    """Whether taking these sources in would copy a file into the inbox: then there is work
    for the workers. Asks the file system only, so it can be asked before the database is up."""
    targets = inbox_targets(sources, settings.uploads_dir())
    return any(not _copied_already(src, dest) for src, dest in targets.pairs)


def _copied_already(src: Path, dest: Path) -> bool:
    """The inbox holds a copy of `src` with its size and mtime."""
    if not dest.exists():
        return False
    theirs, ours = src.stat(), dest.stat()
    return (ours.st_size, ours.st_mtime_ns) == (theirs.st_size, theirs.st_mtime_ns)


@dataclass
class Intake:
    """The sources' inbox paths and what the inbox refresh found."""

    ours: set[str]  # our files' inbox paths
    skipped: list[tuple[str, str]]
    changes: sync.InboxChanges
    orphaned_runs: list[str]
    stored: dict[str, str]  # partition key -> hash of the stored document, for our files
    started: float

    @property
    def wanted(self) -> list[InboxFile]:
        """Our files whose content is not stored yet."""
        return [f for f in self.changes.unfinished if f.path in self.ours]

    @property
    def has_work(self) -> bool:
        return bool(self.wanted or self.changes.removed or self.orphaned_runs)


def take_in(sources: Sequence[Path]) -> Intake:
    started = time.perf_counter()
    mode = settings.mode_from_env("TVDB_UPLOADS_MODE")
    if mode != "mock":
        # The registry mirrors one store: the local inbox's listing would retire every
        # document of the bucket's.
        raise ConfigError(
            f"uploads come from a bucket (TVDB_UPLOADS_MODE={mode}): put the files in it "
            "and run `tvdb ingest s3://bucket/prefix`"
        )
    inbox = settings.uploads_dir()
    inbox.mkdir(parents=True, exist_ok=True)
    targets = copy_into_inbox(sources, inbox)
    ours = {dest.relative_to(inbox).as_posix() for _, dest in targets.pairs}
    return _register(LocalInbox(inbox), None, ours, targets.skipped, started)


def take_in_bucket(urls: Sequence[str]) -> Intake:
    """`tvdb ingest s3://bucket/prefix`: the objects under each URL, read where they are
    (no copy), registered exactly as the sensor registers them. The URLs must lie in the
    uploads bucket (TVDB_S3_BUCKET, TVDB_S3_PREFIX), which every run and the sensor read."""
    started = time.perf_counter()
    uploads, listing, mine = bucket_objects(urls)
    ours = {i.path for i in mine if i.refused is None}
    # Refused keys are skipped here as a local ingest skips odd entries; the refresh also
    # records an error row naming each, as the sensor does.
    skipped = [(shown_path(i.path), why) for i in mine if (why := i.refused) is not None]
    return _register(uploads, listing, ours, skipped, started)


def bucket_objects(urls: Sequence[str]) -> tuple[S3Bucket, list[UploadInfo], list[UploadInfo]]:
    """The uploads bucket, its listing, and the objects of it under the URLs."""
    # Here, not at the top: the clients' imports would cost every local ingest 0.4 s,
    # an unchanged one most of its time.
    from tvdb_assets.lib import clients

    uploads = clients.upload_store()
    if not isinstance(uploads, S3Bucket):
        raise ConfigError(
            "uploads come from the local inbox: set TVDB_UPLOADS_MODE=real and "
            "TVDB_S3_BUCKET (TVDB_S3_PREFIX, TVDB_S3_ENDPOINT_URL) to ingest from a bucket"
        )
    try:
        wanted = [uploads.location.relative(url) for url in urls]
    except ValueError as exc:
        raise ConfigError(
            f"{exc} (TVDB_S3_BUCKET, TVDB_S3_PREFIX): the runs and the sensor read that one"
        ) from None
    listing = list(uploads.list())
    return uploads, listing, [i for i in listing if any(_under(i.path, w) for w in wanted)]


def _under(path: str, where: str) -> bool:
    return not where or path == where or path.startswith(f"{where}/")


def _register(
    uploads: UploadStore,
    listing: list[UploadInfo] | None,
    ours: set[str],
    skipped: list[tuple[str, str]],
    started: float,
) -> Intake:
    with store.connect() as conn:
        changes = sync.refresh(conn, uploads, listing)
        intake = Intake(ours, skipped, changes, claims.orphaned_runs(conn), {}, started)
        intake.stored.update(documents.hashes(conn, [f.partition_key for f in intake.wanted]))
    return intake


def summarize(
    intake: Intake, runs: list[str], failed_runs: list[str], interrupted: bool = False
) -> IngestSummary:
    """What became of our files, read back from what is stored."""
    ours = intake.ours
    summary = IngestSummary(
        files=len(ours),
        skipped=intake.skipped,
        runs=runs,
        failed_runs=failed_runs,
        interrupted=interrupted,
    )
    # Told against what was stored when we started, not against what the inbox held.
    for f in intake.wanted:
        stored = intake.stored.get(f.partition_key)
        if stored is None:
            summary.new += 1
        elif stored != f.sha256:
            summary.changed += 1
        else:
            summary.resumed += 1
    summary.unchanged = summary.files - len(intake.wanted)
    asked = [f.partition_key for f in intake.wanted]
    with store.connect() as conn:
        # Every source document still failing is reported, not only those run just now.
        summary.errors = ingest_errors.open_errors(conn, [partition_key_for(p) for p in ours])
        left = inbox_files.unfinished(conn, asked)
        totals = chunk_store.counts(conn, asked)
    failed = {e.partition_key for e in summary.errors}
    undone = {f.partition_key for f in left}
    summary.unfinished = [f.shown for f in left]
    summary.ingested = sum(1 for key in asked if key not in failed and key not in undone)
    done = [k for k in asked if k not in undone]
    summary.chunks = sum(totals.get(k, (0, 0))[0] for k in done)
    summary.tokens = sum(totals.get(k, (0, 0))[1] for k in done)
    summary.seconds = time.perf_counter() - intake.started
    return summary
