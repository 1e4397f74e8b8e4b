"""The worker pool: one set of processes for a whole ingest, and a limit per risky item."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tvdb_assets.lib import workers
from tvdb_assets.lib.workers import Exceeded, Limits

LIMITS = Limits(seconds=2, memory_mb=64)


def behave(item: str) -> object:
    """What a document can do to a parser; module-level, so workers can unpickle it."""
    if item == "slow":
        time.sleep(30)
    elif item == "hungry":
        return len(bytearray(512 * 1024 * 1024))
    elif item == "crash":
        os._exit(3)
    elif item == "raise":
        raise ValueError("no such table")
    elif item == "nap":
        time.sleep(1.2)
    return (item, os.getpid())


def test_each_bad_item_fails_alone_with_its_reason_and_the_rest_go_on() -> None:
    items = ["a", "slow", "b", "hungry", "c", "crash", "raise", "d"]
    results = workers.map_guarded(behave, items, LIMITS)
    assert [r[0] for r in results if isinstance(r, tuple)] == ["a", "b", "c", "d"]
    failed = {item: r for item, r in zip(items, results, strict=True) if isinstance(r, Exceeded)}
    assert failed["slow"] == Exceeded("took longer than 2 s", limit=True)
    assert failed["hungry"] == Exceeded("needed more than 64 MB", limit=True)
    assert failed["crash"] == Exceeded("needed more than 64 MB", True, "the worker stopped: exit 3")
    assert failed["raise"] == Exceeded("parser failed (ValueError: no such table)")


def test_an_item_waiting_behind_another_gets_its_whole_time() -> None:
    # Each worker is sent its next item before it is done with the one it works on; the
    # time limit of that next one counts from when the worker takes it up.
    naps = ["nap"] * (2 * workers.worker_count())
    results = workers.map_guarded(behave, naps, Limits(seconds=2, memory_mb=64))
    assert [r[0] for r in results] == naps  # type: ignore[index]


def started(item: str) -> tuple[str, float]:
    begun = time.time()
    time.sleep(0.2)
    return item, begun


def test_the_largest_items_go_first_and_results_keep_their_order() -> None:
    # A map must not end on its biggest document while the other workers idle.
    items = [f"small{n}" for n in range(6)] + ["big"]
    results = workers.map_all(started, items, sizes=[1] * 6 + [100])
    assert [item for item, _ in results] == items  # type: ignore[misc]
    first = sorted(results, key=lambda r: r[1])[: workers.worker_count()]  # type: ignore[index]
    assert "big" in [item for item, _ in first]  # type: ignore[misc]


def test_the_pool_outlives_a_batch_and_a_replaced_worker() -> None:
    first = workers.map_guarded(behave, [f"x{n}" for n in range(8)], LIMITS)
    workers.map_guarded(behave, ["slow"], Limits(seconds=0.5, memory_mb=64))
    second = workers.map_guarded(behave, [f"y{n}" for n in range(8)], LIMITS)
    pids = {pid for _, pid in first}  # type: ignore[misc]
    later = {pid for _, pid in second}  # type: ignore[misc]
    assert os.getpid() not in pids
    assert len(pids) <= workers.worker_count()
    assert len(later & pids) == len(pids) - 1  # all but the worker killed for its time


def test_a_memory_limit_lasts_for_its_item_only() -> None:
    assert workers.map_guarded(behave, ["hungry"], LIMITS) == [
        Exceeded("needed more than 64 MB", limit=True)
    ]
    # No limit on the next map: the same workers may take the memory now.
    assert (
        workers.map_in_order(behave, ["hungry"] * workers.MIN_ITEMS_FOR_POOL)
        == [512 * 1024 * 1024] * workers.MIN_ITEMS_FOR_POOL
    )


def test_a_worker_failing_without_limits_is_a_bug_and_says_so() -> None:
    items = ["a"] * workers.MIN_ITEMS_FOR_POOL + ["raise"]
    with pytest.raises(workers.WorkerFailed, match="no such table"):
        workers.map_in_order(behave, items)


SLOW_PRELOAD = """
import os, time
open(os.environ["LOADING"], "w").close()
while not os.path.exists(os.environ["LOADED"]):
    time.sleep(0.01)
"""

START_TWICE = """
import os, threading, time
from tvdb_assets.lib import workers

if __name__ == "__main__":
    workers.start(preload=["slow_preload"])
    while not os.path.exists(os.environ["LOADING"]):  # the fork server is importing now
        time.sleep(0.01)
    again = threading.Thread(target=workers.start, daemon=True)
    again.start()
    again.join(20)
    print("second start returned:", not again.is_alive())
    open(os.environ["LOADED"], "w").close()
    print("absolute:", workers.map_all(abs, [-2, -3]))
"""


def test_starting_again_does_not_wait_for_the_workers_to_load(tmp_path: Path) -> None:
    """`tvdb ingest` starts the pool before loading Dagster and the runner starts it again:
    the second start must return while the fork server is still importing, not hold the
    ingest until it is done (in a fresh process: this one's fork server runs already)."""
    (tmp_path / "slow_preload.py").write_text(SLOW_PRELOAD)
    (tmp_path / "start_twice.py").write_text(START_TWICE)
    path = os.pathsep.join([str(tmp_path), *sys.path])
    env = {**os.environ, "PYTHONPATH": path}
    env |= {"LOADING": str(tmp_path / "loading"), "LOADED": str(tmp_path / "loaded")}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "start_twice.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.splitlines() == [
        "second start returned: True",
        "absolute: [2, 3]",
    ], done.stderr


def test_the_fork_server_loads_no_database_code() -> None:
    """The work sent to workers takes and returns plain values, so their fork server skips
    psycopg and the service clients: the first parse of an ingest starts ~0.3 s sooner."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tvdb_assets.lib.worker_preload as w; "
            "print(sorted(m for m in ('psycopg', 'tvdb_assets.lib.store', "
            "'tvdb_assets.lib.stages', 'tvdb_assets.lib.clients') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.stdout.strip() == "[]", loaded.stderr
