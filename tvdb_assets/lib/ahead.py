"""Work done ahead: while the process stores what one asset made, the worker pool already
makes what the next assets, and the next run, will ask for.

A run's assets go one after another in one process (the in-process executor), and each
spends a good part of its time writing to Postgres and to Dagster's event log while the
workers wait. What a later asset computes from an earlier one's output alone (chunks from
markdown, mock vectors from chunk text), and what the next run of an ingest parses, can be
made in the background instead, and the asset that needs it takes it from here. Nothing is
stored: a run that dies loses only its head start, and an asset that finds nothing here,
or work done for other settings or other content, computes as always.

Work ahead is a `Job`: it claims the results it will make (so that no other job makes them
twice, and a taker waits for them rather than computing them again), then runs on one
background thread, jobs one after another, publishing each result as it is made.
"""

import logging
import queue
import threading
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from typing import Any

from tvdb_assets.lib import workers


class _Slot:
    """One result, made or still owed by a job."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.made = False


log = logging.getLogger(__name__)

_lock = threading.Lock()
_slots: dict[tuple[Hashable, Hashable], _Slot] = {}
_kept: dict[Hashable, dict[Hashable, Any]] = {}
_jobs: "queue.SimpleQueue[tuple[Job, Callable[[], None]]]" = queue.SimpleQueue()
_thread: threading.Thread | None = None

# The runner's next batch (partition keys), for the run before it to parse ahead.
_next_batch: list[str] = []


class Job:
    """Background work that publishes results under (name, key)."""

    def __init__(self) -> None:
        self._owed: dict[tuple[Hashable, Hashable], _Slot] = {}

    def claim(self, name: Hashable, keys: Iterable[Hashable]) -> list[Hashable]:
        """Those of `keys` that no job has made or claimed under `name`: this job now owes
        them, and whoever takes them waits until it has made them (or given up)."""
        claimed = []
        with _lock:
            for key in keys:
                if (name, key) not in _slots:
                    _slots[(name, key)] = self._owed[(name, key)] = _Slot()
                    claimed.append(key)
        return claimed

    def publish(self, name: Hashable, results: dict[Hashable, Any]) -> None:
        for key, value in results.items():
            slot = self._owed.get((name, key))
            if slot is not None and not slot.done.is_set():
                slot.value, slot.made = value, True
                slot.done.set()

    def start(self, work: Callable[[], None]) -> None:
        """Run `work` on the background thread, after the jobs started before this one."""
        global _thread
        _jobs.put((self, work))
        with _lock:
            if _thread is None:
                # A daemon: an exit (Ctrl-C, a lost database) never waits for work ahead.
                _thread = threading.Thread(target=_run_jobs, name="tvdb-ahead", daemon=True)
                _thread.start()

    def _give_up(self) -> None:
        for slot in self._owed.values():
            slot.done.set()  # what was not made, takers compute themselves


def _run_jobs() -> None:
    while True:
        job, work = _jobs.get()
        try:
            work()
        except Exception:
            # A head start only: the assets compute what is missing, and fail there if
            # they must. Logged, so that a bug here does not go unseen.
            log.warning("work ahead failed; the assets will do it themselves", exc_info=True)
        finally:
            job._give_up()


def take(name: Hashable, keys: Sequence[Hashable]) -> dict[Hashable, Any]:
    """The results made under `name` for these keys, waiting for those still owed; keys
    nothing was made for are left out, for the caller to compute itself. Taken once."""
    with _lock:
        slots = {key: _slots.pop((name, key)) for key in keys if (name, key) in _slots}
    found = {}
    for key, slot in slots.items():
        slot.done.wait()
        if slot.made and not isinstance(slot.value, workers.Exceeded):
            found[key] = slot.value
    return found


def retain(keys: Collection[Hashable]) -> None:
    """Forget every result, made or owed, whose key is not among `keys`: work for batches
    that will not be taken (a failed run, other settings) is not held in memory."""
    with _lock:
        for name_key in [nk for nk in _slots if nk[1] not in keys]:
            del _slots[name_key]


def set_next_batch(keys: Sequence[str]) -> None:
    """Say which documents the run after the coming one will materialize (or none)."""
    global _next_batch
    _next_batch = list(keys)


def next_batch() -> list[str]:
    return list(_next_batch)


def keep(name: Hashable, values: dict[Hashable, Any]) -> None:
    """Values a later asset may take (replacing what was kept under `name` before)."""
    with _lock:
        _kept[name] = values


def take_kept(name: Hashable, keys: Sequence[Hashable]) -> dict[Hashable, Any]:
    with _lock:
        kept = _kept.get(name, {})
        found = {key: kept.pop(key) for key in keys if key in kept}
        if not kept:
            _kept.pop(name, None)
    return found
