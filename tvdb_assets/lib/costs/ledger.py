"""The one door billable calls go through: budget check first, ledger row after."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from tvdb_assets.lib import database
from tvdb_assets.lib.costs.budget import Budget
from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.costs.prices import Charge
from tvdb_assets.lib.store import cost_ledger


@dataclass
class Bill:
    """Filled in by the caller with what the service billed.

    Set it before raising when the call may have been billed although it failed (a
    timeout: the service finished the work after the client gave up).
    """

    actual: Charge | None = None


class Ledger:
    """Reserves each call's estimate under the budget, then settles or releases it.

    Holds its own autocommit connection: ledger rows must survive a rolled-back asset
    transaction, because the money was spent all the same.
    """

    def __init__(self, budget: Budget, url: str | None = None) -> None:
        self.budget = budget
        self._url = url or database.database_url()
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._url, autocommit=True)
        return self._conn

    @contextmanager
    def charge(self, estimate: Charge, call: CallContext) -> Iterator[Bill]:
        """Raise BudgetExceeded before a call that would cross the budget; else record it."""
        with self._lock:
            entry = cost_ledger.reserve(self._connection(), self.budget, estimate, call)
        bill = Bill()
        try:
            yield bill
        except BaseException:
            with self._lock:
                if bill.actual is None:
                    cost_ledger.release(self._connection(), entry)
                else:
                    cost_ledger.settle(self._connection(), entry, bill.actual)
            raise
        with self._lock:
            cost_ledger.settle(self._connection(), entry, bill.actual or estimate)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
