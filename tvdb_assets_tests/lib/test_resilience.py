import random
import threading
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from tvdb_assets.lib import services
from tvdb_assets.lib.errors import BudgetExceeded, CircuitOpenError, ServiceError
from tvdb_assets.lib.resilience import (
    CircuitBreaker,
    RateLimiter,
    call_with_retries,
    classify_http,
    outcome_of,
)


class FakeTime:
    """A clock that only moves when something sleeps on it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def retryable(status: int = 503, retry_after: float | None = None) -> ServiceError:
    return ServiceError(
        "openai", f"HTTP {status}", retryable=True, status=status, retry_after=retry_after
    )


# Each guard is tested twice: as the in-process one, and as the one every process of a
# deployment shares through Postgres (same clock, so the same answers).


@pytest.fixture(params=["in_process", "shared"])
def limiter_of(request):
    """`limiter_of(rpm, tpm, clock=..., sleep=...)`: a fresh limiter of either kind."""
    if request.param == "in_process":
        yield RateLimiter
        return
    url = request.getfixturevalue("pipeline_url")
    made = []

    def make(rpm, tpm, **kwargs):
        made.append(services.SharedRateLimiter(f"svc{len(made)}", rpm, tpm, url=url, **kwargs))
        return made[-1]

    yield make
    for limiter in made:
        limiter.close()


@pytest.fixture(params=["in_process", "shared"])
def breaker_of(request):
    """`breaker_of(service, threshold, reset, clock=...)`: a fresh breaker of either kind."""
    if request.param == "in_process":
        yield CircuitBreaker
        return
    url = request.getfixturevalue("pipeline_url")
    made = []

    def make(*args, **kwargs):
        made.append(services.SharedCircuitBreaker(*args, url=url, **kwargs))
        return made[-1]

    yield make
    for breaker in made:
        breaker.close()


# --- rate limiter -----------------------------------------------------------------------


def window_violations(grants, rpm, tpm, window=60.0):
    """Windows (ending at each grant) that hold more than rpm requests or tpm tokens."""
    bad = []
    for t_end, _ in grants:
        inside = [tokens for t, tokens in grants if t_end - window < t <= t_end]
        if (rpm is not None and len(inside) > rpm) or (tpm is not None and sum(inside) > tpm):
            bad.append((t_end, len(inside), sum(inside)))
    return bad


def test_limiter_never_exceeds_limits_in_any_window_over_a_random_sequence(limiter_of):
    fake = FakeTime()
    rpm, tpm = 40, 10_000
    limiter = limiter_of(rpm, tpm, clock=fake.clock, sleep=fake.sleep)
    rng = random.Random(7)
    grants = []
    for _ in range(1500):
        if rng.random() < 0.2:  # idle gaps, sometimes longer than the window
            fake.sleep(rng.choice([0.01, 0.5, 5.0, 30.0, 75.0]))
        tokens = rng.choice([0, 1, 50, 400, 2_000, 9_999, 10_000])
        limiter.acquire(tokens)
        grants.append((fake.now, tokens))
    assert window_violations(grants, rpm, tpm) == []


def test_limiter_uses_at_least_95_percent_of_tpm_in_steady_state(limiter_of):
    fake = FakeTime()
    tpm = 100_000
    limiter = limiter_of(None, tpm, clock=fake.clock, sleep=fake.sleep)
    rng = random.Random(3)
    grants = []
    while fake.now < 1000.0 + 6 * 60:
        tokens = rng.randint(500, 4_000)  # up to 4% of the limit per request
        limiter.acquire(tokens)
        grants.append((fake.now, tokens))
    # Steady state: minutes 2..5 (the first minute's burst is excluded).
    start, end = 1000.0 + 60, 1000.0 + 5 * 60
    used = sum(tokens for t, tokens in grants if start <= t < end)
    assert used >= 0.95 * tpm * (end - start) / 60
    assert window_violations(grants, None, tpm) == []


def test_limiter_rpm_only_spaces_requests_by_the_window(limiter_of):
    fake = FakeTime()
    limiter = limiter_of(3, None, clock=fake.clock, sleep=fake.sleep)
    waits = [limiter.acquire() for _ in range(7)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(60.0, abs=0.01)  # the first request must leave
    assert waits[4:6] == [0.0, 0.0]
    assert waits[6] == pytest.approx(60.0, abs=0.01)
    assert limiter.usage() == (1, 0)  # requests 5 and 6 left together with request 4


def test_limiter_reports_wait_without_recording(limiter_of):
    fake = FakeTime()
    limiter = limiter_of(None, 100, clock=fake.clock, sleep=fake.sleep)
    assert limiter.acquire(80) == 0.0
    assert limiter.wait_time(30) == pytest.approx(60.0)
    assert limiter.wait_time(20) == 0.0
    assert limiter.usage() == (1, 80)


def test_oversize_request_raises_instead_of_waiting_forever(limiter_of):
    fake = FakeTime()
    limiter = limiter_of(10, 1_000, clock=fake.clock, sleep=fake.sleep)
    with pytest.raises(ValueError, match="1001 tokens.*1000 tokens per minute"):
        limiter.acquire(1_001)
    assert fake.sleeps == []
    assert limiter.acquire(1_000) == 0.0


@pytest.mark.parametrize("rpm,tpm", [(0, None), (None, -1)])
def test_limiter_rejects_non_positive_limits(rpm, tpm, limiter_of):
    with pytest.raises(ValueError):
        limiter_of(rpm, tpm)


def test_unlimited_limiter_never_sleeps(limiter_of):
    fake = FakeTime()
    limiter = limiter_of(None, None, clock=fake.clock, sleep=fake.sleep)
    assert all(limiter.acquire(10**9) == 0.0 for _ in range(100))
    assert fake.sleeps == []


def test_limiter_is_thread_safe(limiter_of):
    # Real threads share one fake clock; each sleep yields and moves time a little.
    lock = threading.Lock()
    now = [0.0]
    last_read = threading.local()  # a grant's time is the last clock read of its thread
    grants = []

    def clock():
        with lock:
            last_read.value = now[0]
            return now[0]

    def sleep(seconds):
        with lock:
            now[0] += seconds / 8
        time.sleep(0)

    limiter = limiter_of(20, 500, clock=clock, sleep=sleep)

    def worker(seed):
        rng = random.Random(seed)
        for _ in range(40):
            tokens = rng.randint(0, 100)
            limiter.acquire(tokens)
            with lock:
                grants.append((last_read.value, tokens))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(grants) == 320
    assert window_violations(sorted(grants), 20, 500) == []


# --- circuit breaker --------------------------------------------------------------------


def fail(breaker: CircuitBreaker, exc: BaseException | None = None) -> None:
    with pytest.raises(type(exc) if exc else ServiceError), breaker.guard():
        raise exc or retryable()


def test_circuit_opens_after_exactly_five_consecutive_failures(breaker_of):
    fake = FakeTime()
    breaker = breaker_of("openai", clock=fake.clock)
    for n in range(1, 5):
        fail(breaker)
        assert (breaker.state, breaker.consecutive_failures) == ("closed", n)
    fail(breaker)
    assert breaker.state == "open"
    assert breaker.opened_at == fake.now
    fake.sleep(15)
    with pytest.raises(CircuitOpenError) as refused:
        breaker.before_call()
    assert refused.value.retry_in == pytest.approx(45.0)
    assert refused.value.retryable is False
    assert breaker.snapshot() == {
        "service": "openai",
        "state": "open",
        "consecutive_failures": 5,
        "retry_in": 45.0,
        "last_call_seconds": 0.0,  # the test's clock stands still during a call
        "last_error": "openai: HTTP 503",
    }


def test_success_resets_the_failure_count(breaker_of):
    breaker = breaker_of("openai", clock=FakeTime().clock)
    for _ in range(4):
        fail(breaker)
    with breaker.guard():
        pass
    assert breaker.consecutive_failures == 0
    for _ in range(4):
        fail(breaker)
    assert breaker.state == "closed"


def test_half_open_lets_one_trial_through_and_its_failure_reopens(breaker_of):
    fake = FakeTime()
    breaker = breaker_of("llamaparse", failure_threshold=2, reset_seconds=60, clock=fake.clock)
    fail(breaker)
    fail(breaker)
    fake.sleep(60)
    assert breaker.state == "half_open"
    breaker.before_call()  # the trial
    with pytest.raises(CircuitOpenError) as concurrent:
        breaker.before_call()
    assert concurrent.value.retry_in == 0.0
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.opened_at == fake.now  # the timer restarted
    fake.sleep(59)
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    fake.sleep(1)
    with breaker.guard():  # the next trial succeeds
        pass
    assert (breaker.state, breaker.consecutive_failures, breaker.opened_at) == (
        "closed",
        0,
        None,
    )
    breaker.before_call()
    breaker.before_call()  # closed: no more single-trial limit


def test_unreported_trial_is_taken_as_lost_after_reset_seconds(breaker_of):
    fake = FakeTime()
    breaker = breaker_of("s3", failure_threshold=1, reset_seconds=10, clock=fake.clock)
    fail(breaker)
    fake.sleep(10)
    breaker.before_call()  # trial whose caller never reports
    fake.sleep(9)
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    fake.sleep(1)
    breaker.before_call()  # a new trial


@pytest.mark.parametrize(
    "exc,outcome",
    [
        (None, "success"),
        (retryable(429), "failure"),
        (ServiceError("openai", "timed out", retryable=True), "failure"),
        (ServiceError("openai", "bad key", retryable=False, status=401), "failure"),
        (ServiceError("openai", "forbidden", retryable=False, status=403), "failure"),
        (ServiceError("openai", "input too long", retryable=False, status=400), "success"),
        (ServiceError("openai", "no key configured", retryable=False), "neutral"),
        (CircuitOpenError("openai", 30), "neutral"),
        (BudgetExceeded("daily budget reached"), "neutral"),
        (KeyError("bug"), "neutral"),
        (KeyboardInterrupt(), "neutral"),
    ],
)
def test_outcome_of(exc, outcome):
    assert outcome_of(exc) == outcome


def test_guard_counts_only_service_failures_and_frees_the_trial_on_neutral_errors(breaker_of):
    fake = FakeTime()
    breaker = breaker_of("openai", failure_threshold=2, reset_seconds=5, clock=fake.clock)
    fail(breaker)
    fail(breaker, BudgetExceeded("over budget"))
    fail(breaker, ValueError("bug"))
    assert breaker.consecutive_failures == 1
    fail(breaker, ServiceError("openai", "bad input", retryable=False, status=400))
    assert breaker.consecutive_failures == 0  # the service answered
    fail(breaker)
    fail(breaker, ServiceError("openai", "bad key", retryable=False, status=401))
    assert breaker.state == "open"
    fake.sleep(5)
    fail(breaker, BudgetExceeded("over budget"))  # the trial ended saying nothing
    assert breaker.state == "half_open"
    breaker.before_call()  # so the next caller gets the trial slot


def test_failures_of_calls_started_before_opening_do_not_restart_the_timer(breaker_of):
    fake = FakeTime()
    breaker = breaker_of("openai", failure_threshold=1, reset_seconds=60, clock=fake.clock)
    breaker.before_call()
    breaker.before_call()
    breaker.record_failure()
    opened = breaker.opened_at
    fake.sleep(30)
    breaker.record_failure()  # the second call, in flight when the breaker opened
    assert breaker.opened_at == opened
    assert breaker.snapshot()["retry_in"] == 30.0


# --- retries ----------------------------------------------------------------------------


class Flaky:
    """Raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retry_honours_retry_after():
    fake = FakeTime()
    seen = []
    fn = Flaky(retryable(429, retry_after=7.5), retryable(503, retry_after=0.2), retryable(500))
    result = call_with_retries(
        fn,
        base_delay=1.0,
        sleep=fake.sleep,
        rng=random.Random(1),
        on_retry=lambda n, exc, wait: seen.append((n, getattr(exc, "status", None), wait)),
    )
    assert (result, fn.calls) == ("ok", 4)
    assert fake.sleeps[0] >= 7.5
    assert fake.sleeps[1] >= 0.2
    assert 0 <= fake.sleeps[2] <= 4.0  # full jitter: uniform(0, 1.0 * 2**2)
    assert [(n, status) for n, status, _ in seen] == [(1, 429), (2, 503), (3, 500)]
    assert [wait for _, _, wait in seen] == fake.sleeps


