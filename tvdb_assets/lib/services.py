"""What every client of an external service shares: one circuit breaker and one rate
limiter per service for the whole deployment, and the `ServiceClient` base that the real
clients (OpenAI, LlamaParse) build on.

Under `dagster dev` each run is a process of its own, and several run at once; a breaker
or a limiter in each would let four runs send four times the rate, and start a run after
an outage with a closed circuit. So their state lives in Postgres, in `service_health`
and `service_requests`, behind a row or advisory lock: every process of the deployment
sees one circuit and one window per service. Times are epoch seconds from each process's
clock, so the machines of a deployment keep their clocks in sync (NTP).
"""

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg

from tvdb_assets.lib import database
from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.costs.ledger import Ledger
from tvdb_assets.lib.costs.prices import Charge
from tvdb_assets.lib.embedding import Embedder
from tvdb_assets.lib.errors import ServiceError
from tvdb_assets.lib.parsing import Parser
from tvdb_assets.lib.resilience import CircuitBreaker, RateLimiter
from tvdb_assets.lib.resilience.circuit import CircuitState
from tvdb_assets.lib.resilience.ratelimit import WINDOW_SECONDS
from tvdb_assets.lib.store import service_health, service_requests
from tvdb_assets.lib.store.connection import open_connection

T = TypeVar("T")


class _Connection:
    """An autocommit connection of its own, opened on first use, reopened after a loss.
    A guard's transactions must not ride on the caller's (a rolled-back batch still made
    its calls)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = open_connection(self.url, autocommit=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class SharedCircuitBreaker(CircuitBreaker):
    """A service's breaker for every process using this database: each step reads and
    changes the service's row of `service_health`, locked meanwhile."""

    def __init__(
        self,
        service: str,
        failure_threshold: int = 5,
        reset_seconds: float = 60.0,
        *,
        url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(service, failure_threshold, reset_seconds, clock=clock)
        self._db = _Connection(url)

    @contextlib.contextmanager
    def _held(self) -> Iterator[CircuitState]:
        with self._lock:
            conn = self._db.get()
            with conn.transaction():
                circuit = service_health.lock_circuit(conn, self.service)
                before = dataclasses.replace(circuit)
                yield circuit
                if circuit != before:
                    service_health.save_circuit(conn, self.service, circuit)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SharedRateLimiter(RateLimiter):
    """A service's RPM/TPM limiter for every process using this database: a request is
    granted against every grant in `service_requests` within the window, under the
    service's advisory lock."""

    def __init__(
        self,
        service: str,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        *,
        url: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        window: float = WINDOW_SECONDS,
    ) -> None:
        super().__init__(
            requests_per_minute, tokens_per_minute, clock=clock, sleep=sleep, window=window
        )
        self.service = service
        self._db = _Connection(url)

    def _try_grant(self, tokens: int) -> tuple[float, object | None]:
        with self._lock:
            conn = self._db.get()
            with conn.transaction():
                now = self._clock()
                granted = service_requests.window(conn, self.service, now - self.window)
                wait = self._wait(granted, now, tokens)
                if wait > 0:
                    return wait, None
                return 0.0, service_requests.grant(conn, self.service, now, tokens)

    def _completed(self, grant: object) -> None:
        assert isinstance(grant, int)
        with self._lock:
            service_requests.completed(self._db.get(), grant, self._clock())

    def wait_time(self, tokens: int = 0) -> float:
        self._check_size(tokens)
        with self._lock:
            conn = self._db.get()
            with conn.transaction():
                now = self._clock()
                granted = service_requests.window(conn, self.service, now - self.window)
                return max(0.0, self._wait(granted, now, tokens))

    def usage(self) -> tuple[int, int]:
        with self._lock:
            conn = self._db.get()
            with conn.transaction():
                now = self._clock()
                granted = service_requests.window(conn, self.service, now - self.window)
        return len(granted), sum(tokens for _, tokens in granted)

    def close(self) -> None:
        with self._lock:
            self._db.close()


_lock = threading.Lock()
_breakers: dict[tuple[str, str], SharedCircuitBreaker] = {}
_limiters: dict[tuple[str, str, int | None, int | None], SharedRateLimiter] = {}


def breaker(service: str, failure_threshold: int, reset_seconds: float) -> CircuitBreaker:
    """The service's breaker, shared with every process using this pipeline database."""
    url = database.database_url()
    with _lock:
        found = _breakers.get((service, url))
        if (
            found is None
            or found.failure_threshold != failure_threshold
            or found.reset_seconds != reset_seconds
        ):
            if found is not None:
                found.close()
            found = SharedCircuitBreaker(service, failure_threshold, reset_seconds, url=url)
            _breakers[(service, url)] = found
        return found


def limiter(service: str, rpm: int | None, tpm: int | None) -> RateLimiter:
    """The service's rate limiter, shared with every process using this pipeline database."""
    url = database.database_url()
    with _lock:
        key = (service, url, rpm, tpm)
        if key not in _limiters:
            _limiters[key] = SharedRateLimiter(service, rpm, tpm, url=url)
        return _limiters[key]


def reset() -> None:
    """Close and forget this process's handles on the shared guards (tests); their state
    stays in the database."""
    with _lock:
        for breaker_ in _breakers.values():
            breaker_.close()
        for limiter_ in _limiters.values():
            limiter_.close()
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


def circuit_state(client: Parser | Embedder) -> dict[str, str | int | float]:
    """The circuit of the service a client calls, as it stands (for batch metadata); empty
    for a client that calls none."""
    breaker = client.circuit()
    return breaker.snapshot() if breaker is not None else {}
