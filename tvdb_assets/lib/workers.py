"""Worker processes that live as long as the process that uses them: parsing and chunking
are CPU-bound, and a risky document (PDF, HTML) gets a time and memory limit of its own.

One pool per process, started on first use and stopped at exit, so an ingest or a run pays
the workers' start-up once, not once per batch. Workers are forked from a fork server (not
from the caller, which may be a Dagster run with threads), which imports what they need
once: a worker, and one that replaces a worker killed at its limit, starts in milliseconds.
"""

import atexit
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import Any, TypeVar

from tvdb_assets.lib import settings

T = TypeVar("T")
R = TypeVar("R")

# Below this many items, while no pool runs yet, starting one costs more than it saves.
MIN_ITEMS_FOR_POOL = 16

WORKER_NICENESS = 10
FEED_SWITCH_SECONDS = 0.001


def worker_count() -> int:
    return settings.worker_processes()


@dataclass(frozen=True)
class Limits:
    seconds: float  # wall time for one item
    memory_mb: int  # address space one item may add to its worker


@dataclass(frozen=True)
class Exceeded:
    """An item that did not finish within its limits, or whose worker broke, and why."""

    reason: str  # "took longer than 4 s", "needed more than 48 MB", "parser failed (...)"
    limit: bool = False  # whether a time or memory limit stopped it
    detail: str = ""


class WorkerFailed(RuntimeError):
    """A worker broke on an item that had no limits to blame: a bug, not a bad document."""


def map_guarded(
    function: Callable[[T], R],
    items: Sequence[T],
    limits: Limits,
    sizes: Sequence[int] | None = None,
) -> list[R | Exceeded]:
    """`[function(item) for item in items]` in the pool's workers, each call within `limits`.

    A worker past its time is killed and replaced; one that runs out of memory, raises or
    dies is replaced too. Every item gets a result, in order: one bad document never stops
    the others. `function` must be picklable.

    With `sizes` (what each item is expected to cost), the largest are sent first, so the
    map does not end on one big item while the other workers idle.
    """
    return _pool().map(function, items, limits, sizes)


def map_in_order(
    function: Callable[[T], R], items: Sequence[T], sizes: Sequence[int] | None = None
) -> list[R]:
    """`[function(item) for item in items]`, in the pool when there are enough items."""
    if worker_count() <= 1 or (_POOL is None and len(items) < MIN_ITEMS_FOR_POOL):
        return [function(item) for item in items]
    results = map_all(function, items, sizes)
    for item, result in zip(items, results, strict=True):
        if isinstance(result, Exceeded):
            raise WorkerFailed(f"a worker failed on {item!r:.80}: {result.reason}")
    return results  # type: ignore[return-value]  # no Exceeded left


# What the fork server imports before it forks a worker: the pipeline's stages and the
# tokenizer with its token lengths, loaded once for every worker.
PIPELINE_PRELOAD = ("tvdb_assets.lib.worker_preload",)


def start(preload: Sequence[str] = PIPELINE_PRELOAD) -> None:
    """Start the pool in the background, its fork server importing the `preload` modules
    (which may warm caches as they load): the workers' start-up overlaps the caller's work,
    and the first map waits for what is left of it. Once started, starting again does
    nothing (`tvdb ingest` starts it early, the runner for any other caller)."""
    global _preload, _starter
    # Not the pool's lock: the thread starting the pool holds that one until the fork
    # server has loaded, and a second start must not wait for it.
    with _START_LOCK:
        if _POOL is not None or _starter is not None:
            return
        _preload = list(preload)
        _starter = threading.Thread(target=_pool, name="tvdb-workers-start", daemon=True)
        _starter.start()


def stop() -> None:
    """Stop the pool's workers now (they are also stopped at exit)."""
    global _POOL, _starter
    with _START_LOCK, _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None
        _starter = None