def test_retry_backoff_is_jittered_and_capped():
    fake = FakeTime()
    fn = Flaky(*[retryable() for _ in range(9)])
    call_with_retries(
        fn, attempts=10, base_delay=0.5, max_delay=3.0, sleep=fake.sleep, rng=random.Random(5)
    )
    caps = [min(3.0, 0.5 * 2**n) for n in range(9)]
    assert all(0 <= wait <= cap for wait, cap in zip(fake.sleeps, caps, strict=True))
    assert len(set(fake.sleeps)) == 9  # jittered, not a fixed schedule


def test_retry_gives_up_after_attempts_raising_the_last_service_error():
    fake = FakeTime()
    errors = [retryable(500), retryable(502), retryable(503)]
    fn = Flaky(*errors, retryable(504))
    with pytest.raises(ServiceError) as raised:
        call_with_retries(fn, attempts=3, sleep=fake.sleep)
    assert raised.value is errors[2]
    assert fn.calls == 3
    assert len(fake.sleeps) == 2


@pytest.mark.parametrize(
    "error",
    [
        ServiceError("openai", "bad input", retryable=False, status=400),
        BudgetExceeded("over budget"),
        CircuitOpenError("openai", 10),
        KeyError("bug"),
    ],
)
def test_non_retryable_errors_propagate_at_once(error):
    fake = FakeTime()
    fn = Flaky(error)
    with pytest.raises(type(error)) as raised:
        call_with_retries(fn, sleep=fake.sleep)
    assert raised.value is error
    assert (fn.calls, fake.sleeps) == (1, [])


