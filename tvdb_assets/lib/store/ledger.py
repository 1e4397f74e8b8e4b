"""`cost_ledger`: every billable call, checked against the budget before it is made."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg

from tvdb_assets.lib.costs import Charge
from tvdb_assets.lib.errors import BudgetExceeded


@dataclass(frozen=True, slots=True)
class Budget:
    daily_usd: float
    hourly_requests: int


@dataclass(frozen=True, slots=True)
class Spend:
    today_usd: float
    last_hour_requests: int


@dataclass
class CallContext:
    """Who a billable call is made for: written on its ledger row and its log lines."""

    run_id: str | None = None
    partition_keys: Sequence[str] = ()
    correlation_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def child(self, partition_keys: Sequence[str] | None = None) -> "CallContext":
        """A context for one call within this one: same run, its own correlation id."""
        keys = self.partition_keys if partition_keys is None else partition_keys
        return CallContext(self.run_id, keys, f"{self.correlation_id}.{uuid.uuid4().hex[:6]}")


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
