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
from dataclasses import dataclass
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


@dataclass
class CircuitState:
    """What a breaker knows; times are its clock's."""

    failures: int = 0  # consecutive failed calls
    opened_at: float | None = None  # None: closed
    retry_at: float | None = None  # when the open circuit lets a trial through
    # When the half-open trial call was let through; None: no trial in flight.
    trial_started: float | None = None
    # The last guarded call's duration, and why the last failed one failed (until a call
    # succeeds): what a health check shows.
    last_seconds: float = 0.0
    last_error: str = ""

    def state(self, now: float) -> State:
        if self.opened_at is None or self.retry_at is None:
            return "closed"
        return "open" if now < self.retry_at else "half_open"

    def retry_in(self, now: float) -> float:
        return max(0.0, self.retry_at - now) if self.retry_at is not None else 0.0


class CircuitBreaker:
    """Thread-safe circuit breaker for one service; the caller reports each call's outcome.

    Use `with breaker.guard(): ...` around a whole logical call (retries included), or call
    `before_call()` and then exactly one of `record_success()`, `record_failure()`,
    `record_neutral()`. Its state lives in this process; `SharedCircuitBreaker` keeps the
    same state in Postgres, for every process of a deployment.
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
        self._circuit = CircuitState()

    @contextlib.contextmanager
    def _held(self) -> Iterator[CircuitState]:
        """The state, for reading and changing, and no one else's meanwhile."""
        with self._lock:
            yield self._circuit

    @property
    def state(self) -> State:
        with self._held() as circuit:
            return circuit.state(self._clock())

    @property
    def consecutive_failures(self) -> int:
        with self._held() as circuit:
            return circuit.failures

    @property
    def opened_at(self) -> float | None:
        """`clock()` time the breaker last opened; None while closed."""
        with self._held() as circuit:
            return circuit.opened_at

    def before_call(self) -> None:
        """Let the call through, or raise `CircuitOpenError` with the seconds until a trial.

        While the half-open trial is in flight others are refused with `retry_in=0`: when
        they may go depends on the trial. A trial never reported within `reset_seconds` is
        taken as lost, so a caller that forgets to report cannot wedge the breaker.
        """
        with self._held() as circuit:
            now = self._clock()
            state = circuit.state(now)
            if state == "closed":
                return
            if state == "open":
                raise CircuitOpenError(self.service, circuit.retry_in(now))
            trial = circuit.trial_started
            if trial is not None and now - trial < self.reset_seconds:
                raise CircuitOpenError(self.service, 0.0)
            circuit.trial_started = now

    def record_success(self, seconds: float | None = None) -> None:
        """The service answered: close the breaker and forget past failures."""
        with self._held() as circuit:
            circuit.failures = 0
            circuit.opened_at = circuit.retry_at = circuit.trial_started = None
            if seconds is not None:
                circuit.last_seconds, circuit.last_error = seconds, ""

    def record_failure(self, seconds: float | None = None, error: str | None = None) -> None:
        """A call failed after all its retries; open the breaker at the threshold."""
        with self._held() as circuit:
            now = self._clock()
            circuit.failures += 1
            state = circuit.state(now)
            if state == "half_open":
                # The trial (or a straggler reported after the timer ran out) failed.
                self._open(circuit, now)
            elif state == "closed" and circuit.failures >= self.failure_threshold:
                self._open(circuit, now)
            # "open": a call started before the breaker opened; the timer keeps running.
            if seconds is not None:
                circuit.last_seconds = seconds
            if error is not None:
                circuit.last_error = error

    def record_neutral(self, seconds: float | None = None) -> None:
        """The call ended without telling anything about the service; free the trial slot."""
        with self._held() as circuit:
            circuit.trial_started = None
            if seconds is not None:
                circuit.last_seconds = seconds

    def _open(self, circuit: CircuitState, now: float) -> None:
        circuit.opened_at, circuit.retry_at = now, now + self.reset_seconds
        circuit.trial_started = None

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Check the breaker, run the block, record its outcome by `outcome_of`, re-raise."""
        self.before_call()
        started = time.monotonic()
        try:
            yield
        except BaseException as exc:
            seconds = time.monotonic() - started
            outcome = outcome_of(exc)
            if outcome == "failure":
                # A ServiceError's text, redacted already.
                self.record_failure(seconds, str(exc))
            elif outcome == "success":
                self.record_success(seconds)
            else:
                self.record_neutral(seconds)
            raise
        self.record_success(time.monotonic() - started)

    def snapshot(self) -> dict[str, str | int | float]:
        """JSON-friendly state for asset metadata and health checks."""
        with self._held() as circuit:
            now = self._clock()
            state = circuit.state(now)
            return {
                "service": self.service,
                "state": state,
                "consecutive_failures": circuit.failures,
                "retry_in": round(circuit.retry_in(now), 3) if state == "open" else 0.0,
                "last_call_seconds": round(circuit.last_seconds, 3),
                "last_error": circuit.last_error,
            }