def test_retry_after_longer_than_we_wait_gives_up_instead_of_retrying_early():
    fake = FakeTime()
    error = retryable(429, retry_after=600)
    fn = Flaky(error)
    with pytest.raises(ServiceError) as raised:
        call_with_retries(fn, max_retry_after=120, sleep=fake.sleep)
    assert raised.value is error
    assert (fn.calls, fake.sleeps) == (1, [])


def test_single_attempt_means_no_retry():
    fn = Flaky(retryable())
    with pytest.raises(ServiceError):
        call_with_retries(fn, attempts=1, sleep=FakeTime().sleep)
    assert fn.calls == 1
    with pytest.raises(ValueError):
        call_with_retries(fn, attempts=0)


# --- classify_http ----------------------------------------------------------------------

NOW = 1_700_000_000.0
HTTP_DATE_IN_30S = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)


@pytest.mark.parametrize(
    "status,headers,flags,retryable_,retry_after",
    [
        (429, {"Retry-After": "20"}, {}, True, 20.0),
        (429, {"retry-after-ms": "1500", "retry-after": "9"}, {}, True, 1.5),
        (429, {"retry-after-ms": "soon", "retry-after": "9"}, {}, True, 9.0),
        (503, {"Retry-After": HTTP_DATE_IN_30S}, {}, True, 30.0),
        (503, {"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, {}, True, 0.0),
        (503, {"Retry-After": "not a date"}, {}, True, None),
        (500, None, {}, True, None),
        (502, {}, {}, True, None),
        (599, {}, {}, True, None),
        (408, {}, {}, True, None),
        (409, {}, {}, True, None),
        (400, {}, {}, False, None),
        (401, {}, {}, False, None),
        (403, {}, {}, False, None),
        (404, {}, {}, False, None),
        (422, {"retry-after": "5"}, {}, False, 5.0),
        (400, {"x-should-retry": "true"}, {}, True, None),
        (503, {"X-Should-Retry": "false"}, {}, False, None),
        (None, None, {"timeout": True}, True, None),
        (None, None, {"connection": True}, True, None),
        (None, None, {}, False, None),
    ],
)
def test_classify_http(status, headers, flags, retryable_, retry_after):
    error = classify_http("openai", status, "boom", headers, now=lambda: NOW, **flags)
    assert isinstance(error, ServiceError)
    assert (error.service, error.status, error.retryable) == ("openai", status, retryable_)
    if retry_after is None:
        assert error.retry_after is None
    else:
        assert error.retry_after == pytest.approx(retry_after)
    assert "boom" in str(error)


def test_classify_http_message_says_what_failed():
    assert str(classify_http("s3", 503, "slow down", {})) == "s3: HTTP 503: slow down"
    assert "timed out" in str(classify_http("s3", None, "read", None, timeout=True))
    assert "connection failed" in str(classify_http("s3", None, "reset", None, connection=True))


def test_classified_errors_drive_the_retry_layer():
    fake = FakeTime()
    fn = Flaky(classify_http("openai", 429, "rate limited", {"retry-after-ms": "250"}))
    assert call_with_retries(fn, base_delay=0.01, sleep=fake.sleep) == "ok"
    assert fake.sleeps[0] >= 0.25


def test_hold_counts_a_request_from_its_completion(limiter_of) -> None:
    clock = FakeTime()
    limiter = limiter_of(None, 100, clock=clock.clock, sleep=clock.sleep)
    with limiter.hold(100):
        clock.sleep(5.0)  # the request takes 5 s; the service stamped it on arrival
    clock.sleep(56.0)  # 61 s after the grant, 56 s after completion
    assert limiter.wait_time(100) == pytest.approx(4.0)


# --- one guard per service across processes ---------------------------------------------


def test_a_circuit_opened_in_one_process_is_open_in_every_other(pipeline_url):
    fake = FakeTime()
    mine, theirs = (
        services.SharedCircuitBreaker("openai", 2, 60, url=pipeline_url, clock=fake.clock)
        for _ in range(2)
    )
    try:
        fail(mine)
        fail(theirs)  # two processes' failures add up to the threshold
        with pytest.raises(CircuitOpenError) as refused:
            mine.before_call()
        assert refused.value.retry_in == pytest.approx(60.0)
        fresh = services.SharedCircuitBreaker("openai", 2, 60, url=pipeline_url, clock=fake.clock)
        assert fresh.snapshot()["state"] == "open"  # a run started after the outage
        fresh.close()
        fake.sleep(60)
        theirs.before_call()  # the one trial, whoever asks first
        with pytest.raises(CircuitOpenError):
            mine.before_call()
        theirs.record_success()
        mine.before_call()
        assert mine.state == "closed"
    finally:
        mine.close()
        theirs.close()


def test_limiters_of_many_processes_keep_one_window(pipeline_url):
    # Four handles (four processes' limiters) on one clock, each granting in turn: the
    # grants of all of them together never exceed the limits.
    fake = FakeTime()
    limiters = [
        services.SharedRateLimiter(
            "openai", 10, 1_000, url=pipeline_url, clock=fake.clock, sleep=fake.sleep
        )
        for _ in range(4)
    ]
    rng = random.Random(11)
    grants = []
    try:
        for n in range(200):
            tokens = rng.choice([0, 50, 200, 400])
            limiters[n % 4].acquire(tokens)
            grants.append((fake.now, tokens))
    finally:
        for limiter in limiters:
            limiter.close()
    assert window_violations(grants, 10, 1_000) == []
    assert fake.now - 1000.0 >= 60 * (200 // 10 - 1)  # one limit's pace, not four
