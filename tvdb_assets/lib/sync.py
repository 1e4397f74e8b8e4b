"""What the inbox holds now versus what is known, and the runs that would bring them together.

Shared by the sensor and `tvdb ingest`, so both decide alike: only content whose hash
changed is ingested, and bulk work goes as runs over contiguous ranges of partition keys.
"""

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

import psycopg

from tvdb_assets.lib.ids import partition_key_for, shown_path
from tvdb_assets.lib.store import claims, inbox_files, ingest_errors
from tvdb_assets.lib.store.connection import lock_named
from tvdb_assets.lib.store.inbox_files import InboxFile
from tvdb_assets.lib.store.ingest_errors import IngestError
from tvdb_assets.lib.uploads import WHOLE, Span, UploadInfo, UploadStore

INBOX_LOCK = "tvdb_assets.inbox"


@dataclass
class InboxChanges:
    """The inbox against the registry (what it held last time) and against what is stored."""

    added: list[InboxFile] = field(default_factory=list)
    changed: list[InboxFile] = field(default_factory=list)
    touched: list[InboxFile] = field(default_factory=list)  # new mtime, same content
    removed: list[InboxFile] = field(default_factory=list)
    # Content not (yet) stored: new, changed, and whatever an interrupted run left undone.
    unfinished: list[InboxFile] = field(default_factory=list)
    # Listed, but could not be read to hash (refused, with the reason): a known upload stays
    # as it was, rows and all, since a passing failure must not retire a document.
    unreadable: list[UploadInfo] = field(default_factory=list)

    @property
    def resumed(self) -> list[InboxFile]:
        """Unfinished content that was already in the inbox as it is now."""
        fresh = {f.partition_key for f in self.added + self.changed}
        return [f for f in self.unfinished if f.partition_key not in fresh]


def fingerprint(listing: Sequence[UploadInfo]) -> str:
    """A digest of the listing: an unchanged inbox is recognised without touching the database."""
    digest = hashlib.sha256()
    for info in sorted(listing, key=lambda i: i.path):
        digest.update(f"{info.path}\0{info.bytes}\0{info.mtime_ns}\n".encode())
    return digest.hexdigest()


def diff(
    uploads: UploadStore,
    listing: Sequence[UploadInfo],
    known: dict[str, InboxFile],
    span: Span = WHOLE,
) -> InboxChanges:
    """Compare a listing of `span` with the registry; only files whose size or mtime (an
    object's ETag) moved are hashed. Known uploads outside the span are not looked at."""
    changes = InboxChanges()
    listing = [info for info in listing if info.refused is None]
    for info in sorted(listing, key=lambda i: i.path):
        old = known.get(info.path)
        if old and (old.bytes, old.mtime_ns) == (info.bytes, info.mtime_ns):
            continue
        try:
            sha = uploads.sha256(info.path)
        except OSError as exc:
            reason = f"cannot read ({exc.strerror or exc})"
            changes.unreadable.append(replace(info, refused=reason))
            continue
        seen = InboxFile(partition_key_for(info.path), info.path, info.bytes, info.mtime_ns, sha)
        if old is None:
            changes.added.append(seen)
        elif old.sha256 != sha:
            changes.changed.append(seen)
        else:
            changes.touched.append(seen)
    listed = {info.path for info in listing}
    changes.removed = [f for path, f in known.items() if span.holds(path) and path not in listed]
    return changes


def refresh(
    conn: psycopg.Connection,
    uploads: UploadStore,
    listing: Sequence[UploadInfo] | None = None,
    span: Span = WHOLE,
) -> InboxChanges:
    """Diff the listing (of `span`: all the uploads, a page of a bucket, or the objects
    upload notices named) against the registry, store what was seen and retire what is
    gone. Without a listing, the store is listed under the inbox lock; with one, what it
    misses is looked at again under the lock. Either way a file another process copied in
    and registered a moment ago is never retired as gone.

    What is unfinished is read from the stored rows, never from a marker of what was once
    requested: after any crash, the unfinished documents are exactly those left undone.
    """
    with conn.transaction():
        lock_named(conn, INBOX_LOCK)
        listed_before = listing is not None
        if listing is None:
            listing = list(uploads.list())
        changes = diff(uploads, listing, _known(conn, span), span)
        if changes.removed and listed_before:
            # Listed before the lock was taken: an upload another process copied in and
            # registered since is missing from it, yet there. Only what is gone retires.
            there = {info.path for info in uploads.look(f.path for f in changes.removed).uploads}
            changes.removed = [f for f in changes.removed if f.path not in there]
        inbox_files.upsert(conn, changes.added + changes.changed + changes.touched)
        if changes.removed:
            inbox_files.retire(conn, [f.partition_key for f in changes.removed])
        _record_refused(conn, [*listing, *changes.unreadable], span)
        changes.unfinished = inbox_files.unfinished(conn)
    return changes


