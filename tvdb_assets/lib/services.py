"""What every client of an external service shares: per-process circuit breakers and rate
limiters, and the `ServiceClient` base that the real clients (OpenAI, LlamaParse) build on.

Runs in the same process (the CLI's batches, in-process tests) share one breaker and one
limiter per service, so an outage seen by one batch keeps the circuit open for the next.
Their last state is saved in `service_health` (`store.service_health`).
"""

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.costs.ledger import Ledger
from tvdb_assets.lib.costs.prices import Charge
from tvdb_assets.lib.embedding import Embedder
from tvdb_assets.lib.errors import ServiceError
from tvdb_assets.lib.parsing import Parser
from tvdb_assets.lib.resilience import CircuitBreaker, RateLimiter
from tvdb_assets.lib.store import service_health

T = TypeVar("T")

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


def reset() -> None:
    """Forget all state (tests)."""
    with _lock:
        _breakers.clear()
        _limiters.clear()


class ServiceClient:
    """A client of a paid service: the breaker it calls through, the ledger it pays through
    (None: unmetered), who its calls are made for, and how many attempts one call gets.

    Parsers and embedders that call a service inherit this beside their own interface.
    """

    def __init__(
        self,
        *,
        breaker: CircuitBreaker,
        ledger: Ledger | None,
        call: CallContext | None = None,
        attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.breaker = breaker
        self.ledger = ledger
        self.call = call or CallContext()
        self.attempts = attempts
        self._sleep = sleep

    def circuit(self) -> CircuitBreaker:
        return self.breaker

    def _paid(
        self,
        estimate: Charge,
        call: CallContext,
        request: Callable[[], T],
        billed: Callable[[T], Charge],
    ) -> T:
        """One request within the budget and on the ledger: its estimate is reserved
        first, then settled at what the service billed (`billed` reads it from the
        answer), or released when the request failed, unless the error says the work
        may have been billed all the same."""
        if self.ledger is None:
            return request()
        with self.ledger.charge(estimate, call) as bill:
            try:
                answer = request()
            except ServiceError as exc:
                if exc.maybe_billed:
                    bill.actual = estimate
                raise
            bill.actual = billed(answer)
            return answer

    def close(self) -> None:
        """Close the ledger's connection (it reopens if the client is used again)."""
        if self.ledger is not None:
            self.ledger.close()


def save_circuit(
    conn: psycopg.Connection, client: Parser | Embedder
) -> dict[str, str | int | float]:
    """The circuit state of the service a client calls, saved for `tvdb status` and the
    health check, and returned; empty for a client that calls none."""
    breaker = client.circuit()
    if breaker is None:
        return {}
    snapshot = breaker.snapshot()
    service_health.save(conn, snapshot)
    conn.commit()
    return snapshot
