"""`tvdb ingest`: materialize what the intake found, in batches, through Dagster.

Runs go through the same Dagster instance the UI shows (in this process), one run per
contiguous range of partition keys, exactly as the sensor would request them. Each ingest
claims the documents it runs; those another live process is working on it waits for, and
takes over if that process dies. It stops when every document it was given is stored or
has failed, or at Ctrl-C.
"""

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psycopg

from tvdb_assets.defs.partitions import (
    DOCUMENTS,
    PARTITIONS_LOCK,
    cached_partition_lookups,
    lay_out,
    range_tags,
)
from tvdb_assets.defs.pools import ensure_pools
from tvdb_assets.defs.runs import IN_FLIGHT, REASON_TAG, fail_orphaned_runs, in_flight_keys
from tvdb_assets.lib import ahead, database, errors, settings, store, sync, workers
from tvdb_assets.lib.intake import IngestSummary, Intake, summarize, take_in
from tvdb_assets.lib.store import claims, inbox_files, ingest_errors
from tvdb_assets.lib.store.connection import lock_named
from tvdb_assets.lib.store.inbox_files import InboxFile
from tvdb_assets.lib.store.ingest_errors import IngestError

Progress = Callable[[int, int], None]
Notice = Callable[[str], None]

OWNER_TAG = "tvdb/owner"


class Interrupted(Exception):
    """Ctrl-C (SIGINT) arrived; the run in progress, if any, was marked failed."""


def ingest(
    sources: Sequence[Path],
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    batch_size: int | None = None,
    progress: Progress | None = None,
    run_config: dict | None = None,
) -> IngestSummary:
    return run(take_in(sources), instance, defs, batch_size, progress, run_config)


def run(
    intake: Intake,
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    batch_size: int | None = None,
    progress: Progress | None = None,
    run_config: dict | None = None,
    notice: Notice | None = None,
    poll_seconds: float = 1.0,
) -> IngestSummary:
    keys = [f.partition_key for f in intake.wanted]
    with _batches(instance, defs, run_config, batch_size, bool(keys)) as batches:
        _retire(instance, batches.conn, intake.changes.removed)
        interrupted = batches.run_all(keys, progress, notice, poll_seconds)
    return summarize(intake, batches.runs, batches.failed_runs, interrupted)


@dataclass
class RerunSummary:
    """What became of the documents `rerun` was given, read back from what is stored."""

    documents: int = 0
    stored: int = 0  # stored, with no open error
    errors: list[IngestError] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)
    interrupted: bool = False


def rerun(
    files: Sequence[InboxFile],
    why: str,
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    batch_size: int | None = None,
    progress: Progress | None = None,
    run_config: dict | None = None,
    notice: Notice | None = None,
) -> RerunSummary:
    """Run these stored documents again (`tvdb backfill`), in batches as `run` does, each
    run tagged with why."""
    keys = [f.partition_key for f in files]
    tags = {REASON_TAG: why}
    with _batches(instance, defs, run_config, batch_size, bool(keys), tags) as batches:
        interrupted = batches.run_all(keys, progress, notice, 1.0, stored_too=True)
        errors = ingest_errors.open_errors(batches.conn, keys)
        left = {f.partition_key for f in inbox_files.unfinished(batches.conn, keys)}
    failed = {e.partition_key for e in errors}
    stored = sum(1 for k in keys if k not in failed and k not in left)
    return RerunSummary(len(keys), stored, errors, batches.runs, batches.failed_runs, interrupted)


@contextmanager
def _batches(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    run_config: dict | None,
    batch_size: int | None,
    work: bool,
    tags: dict[str, str] | None = None,
) -> Iterator["Batches"]:
    """This process as an owner of claims and runs, with the runs of dead owners failed."""
    if work:
        # The parse and chunk workers start (import, load the tokenizer) meanwhile.
        workers.start()
    # Autocommit: a claim or an owned run must be visible to others as soon as it is made.
    with _owner() as owner, store.connect(autocommit=True) as conn:
        fail_orphaned_runs(instance, conn)
        if work:
            ensure_pools(instance)
        yield Batches(instance, defs, conn, owner, run_config, batch_size, tags)


@contextmanager
def _owner() -> Iterator[claims.Owner]:
    """This process as a claim owner, on a connection of its own for the advisory lock."""
    owner = claims.Owner(psycopg.connect(database.database_url(), autocommit=True))
    try:
        yield owner
    finally:
        owner.close()


def _retire(
    instance: dg.DagsterInstance, conn: psycopg.Connection, removed: list[sync.InboxFile]
) -> None:
    if not removed:
        return
    plan = sync.plan_partitions(instance.get_dynamic_partitions(DOCUMENTS), [], 1, removed)
    with conn.transaction():
        lock_named(conn, PARTITIONS_LOCK)
        for key in plan.retire_keys:
            instance.delete_dynamic_partition(DOCUMENTS, key)