def _known(conn: psycopg.Connection, span: Span) -> dict[str, InboxFile]:
    """The registered uploads by path: all of them, or just the paths of a span of a few."""
    if span.only is None:
        return inbox_files.load_all(conn)
    found = inbox_files.load(conn, [partition_key_for(path) for path in span.only])
    return {f.path: f for f in found.values()}


def _record_refused(
    conn: psycopg.Connection, listing: Sequence[UploadInfo], span: Span = WHOLE
) -> None:
    """One error row per inbox entry that cannot be read as a file, kept once while it lasts.

    Such rows have no content hash; those whose entry is gone or readable now are closed,
    within the span listed (another page of a bucket speaks for its own).
    """
    refused = [
        IngestError(partition_key_for(i.path), shown_path(i.path), "read", reason)
        for i in listing
        if (reason := i.refused) is not None
    ]
    keys = [partition_key_for(i.path) for i in listing if i.refused is not None]
    if not span.whole:
        keys += [
            key
            for e in ingest_errors.open_errors(conn)
            if (key := e.partition_key)
            and e.stage == "read"
            and e.sha256 is None
            and not span.holds(e.path)
        ]
    ingest_errors.resolve_readable(conn, keys)
    if refused:
        already = {(e.partition_key, e.reason) for e in ingest_errors.open_errors(conn, keys)}
        ingest_errors.record(
            conn, [e for e in refused if (e.partition_key, e.reason) not in already]
        )


@dataclass
class Take:
    """Of the documents asked for and still unfinished: ours to run, and those to wait for."""

    mine: list[InboxFile] = field(default_factory=list)
    elsewhere: list[InboxFile] = field(default_factory=list)


def take(
    conn: psycopg.Connection,
    wanted: Collection[str],
    running: Collection[str],
    owner: int | None = None,
    stored_too: bool = False,
) -> Take:
    """Claim for `owner` the unfinished documents among `wanted` that nobody is working on
    (`stored_too`: stored ones as well, to run them again).

    `running` are the keys of runs in flight (queued or started); documents a live process
    has claimed are busy too. Under the inbox lock, so two takers never get the same one.
    Without an owner (the sensor) nothing is claimed: its runs are seen as in flight.
    """
    with conn.transaction():
        lock_named(conn, INBOX_LOCK)
        if stored_too:
            found = inbox_files.load(conn, list(wanted))
            unfinished = [found[k] for k in wanted if k in found]
        else:
            unfinished = inbox_files.unfinished(conn, list(wanted))
        busy = set(claims.busy_elsewhere(conn, owner)) | set(running)
        taken = Take(
            mine=[f for f in unfinished if f.partition_key not in busy],
            elsewhere=[f for f in unfinished if f.partition_key in busy],
        )
        if owner is not None:
            claims.claim(conn, owner, taken.mine)
    return taken


@dataclass(frozen=True)
class PartitionPlan:
    """Dynamic-partition edits (retire, then move, then add), then one run per batch."""

    retire_keys: list[str]  # registered, but the upload is gone
    move_keys: list[str]  # changed documents re-registered at the end of the key order
    new_keys: list[str]
    batches: list[list[str]]


def plan_partitions(
    existing_keys: Sequence[str],
    to_ingest: Sequence[InboxFile],
    batch_size: int,
    removed: Sequence[InboxFile] = (),
) -> PartitionPlan:
    """Lay out keys so that every document to ingest sits in one contiguous stretch.

    Documents without a partition are appended at the end of the key order. Those with one
    that are not already a contiguous stretch at the end are re-registered there, so one
    range run (or a few, by batch size) covers them instead of one run per document.
    The partitions of `removed` uploads retire.
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    gone = {f.partition_key for f in removed}
    present = set(existing_keys) - gone
    new_keys = [f.partition_key for f in to_ingest if f.partition_key not in present]
    changed = {f.partition_key for f in to_ingest} - set(new_keys)

    order = [k for k in existing_keys if k not in gone]
    tail = order[len(order) - len(changed) :] if changed else []
    move = sorted(changed) if set(tail) != changed else []
    stretch = (move or tail) + new_keys
    batches = [stretch[i : i + batch_size] for i in range(0, len(stretch), batch_size)]
    retire = [k for k in existing_keys if k in gone]
    return PartitionPlan(retire, move, new_keys, batches)
