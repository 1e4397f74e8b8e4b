"""A process pool for CPU-bound stages (PDF/HTML parsing, tokenizing), used only when it pays."""

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

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