def map_all(
    function: Callable[[T], R], items: Sequence[T], sizes: Sequence[int] | None = None
) -> list[R | Exceeded]:
    """`[function(item) for item in items]` in the pool, without limits; an item whose
    worker failed is an `Exceeded` in its place. `sizes`: as for `map_guarded`."""
    return _pool().map(function, items, None, sizes)


class Pool:
    """`size` workers forked from the fork server."""

    def __init__(self, size: int, preload: Sequence[str] = ()) -> None:
        self._context = multiprocessing.get_context("forkserver")
        # Read when the fork server starts, with the first worker. `__main__` too, so that
        # a worker does not import the caller's main module again (as a spawned one would).
        self._context.set_forkserver_preload(["__main__", *preload])
        self._workers = [_Worker(self._context) for _ in range(size)]
        self._lock = threading.Lock()

    def map(
        self,
        function: Callable[[T], R],
        items: Sequence[T],
        limits: Limits | None,
        sizes: Sequence[int] | None = None,
    ) -> list[R | Exceeded]:
        if not items:
            return []  # without waiting for a map another thread is running
        with self._lock:
            return self._map(function, items, limits, sizes)

    def _map(
        self,
        function: Callable[[T], R],
        items: Sequence[T],
        limits: Limits | None,
        sizes: Sequence[int] | None,
    ) -> list[R | Exceeded]:
        results: list[Any] = [None] * len(items)
        seconds = limits.seconds if limits else float("inf")
        feed = _Feed(function, items, sizes, limits.memory_mb if limits else None, seconds)
        try:
            while feed.pending or feed.sent:
                for worker in self._workers:
                    feed.top_up(worker)
                first = min(s.deadline for s in feed.sent.values())
                timeout = None if first == float("inf") else max(0.0, first - time.monotonic())
                by_conn = {worker.conn: worker for worker in feed.sent}
                for conn in wait(list(by_conn), timeout=timeout):
                    worker = by_conn[conn]  # type: ignore[index]
                    out = feed.sent[worker]
                    results[out.indices.popleft()] = worker.receive(feed.memory_mb)
                    if worker.alive():
                        out.deadline = time.monotonic() + seconds  # the next one's, begun now
                    else:
                        feed.take_back(worker)
                        self._replace(worker)
                now = time.monotonic()
                for worker, out in list(feed.sent.items()):
                    if not out.indices:
                        del feed.sent[worker]  # idle: topped up again on the next round
                    elif now >= out.deadline:
                        late = out.indices.popleft()
                        results[late] = Exceeded(f"took longer than {seconds:g} s", limit=True)
                        feed.take_back(worker)
                        self._replace(worker)
        finally:
            # Interrupted (Ctrl-C, a lost database): workers still on an item are replaced,
            # so the next map never reads a stale reply.
            for worker in feed.sent:
                self._replace(worker)
        return results

    def _replace(self, worker: "_Worker") -> "_Worker":
        worker.stop()
        fresh = _Worker(self._context)
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()


# Items a worker holds at once: the one it works on, and the next, waiting in its pipe. A
# worker done with one starts the next at once, instead of idling until this process (busy
# with a Dagster run, the GIL taken) reads the reply and sends another: with the caller
# busy half the time, the corpus's chunking took 10-20% longer that way.
QUEUED = 2
# The next item waits in the pipe only when it is this small: a larger one could fill the
# pipe while the worker is writing its reply, and each would wait on the other for ever.
QUEUED_BYTES = 64 * 1024


@dataclass
class _Sent:
    """The items one worker was sent and has not answered, the one it works on first."""

    indices: deque[int]
    deadline: float  # when the first must be done


