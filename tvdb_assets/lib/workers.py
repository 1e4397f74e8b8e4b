"""Worker processes: a pool for CPU-bound stages where it pays, and guarded workers that give
each risky document (PDF, HTML) a time and memory limit of its own."""

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Below this many items a pool's start-up costs more than it saves.
MIN_ITEMS_FOR_POOL = 16


def worker_count() -> int:
    return int(os.environ.get("TVDB_WORKERS", "0")) or (os.cpu_count() or 1)


def map_in_order(function: Callable[[T], R], items: Iterable[T], size_hint: int) -> Iterator[R]:
    """`map(function, items)`, spread over processes when there are enough items and cores.

    Spawned (not forked) workers: the caller may be a Dagster run worker with threads.
    """
    workers = min(worker_count(), max(1, size_hint // MIN_ITEMS_FOR_POOL))
    if workers <= 1:
        yield from map(function, items)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(function, items, chunksize=8)


@dataclass(frozen=True)
class Limits:
    seconds: float  # wall time for one item
    memory_mb: int  # address space one item may add to its worker


@dataclass(frozen=True)
class Exceeded:
    """An item that did not finish within its limits, or whose worker broke, and why."""

    reason: str


def map_guarded(
    function: Callable[[T], R], items: Sequence[T], limits: Limits, workers: int
) -> list[R | Exceeded]:
    """`[function(item) for item in items]`, each call in a spawned worker within `limits`.

    A worker past its time is killed and replaced; one that runs out of memory (a MemoryError
    under its RLIMIT_AS), raises, or dies is replaced too. Every item gets a result, in
    order: one bad document never stops the others. `function` must be picklable.
    """
    results: list[R | Exceeded | None] = [None] * len(items)
    pending = deque(enumerate(items))
    context = multiprocessing.get_context("spawn")
    idle: list[_Worker] = []
    busy: dict[Connection, tuple[_Worker, int, float]] = {}

    def start() -> "_Worker":
        return _Worker(context, function, limits.memory_mb)

    try:
        idle = [start() for _ in range(max(1, min(workers, len(items))))]
        while pending or busy:
            while idle and pending:
                worker = idle.pop()
                index, item = pending.popleft()
                worker.conn.send(item)
                busy[worker.conn] = (worker, index, time.monotonic() + limits.seconds)
            next_deadline = min(deadline for _, _, deadline in busy.values())
            for conn in wait(list(busy), timeout=max(0.0, next_deadline - time.monotonic())):
                worker, index, _ = busy.pop(conn)  # type: ignore[arg-type]
                outcome = worker.receive()
                results[index] = outcome
                if isinstance(outcome, Exceeded):
                    worker.stop()
                    worker = start()
                idle.append(worker)
            now = time.monotonic()
            for conn, (worker, index, deadline) in list(busy.items()):
                if now >= deadline:
                    del busy[conn]
                    worker.stop()
                    results[index] = Exceeded(f"took longer than {limits.seconds:g} s")
                    idle.append(start())
    finally:
        for worker in idle + [w for w, _, _ in busy.values()]:
            worker.stop()
    return [r for r in results if r is not None]


class _Worker:
    def __init__(self, context: Any, function: Callable, memory_mb: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child, function, memory_mb), daemon=True
        )
        self.process.start()
        child.close()

    def receive(self) -> Any:
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError):
            return Exceeded("the parsing process died (out of memory?)")
        if status == "ok":
            return value
        return Exceeded(value)

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def _serve(conn: Connection, function: Callable, memory_mb: int) -> None:
    """A worker's loop: one item in, one (status, value) out, until the pipe closes."""
    _limit_memory(memory_mb)
    while True:
        try:
            item = conn.recv()
        except EOFError:
            return
        try:
            reply: tuple[str, Any] = ("ok", function(item))
        except MemoryError:
            reply = ("memory", f"needed more than {memory_mb} MB")
        except RecursionError:
            reply = ("error", "nested too deeply to parse")
        except Exception as exc:  # a parser bug must fail one document, not the batch
            reply = ("error", f"parser failed ({type(exc).__name__}: {str(exc)[:200]})")
        conn.send(reply)


def _limit_memory(memory_mb: int) -> None:
    """Cap this process's address space at what it uses now plus `memory_mb`."""
    import resource

    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + memory_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
