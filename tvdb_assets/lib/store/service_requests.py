"""`service_requests`: the requests each service was granted within its rate-limit window,
by every process of the deployment (`resilience.shared.SharedRateLimiter`)."""

import psycopg

from tvdb_assets.lib.store.connection import lock_named


def window(conn: psycopg.Connection, service: str, since: float) -> list[tuple[float, int]]:
    """(time, tokens) of the requests granted after `since`, oldest first, with the
    service's limiter locked until the caller's transaction ends; older ones are dropped."""
    lock_named(conn, f"tvdb_assets.rate.{service}")
    conn.execute("DELETE FROM service_requests WHERE service = %s AND at <= %s", (service, since))
    rows = conn.execute(
        "SELECT at, tokens FROM service_requests WHERE service = %s ORDER BY at", (service,)
    ).fetchall()
    return [(float(at), int(tokens)) for at, tokens in rows]


def grant(conn: psycopg.Connection, service: str, at: float, tokens: int) -> int:
    row = conn.execute(
        "INSERT INTO service_requests (service, at, tokens) VALUES (%s, %s, %s) RETURNING id",
        (service, at, tokens),
    ).fetchone()
    assert row is not None
    return int(row[0])


def completed(conn: psycopg.Connection, grant_id: int, at: float) -> None:
    """Count the request from when it completed (only ever later than its grant)."""
    conn.execute("UPDATE service_requests SET at = greatest(at, %s) WHERE id = %s", (at, grant_id))
