"""Per-process state of each external service: one circuit breaker and rate limiter each.

Runs in the same process (the CLI's batches, in-process tests) share them, so an outage
seen by one batch keeps the circuit open for the next. Their last state is written to
`service_health` for `tvdb status` and the health check.
"""

import threading

import psycopg

from tvdb_assets.lib.resilience import CircuitBreaker, RateLimiter

_lock = threading.Lock()
_breakers: dict[str, CircuitBreaker] = {}
_limiters: dict[tuple[str, int | None, int | None], RateLimiter] = {}


def breaker(service: str, failure_threshold: int, reset_seconds: float) -> CircuitBreaker:
    with _lock:
        found = _breakers.get(service)
        if (
            found is None
            or found.failure_threshold != failure_threshold
            or found.reset_seconds != reset_seconds
        ):
            found = _breakers[service] = CircuitBreaker(service, failure_threshold, reset_seconds)
        return found


def limiter(service: str, rpm: int | None, tpm: int | None) -> RateLimiter:
    with _lock:
        return _limiters.setdefault((service, rpm, tpm), RateLimiter(rpm, tpm))


def save_health(conn: psycopg.Connection, snapshot: dict[str, str | int | float]) -> None:
    conn.execute(
        """INSERT INTO service_health (service, state, consecutive_failures, retry_in_seconds)
           VALUES (%(service)s, %(state)s, %(consecutive_failures)s, %(retry_in)s)
           ON CONFLICT (service) DO UPDATE SET state = excluded.state,
               consecutive_failures = excluded.consecutive_failures,
               retry_in_seconds = excluded.retry_in_seconds, updated_at = now()""",
        snapshot,
    )


def reset() -> None:
    """Forget all state (tests)."""
    with _lock:
        _breakers.clear()
        _limiters.clear()
