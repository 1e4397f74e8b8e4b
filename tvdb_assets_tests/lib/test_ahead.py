"""Work ahead: results are taken once, waited for while owed, and never block a taker
when the job that owed them fails."""

import logging
import threading

import pytest

from tvdb_assets.lib import ahead


def test_a_failed_job_hands_back_what_it_made_and_releases_the_rest(caplog) -> None:
    job = ahead.Job()
    assert job.claim("made", ["a", "b"]) == ["a", "b"]
    assert ahead.Job().claim("made", ["a"]) == []  # owed already: no one makes it twice
    failing = threading.Event()

    def work() -> None:
        job.publish("made", {"a": 1})
        failing.wait(10)
        raise RuntimeError("the pool went away")

    job.start(work)
    threading.Timer(0.2, failing.set).start()
    with caplog.at_level(logging.WARNING, logger="tvdb_assets.lib.ahead"):
        # "b" is waited for until the job gives up; then it is the caller's to compute.
        assert ahead.take("made", ["a", "b", "never claimed"]) == {"a": 1}
    assert ahead.take("made", ["a"]) == {}  # taken once
    assert "work ahead failed" in caplog.text and "the pool went away" in caplog.text


def test_work_for_batches_no_run_will_take_is_not_held() -> None:
    job = ahead.Job()
    job.claim("made", ["kept", "dropped"])
    done = threading.Event()

    def work() -> None:
        job.publish("made", {"kept": 1, "dropped": 2})
        done.set()

    job.start(work)
    assert done.wait(10)
    ahead.retain({"kept"})
    assert ahead.take("made", ["kept", "dropped"]) == {"kept": 1}


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    ahead.retain(set())
