"""`cost_ledger`: every billable call, checked against the budget before it is made."""

import psycopg

from tvdb_assets.lib.costs.budget import Budget, Spend
from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.costs.prices import Charge
from tvdb_assets.lib.errors import BudgetExceeded


def spend(conn: psycopg.Connection) -> Spend:
    row = conn.execute(
        """SELECT coalesce(sum(usd) FILTER (WHERE at >= date_trunc('day', now(), 'UTC')), 0),
                  count(*) FILTER (WHERE at >= now() - interval '1 hour')
             FROM cost_ledger
            WHERE status <> 'released' AND at >= now() - interval '1 day'"""
    ).fetchone()
    return Spend(float(row[0]), int(row[1])) if row else Spend(0.0, 0)


def reserve(conn: psycopg.Connection, budget: Budget, estimate: Charge, call: CallContext) -> int:
    """Record the estimate before the call, or refuse the call if it would cross a budget.

    Checking and reserving happen under one lock, so parallel runs cannot together spend
    past the budget. Needs an autocommit connection: the row must outlive the caller's
    transaction, since the money is spent even if the caller's work is rolled back.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('tvdb_assets.budget'))")
        used = spend(conn)
        if used.today_usd + estimate.usd > budget.daily_usd:
            raise BudgetExceeded(
                f"daily budget ${budget.daily_usd:.2f} would be crossed: "
                f"${used.today_usd:.4f} spent today, this {estimate.service} call needs "
                f"${estimate.usd:.4f}"
            )
        if used.last_hour_requests + 1 > budget.hourly_requests:
            raise BudgetExceeded(
                f"hourly cap of {budget.hourly_requests} requests reached "
                f"({used.last_hour_requests} in the last hour)"
            )
        row = conn.execute(
            """INSERT INTO cost_ledger (run_id, partition_keys, service, model, unit, units,
                                        usd, status, correlation_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, 'reserved', %s) RETURNING id""",
            (call.run_id, list(call.partition_keys), estimate.service, estimate.model,
             estimate.unit, estimate.units, estimate.usd, call.correlation_id),
        ).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0])


def settle(conn: psycopg.Connection, entry: int, actual: Charge) -> None:
    """The call succeeded: record what the service says it billed."""
    conn.execute(
        "UPDATE cost_ledger SET status = 'billed', units = %s, usd = %s WHERE id = %s",
        (actual.units, actual.usd, entry),
    )


def release(conn: psycopg.Connection, entry: int) -> None:
    """The call failed and cost nothing: its reservation no longer counts."""
    conn.execute("UPDATE cost_ledger SET status = 'released', usd = 0 WHERE id = %s", (entry,))


def billed_today(conn: psycopg.Connection) -> list[tuple[str, str, str, int, float]]:
    """(service, model, unit, units, USD) billed since midnight UTC, per service and model."""
    rows = conn.execute(
        """SELECT service, model, unit, sum(units), sum(usd) FROM cost_ledger
            WHERE status = 'billed' AND at >= date_trunc('day', now(), 'UTC')
            GROUP BY service, model, unit ORDER BY service, model"""
    ).fetchall()
    return [(service, model, unit, int(n), float(usd)) for service, model, unit, n, usd in rows]
