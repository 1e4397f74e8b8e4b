"""A circuit breaker: stop calling a service that keeps failing, probe it now and then.

When a service is down, every call still costs its full retry schedule before failing.
After `failure_threshold` consecutive failed calls (each one a logical call whose retries
were all spent) the breaker opens and refuses calls at once with `CircuitOpenError`, which
`hybrid` mode turns into a flagged fallback. After `reset_seconds` it is half-open: exactly
one trial call goes through (concurrent callers are still refused); its success closes the
breaker, its failure re-opens it for another `reset_seconds`.

What counts (see `outcome_of`):

- failure: a retryable `ServiceError` (429, 5xx, timeouts, lost connections: the service is
  unavailable) and an auth error (401/403: every later call would fail the same way);
- success: a normal return, and a non-retryable `ServiceError` with another HTTP status
  (e.g. a 400 for one bad input) - the service answered, it is up, the input was wrong;
- neither: anything else (`BudgetExceeded`, `CircuitOpenError`, programming errors,
  interrupts) says nothing about the service; it only frees the half-open trial slot.
"""

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal

from tvdb_assets.lib.errors import CircuitOpenError, ServiceError

State = Literal["closed", "open", "half_open"]
Outcome = Literal["success", "failure", "neutral"]

AUTH_STATUSES = frozenset({401, 403})


def outcome_of(exc: BaseException | None) -> Outcome:
    """How a call that ended with `exc` (None: it returned) counts for the breaker."""
    if exc is None:
        return "success"
    if isinstance(exc, CircuitOpenError) or not isinstance(exc, ServiceError):
        return "neutral"
    if exc.retryable or exc.status in AUTH_STATUSES:
        return "failure"
    if exc.status is not None:
        return "success"
    return "neutral"


class CircuitBreaker:
    """Thread-safe circuit breaker for one service; the caller reports each call's outcome.

    Use `with breaker.guard(): ...` around a whole logical call (retries included), or call
    `before_call()` and then exactly one of `record_success()`, `record_failure()`,
    `record_neutral()`.
    """

    def __init__(
        self,
        service: str,
        failure_threshold: int = 5,
        reset_seconds: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_seconds <= 0:
            raise ValueError(f"reset_seconds must be positive, got {reset_seconds}")
        self.service = service
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None  # None: closed
        # When the half-open trial call was let through; None: no trial in flight.
        self._trial_started: float | None = None
        # The last guarded call's duration, and why the last failed one failed (until a
        # call succeeds): what a health check shows.
        self._last_seconds: float | None = None
        self._last_error = ""

    @property
    def state(self) -> State:
        with self._lock:
            return self._state(self._clock())

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures

    @property
    def opened_at(self) -> float | None:
        """`clock()` time the breaker last opened; None while closed."""
        with self._lock:
            return self._opened_at

    def before_call(self) -> None:
        """Let the call through, or raise `CircuitOpenError` with the seconds until a trial.

        While the half-open trial is in flight others are refused with `retry_in=0`: when
        they may go depends on the trial. A trial never reported within `reset_seconds` is
        taken as lost, so a caller that forgets to report cannot wedge the breaker.
        """
        with self._lock:
            now = self._clock()
            state = self._state(now)
            if state == "closed":
                return
            if state == "open":
                raise CircuitOpenError(self.service, self._retry_in(now))
            trial = self._trial_started
            if trial is not None and now - trial < self.reset_seconds:
                raise CircuitOpenError(self.service, 0.0)
            self._trial_started = now

    def record_success(self) -> None:
        """The service answered: close the breaker and forget past failures."""
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_started = None

    def record_failure(self) -> None:
        """A call failed after all its retries; open the breaker at the threshold."""
        with self._lock:
            now = self._clock()
            self._failures += 1
            state = self._state(now)
            if state == "half_open":
                # The trial (or a straggler reported after the timer ran out) failed.
                self._opened_at = now
                self._trial_started = None
            elif state == "closed" and self._failures >= self.failure_threshold:
                self._opened_at = now
            # "open": a call started before the breaker opened; the timer keeps running.

    def record_neutral(self) -> None:
        """The call ended without telling anything about the service; free the trial slot."""
        with self._lock:
            self._trial_started = None

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Check the breaker, run the block, record its outcome by `outcome_of`, re-raise."""
        self.before_call()
        started = self._clock()
        try:
            yield
        except BaseException as exc:
            outcome = outcome_of(exc)
            with self._lock:
                self._last_seconds = self._clock() - started
                if outcome == "failure":
                    self._last_error = str(exc)  # a ServiceError's text, redacted already
            self._record(outcome)
            raise
        with self._lock:
            self._last_seconds, self._last_error = self._clock() - started, ""
        self.record_success()

    def snapshot(self) -> dict[str, str | int | float]:
        """JSON-friendly state for asset metadata and health checks."""
        with self._lock:
            now = self._clock()
            state = self._state(now)
            return {
                "service": self.service,
                "state": state,
                "consecutive_failures": self._failures,
                "retry_in": round(self._retry_in(now), 3) if state == "open" else 0.0,
                "last_call_seconds": round(self._last_seconds, 3) if self._last_seconds else 0.0,
                "last_error": self._last_error,
            }

    def _record(self, outcome: Outcome) -> None:
        if outcome == "success":
            self.record_success()
        elif outcome == "failure":
            self.record_failure()
        else:
            self.record_neutral()

    def _state(self, now: float) -> State:
        if self._opened_at is None:
            return "closed"
        if now - self._opened_at < self.reset_seconds:
            return "open"
        return "half_open"

    def _retry_in(self, now: float) -> float:
        assert self._opened_at is not None
        return max(0.0, self._opened_at + self.reset_seconds - now)