class _Feed:
    """One map's items on their way to the workers, and who holds which."""

    def __init__(
        self,
        function: Callable,
        items: Sequence[Any],
        sizes: Sequence[int] | None,
        memory_mb: int | None,
        seconds: float,
    ) -> None:
        self.function = function
        self.items = items
        self.memory_mb = memory_mb
        self.seconds = seconds
        order = range(len(items))
        self.pending = deque(order if sizes is None else sorted(order, key=lambda i: -sizes[i]))
        self.sent: dict[_Worker, _Sent] = {}
        self._ready: tuple[int, bytes] | None = None  # the next item, already pickled

    def top_up(self, worker: "_Worker") -> None:
        """Send `worker` the next items until it holds `QUEUED` (one, when they are large)."""
        while self.pending:
            out = self.sent.get(worker)
            if out is not None and len(out.indices) >= QUEUED:
                return
            index = self.pending[0]
            if self._ready is None or self._ready[0] != index:
                item = (self.function, self.items[index], self.memory_mb)
                self._ready = (index, ForkingPickler.dumps(item))
            message = self._ready[1]
            if out is not None and len(message) > QUEUED_BYTES:
                return
            self.pending.popleft()
            self._ready = None
            worker.conn.send_bytes(message)
            if out is None:
                self.sent[worker] = _Sent(deque([index]), time.monotonic() + self.seconds)
            else:
                out.indices.append(index)

    def take_back(self, worker: "_Worker") -> None:
        """What waited in the pipe of a worker that was killed or died, never begun, goes
        back to the front of the queue."""
        self.pending.extendleft(reversed(self.sent.pop(worker).indices))


_POOL: Pool | None = None
_POOL_LOCK = threading.Lock()
_START_LOCK = threading.Lock()
_preload: list[str] = []
_starter: threading.Thread | None = None


def _pool() -> Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            # This process feeds the workers from one thread while another (a Dagster run)
            # keeps busy: at Python's default 5 ms, every reply waits up to that long for
            # the GIL before it is read and the worker is sent its next item.
            sys.setswitchinterval(FEED_SWITCH_SECONDS)
            _POOL = Pool(worker_count(), _preload)
            atexit.register(_POOL.close)
        return _POOL


class _Worker:
    def __init__(self, context: Any) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child,), daemon=True)
        self.process.start()
        child.close()

    def receive(self, memory_mb: int | None) -> Any:
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(1)
            return _death(self.process.exitcode, memory_mb)
        if status == "ok":
            return value
        return Exceeded(value, limit=status == "memory")

    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def _death(exitcode: int | None, memory_mb: int | None) -> Exceeded:
    how = signal.Signals(-exitcode).name if exitcode and exitcode < 0 else f"exit {exitcode}"
    if memory_mb is not None:
        # Native parsers (PDFium) abort when an allocation fails under the address-space
        # limit rather than raise MemoryError; that limit is by far the likeliest cause.
        return Exceeded(f"needed more than {memory_mb} MB", True, f"the worker stopped: {how}")
    return Exceeded(f"the worker process stopped ({how})")


def _serve(conn: Connection) -> None:
    """A worker's loop: (function, item, memory limit) in, (status, value) out, until the
    pipe closes."""
    # Ctrl-C reaches the whole process group: the parent decides, and stops its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent stores each batch and reports it to Dagster, one step after another: it
    # is the pipeline's critical path. Workers take the CPU it leaves, never the other way.
    os.nice(WORKER_NICENESS)
    _, unlimited = resource.getrlimit(resource.RLIMIT_AS)
    while True:
        try:
            function, item, memory_mb = conn.recv()
        except EOFError:
            return
        if memory_mb is not None:
            _limit_memory(memory_mb, unlimited)
        try:
            reply: tuple[str, Any] = ("ok", function(item))
        except MemoryError:
            reply = ("memory", f"needed more than {memory_mb} MB")  # a limit, said as one
        except RecursionError:
            reply = ("error", "nested too deeply to parse")
        except Exception as exc:  # a parser bug must fail one document, not the batch
            reply = ("error", f"parser failed ({type(exc).__name__}: {str(exc)[:200]})")
        finally:
            # The soft limit may rise again up to the hard one: lift it between items.
            resource.setrlimit(resource.RLIMIT_AS, (unlimited, unlimited))
        conn.send(reply)


def _limit_memory(memory_mb: int, hard: int) -> None:
    """Cap this process's address space at what it uses now plus `memory_mb`."""
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = used + memory_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
