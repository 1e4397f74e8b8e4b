"""`service_health`: each external service's circuit, shared by every process of the
deployment (`resilience.shared.SharedCircuitBreaker` reads and changes it under a row lock),
and read as it stands by `tvdb status` and the health check."""

from dataclasses import dataclass
from datetime import datetime

import psycopg

from tvdb_assets.lib.resilience.circuit import CircuitState

_COLUMNS = """consecutive_failures, extract(epoch FROM opened_at)::float8,
              extract(epoch FROM retry_at)::float8, extract(epoch FROM trial_started_at)::float8,
              last_call_seconds, last_error"""


def lock_circuit(conn: psycopg.Connection, service: str) -> CircuitState:
    """The service's circuit, its row locked until the caller's transaction ends."""
    query = f"SELECT {_COLUMNS} FROM service_health WHERE service = %s FOR UPDATE"
    row = conn.execute(query, (service,)).fetchone()
    if row is None:  # its first call anywhere
        conn.execute(
            "INSERT INTO service_health (service) VALUES (%s) ON CONFLICT DO NOTHING", (service,)
        )
        row = conn.execute(query, (service,)).fetchone()
    assert row is not None
    return CircuitState(*row)


def save_circuit(conn: psycopg.Connection, service: str, circuit: CircuitState) -> None:
    conn.execute(
        """UPDATE service_health
              SET consecutive_failures = %s, opened_at = to_timestamp(%s),
                  retry_at = to_timestamp(%s), trial_started_at = to_timestamp(%s),
                  last_call_seconds = %s, last_error = %s, updated_at = now()
            WHERE service = %s""",
        (circuit.failures, circuit.opened_at, circuit.retry_at, circuit.trial_started,
         circuit.last_seconds, circuit.last_error, service),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Health:
    service: str
    state: str  # the circuit's, now: closed, open, half_open
    consecutive_failures: int
    retry_in_seconds: float  # while open: until a trial call may go
    last_call_seconds: float
    last_error: str
    at: datetime  # when a call last changed it


def load(conn: psycopg.Connection) -> list[Health]:
    """Every service called so far, as its circuit stands now."""
    rows = conn.execute(
        """SELECT service,
                  CASE WHEN opened_at IS NULL THEN 'closed'
                       WHEN clock_timestamp() < retry_at THEN 'open'
                       ELSE 'half_open' END,
                  consecutive_failures,
                  CASE WHEN opened_at IS NULL THEN 0
                       ELSE greatest(0, extract(epoch FROM retry_at - clock_timestamp()))
                  END::float8,
                  last_call_seconds, last_error, updated_at
             FROM service_health ORDER BY service"""
    ).fetchall()
    return [Health(*row) for row in rows]
