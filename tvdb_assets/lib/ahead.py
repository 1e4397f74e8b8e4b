"""Work done ahead: while the process stores what one asset made, the worker pool already
makes what the next assets of the same run will ask for.

A run's assets go one after another in one process (the in-process executor), and each
spends a good part of its time writing to Postgres and to Dagster's event log while the
workers wait. What a later asset computes from an earlier one's output alone (chunks from
markdown, mock vectors from chunk text) can start in the background instead, and the later
asset takes it from here. Nothing is stored: a run that dies loses only its head start,
and an asset that finds nothing here, or work done for other settings, computes as always.
"""

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tvdb_assets.lib import workers


@dataclass
class _Job:
    keys: list[Hashable]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[Any] = field(default_factory=list)


_lock = threading.Lock()
_jobs: dict[Hashable, _Job] = {}
_kept: dict[Hashable, dict[Hashable, Any]] = {}


def start(name: Hashable, function: Callable[[Any], Any], items: Sequence[Any], keys: list) -> None:
    """Compute `function(item)` for each item in the worker pool, in the background; the
    results wait under `name`, one per key. A newer job replaces any left untaken (work
    for another batch, or other settings), so at most one batch's results are held."""
    job = _Job(list(keys))

    def run() -> None:
        try:
            job.results = workers.map_all(function, items)
        finally:
            job.done.set()

    with _lock:
        _jobs.clear()
        _jobs[name] = job
    # A daemon thread: an exit (Ctrl-C, a lost database) never waits for work done ahead.
    threading.Thread(target=run, name="tvdb-ahead", daemon=True).start()


def take(name: Hashable, keys: Sequence[Hashable]) -> dict[Hashable, Any]:
    """The results of `name` for these keys (waiting for the job if it is one of theirs);
    items whose work failed are left out, for the caller to compute itself."""
    with _lock:
        job = _jobs.get(name)
        if job is None or not set(keys) & set(job.keys):
            return {}
        del _jobs[name]
    job.done.wait()
    wanted = set(keys)
    return {
        key: result
        for key, result in zip(job.keys, job.results, strict=False)
        if key in wanted and not isinstance(result, workers.Exceeded)
    }


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
