"""`service_health`: each external service's last circuit state, for `tvdb status` and the
health check (the breakers themselves live in each process, `lib/services.py`)."""

import psycopg


def save(conn: psycopg.Connection, snapshot: dict[str, str | int | float]) -> None:
    conn.execute(
        """INSERT INTO service_health (service, state, consecutive_failures, retry_in_seconds)
           VALUES (%(service)s, %(state)s, %(consecutive_failures)s, %(retry_in)s)
           ON CONFLICT (service) DO UPDATE SET state = excluded.state,
               consecutive_failures = excluded.consecutive_failures,
               retry_in_seconds = excluded.retry_in_seconds, updated_at = now()""",
        snapshot,
    )


def states(conn: psycopg.Connection) -> list[tuple[str, str, int]]:
    """(service, circuit state, consecutive failures) of every service called so far."""
    rows = conn.execute(
        "SELECT service, state, consecutive_failures FROM service_health ORDER BY service"
    ).fetchall()
    return [(service, state, int(failures)) for service, state, failures in rows]
