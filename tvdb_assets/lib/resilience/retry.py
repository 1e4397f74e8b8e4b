"""The one retry layer of the real clients, and the HTTP-failure classifier feeding it.

There is exactly one layer on purpose: the openai SDK retries 408/409/429/5xx and timeouts
itself (`max_retries=2` by default), so retrying on top of it multiplies attempts. Real
clients create the SDK with `max_retries=0`, turn its errors into `ServiceError` with
`classify_http`, and retry here, where waits are logged, testable and bounded.

Waits are exponential backoff with full jitter (so parallel workers do not retry in lock
step), never shorter than the service's Retry-After. If the service asks for a longer wait
than `max_retry_after`, we stop instead: retrying earlier than asked only earns another 429,
and a pipeline is better off falling back or failing now than sleeping for minutes.
"""

import math
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_any
from tenacity.stop import stop_base

from tvdb_assets.lib.errors import ServiceError

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 429})


def is_retryable(exc: BaseException) -> bool:
    """True for a `ServiceError` the service said may succeed if tried again."""
    return isinstance(exc, ServiceError) and exc.retryable


def call_with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    max_retry_after: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Call `fn`, retrying retryable `ServiceError`s up to `attempts` calls in total.

    Attempt n (1-based) that fails waits `uniform(0, min(max_delay, base_delay * 2**(n-1)))`,
    or at least the error's `retry_after`. Gives up, re-raising the last error itself (not a
    tenacity `RetryError`), when attempts are spent or the requested `retry_after` exceeds
    `max_retry_after`. Anything else `fn` raises propagates at once. `on_retry(attempt, error,
    wait)` is called before each wait, e.g. to log it.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    uniform = rng.uniform if rng is not None else random.uniform

    def wait(state: RetryCallState) -> float:
        exc = _last_error(state)
        backoff = uniform(0.0, min(max_delay, base_delay * 2 ** (state.attempt_number - 1)))
        retry_after = _retry_after(exc)
        if retry_after is not None and retry_after > 0:
            return max(float(retry_after), backoff)
        return backoff

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.attempt_number, _last_error(state), state.upcoming_sleep)

    retrying = Retrying(
        sleep=sleep,
        stop=stop_any(stop_after_attempt(attempts), _RetryAfterAbove(max_retry_after)),
        wait=wait,
        retry=retry_if_exception(is_retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)


class _RetryAfterAbove(stop_base):
    """Stop when the service asks for a longer wait than we are willing to sleep."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __call__(self, retry_state: RetryCallState) -> bool:
        retry_after = _retry_after(_last_error(retry_state))
        return retry_after is not None and retry_after > self.limit


def _retry_after(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, ServiceError) else None


def _last_error(state: RetryCallState) -> BaseException:
    assert state.outcome is not None
    exc = state.outcome.exception()
    assert exc is not None
    return exc


def classify_http(
    service: str,
    status: int | None,
    message: str,
    headers: Mapping[str, str] | None,
    timeout: bool = False,
    connection: bool = False,
    *,
    maybe_billed: bool = False,
    now: Callable[[], float] = time.time,
) -> ServiceError:
    """Turn a failed HTTP call into a `ServiceError` saying whether to retry and when.

    Retryable: timeouts, lost connections, 408, 409, 429, 5xx, and whatever the service
    marks `x-should-retry: true`. Not retryable: other 4xx (validation, auth, not found),
    `x-should-retry: false`, and a failure with no status that is neither a timeout nor a
    connection error (nothing says it is transient). `retry_after` comes from
    `retry-after-ms` or `retry-after` (seconds or an HTTP date; `now` is the wall clock the
    date is compared with).
    """
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    if timeout or connection:
        retryable = True
    elif status is None:
        retryable = False
    else:
        retryable = status in RETRYABLE_STATUSES or 500 <= status <= 599
    should_retry = lower.get("x-should-retry", "").strip().lower()
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"
    if timeout:
        what = "timed out"
    elif connection:
        what = "connection failed"
    else:
        what = f"HTTP {status}" if status is not None else "failed"
    return ServiceError(
        service,
        f"{what}: {message}" if message else what,
        retryable=retryable,
        status=status,
        retry_after=parse_retry_after(headers or {}, now=now),
        maybe_billed=maybe_billed,
    )


def parse_retry_after(
    headers: Mapping[str, str], *, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds the service asked us to wait; None if it did not (or said it unreadably)."""
    headers = {k.lower(): v for k, v in headers.items()}
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        seconds = _as_seconds(raw_ms)
        if seconds is not None:
            return seconds / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _as_seconds(raw)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" in an HTTP date means UTC
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


def _as_seconds(raw: str) -> float | None:
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return max(0.0, value)
