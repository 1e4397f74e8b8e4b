"""`service_health`: each external service's last circuit state, for `tvdb status` and the
health check (the breakers themselves live in each process, `lib/services.py`)."""

from dataclasses import dataclass
from datetime import datetime

import psycopg


def save(conn: psycopg.Connection, snapshot: dict[str, str | int | float]) -> None:
    conn.execute(
        """INSERT INTO service_health (service, state, consecutive_failures, retry_in_seconds,
                                      last_call_seconds, last_error)
           VALUES (%(service)s, %(state)s, %(consecutive_failures)s, %(retry_in)s,
                   %(last_call_seconds)s, %(last_error)s)
           ON CONFLICT (service) DO UPDATE SET state = excluded.state,
               consecutive_failures = excluded.consecutive_failures,
               retry_in_seconds = excluded.retry_in_seconds,
               last_call_seconds = excluded.last_call_seconds,
               last_error = excluded.last_error, updated_at = now()""",
        snapshot,
    )


@dataclass(frozen=True, slots=True)
class Health:
    service: str
    state: str  # the circuit's: closed, open, half_open
    consecutive_failures: int
    retry_in_seconds: float | None
    last_call_seconds: float
    last_error: str
    at: datetime


def load(conn: psycopg.Connection) -> list[Health]:
    """The last saved state of every service called so far."""
    rows = conn.execute(
        "SELECT service, state, consecutive_failures, retry_in_seconds, last_call_seconds, "
        "last_error, updated_at FROM service_health ORDER BY service"
    ).fetchall()
    return [Health(*row) for row in rows]