class Batches:
    """Claims, lays out and runs batches until every wanted document is settled."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        defs: dg.Definitions,
        conn: psycopg.Connection,
        owner: claims.Owner,
        run_config: dict | None,
        batch_size: int | None,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.instance = instance
        self.tags = tags or {}
        self.job = defs.resolve_job_def("ingest")
        self.conn = conn
        self.owner = owner
        self.run_config = run_config
        self.batch_size = batch_size or settings.batch_size()
        self.runs: list[str] = []
        self.failed_runs: list[str] = []

    def run_all(
        self,
        wanted: list[str],
        progress: Progress | None,
        notice: Notice | None,
        poll_seconds: float,
        stored_too: bool = False,
    ) -> bool:
        """`finish`; whether Ctrl-C stopped it."""
        try:
            self.finish(wanted, progress, notice, poll_seconds, stored_too)
        except (Interrupted, KeyboardInterrupt):
            return True
        return False

    def finish(
        self,
        wanted: list[str],
        progress: Progress | None,
        notice: Notice | None,
        poll_seconds: float,
        stored_too: bool = False,
    ) -> None:
        tried: set[str] = set()
        waiting_said = False
        total = len(wanted)
        shown = -1

        def show(done: int) -> None:
            nonlocal shown
            if progress and total and done != shown:
                progress(done, total)
                shown = done

        while True:
            left = [k for k in wanted if k not in tried]
            taken = sync.take(
                self.conn, left, in_flight_keys(self.instance), self.owner.number, stored_too
            )
            settled_elsewhere = len(left) - len(taken.mine) - len(taken.elsewhere)
            show(len(tried) + settled_elsewhere)
            if taken.mine:
                batches = lay_out(self.instance, self.conn, taken.mine, self.batch_size)
                for keys, following in zip(batches, [*batches[1:], []], strict=True):
                    # The run may parse the next batch ahead, while it stores its own.
                    ahead.set_next_batch(following)
                    try:
                        self._run(keys)
                    finally:
                        ahead.set_next_batch([])
                    tried.update(keys)
                    show(len(tried) + settled_elsewhere)
                continue
            if not taken.elsewhere:
                return
            if notice and not waiting_said:
                notice(
                    f"waiting for {len(taken.elsewhere)} document(s) that another ingest "
                    "or a sensor run is working on"
                )
                waiting_said = True
            time.sleep(poll_seconds)

    def _run(self, keys: list[str]) -> None:
        run_id = str(uuid.uuid4())
        with self.conn.transaction():
            claims.own_run(self.conn, self.owner.number, run_id)
        self.runs.append(run_id)
        try:
            with _sigint_seen() as seen, cached_partition_lookups(self.instance):
                result = self.job.execute_in_process(
                    run_config=self.run_config,
                    instance=self.instance,
                    tags={**range_tags(keys), **self.tags, OWNER_TAG: str(self.owner.number)},
                    run_id=run_id,
                    raise_on_error=False,
                )
                interrupted = seen()
            if not result.success:
                self.failed_runs.append(run_id)
            if interrupted:
                raise Interrupted(run_id)
        except Exception as exc:
            if errors.is_lost_database(exc) and not isinstance(exc, errors.DatabaseLost):
                raise errors.DatabaseLost(database.location(), run_id) from exc
            if not isinstance(exc, Interrupted):
                _fail_unfinished(self.instance, run_id, exc)
            raise
        finally:
            # With the database gone, the claims went with the owner's lock already.
            with contextlib.suppress(psycopg.OperationalError), self.conn.transaction():
                claims.disown_runs(self.conn, [run_id])
                claims.release(self.conn, self.owner.number, keys)


def _fail_unfinished(instance: dg.DagsterInstance, run_id: str, exc: Exception) -> None:
    """Dagster raised outside the run's own failure handling (creating it, say): a run left
    NOT_STARTED would count its documents as in flight for good, so it is failed here."""
    run = instance.get_run_by_id(run_id)
    if run is not None and run.status in IN_FLIGHT:
        instance.report_run_failed(run, f"tvdb ingest stopped it: {type(exc).__name__}")


@contextmanager
def _sigint_seen() -> Iterator[Callable[[], bool]]:
    """Whether SIGINT arrived, even while Dagster had its own handler installed.

    Dagster captures Ctrl-C during a run, fails the run, and returns normally; Python's
    wake-up fd still receives the signal's number, whichever handler ran.
    """
    import socket

    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread: Dagster cannot capture signals there either
        yield lambda: False
        reader.close()
        writer.close()
        return
    seen: list[bool] = []

    def check() -> bool:
        if not seen:
            try:
                seen.append(bytes([signal.SIGINT]) in reader.recv(4096))
            except BlockingIOError:
                return False
        return any(seen)

    try:
        yield check
    finally:
        signal.set_wakeup_fd(previous)
        reader.close()
        writer.close()
