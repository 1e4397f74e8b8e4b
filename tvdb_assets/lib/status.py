"""`tvdb status`: what the pipeline holds, as tables a person reads."""

import pandas as pd

from tvdb_assets.lib import store
from tvdb_assets.lib.costs.budget import Budget
from tvdb_assets.lib.store import claims, cost_ledger, inbox_files, ingest_errors, schema
from tvdb_assets.lib.store import service_health as health

TABLES = (
    "inbox_files",
    "documents",
    "chunks",
    "embeddings",
    "embedding_cache",
    "parse_cache",
    "ingest_errors",
    "cost_ledger",
)


def table_counts() -> pd.DataFrame:
    with store.connect() as conn:
        counts = schema.row_counts(conn, TABLES)
    return pd.DataFrame(list(counts.items()), columns=["table", "rows"])


def open_errors() -> pd.DataFrame:
    with store.connect() as conn:
        errors = ingest_errors.open_errors(conn)
    return pd.DataFrame(
        [(e.at, e.path, e.stage, e.reason) for e in errors],
        columns=["at", "path", "stage", "reason"],
    )


def unfinished() -> pd.DataFrame:
    """Uploads whose content is not stored yet, and whether a live process is on them."""
    with store.connect() as conn:
        files = inbox_files.unfinished(conn)
        busy = claims.busy_elsewhere(conn, None)
    return pd.DataFrame(
        [(f.shown, "in progress" if f.partition_key in busy else "waiting") for f in files],
        columns=["path", "state"],
    )


def spend_summary(budget: Budget) -> pd.DataFrame:
    """Spend today and requests this hour against the budget, and spend by service/model."""
    with store.connect() as conn:
        used = cost_ledger.spend(conn)
        by_model = cost_ledger.billed_today(conn)
    rows = [
        ("today (UTC)", "spent_usd", f"{used.today_usd:.6f}"),
        ("today (UTC)", "budget_left_usd", f"{budget.daily_usd - used.today_usd:.6f}"),
        ("last hour", "requests", str(used.last_hour_requests)),
        ("last hour", "requests_left", str(budget.hourly_requests - used.last_hour_requests)),
    ]
    rows += [(f"{svc}/{model}", f"{unit} / usd", f"{units} / {float(usd):.6f}")
             for svc, model, unit, units, usd in by_model]  # fmt: skip
    return pd.DataFrame(rows, columns=["scope", "measure", "value"])


def service_health() -> pd.DataFrame:
    with store.connect() as conn:
        services = health.load(conn)
    rows = [
        (h.service, h.state, h.consecutive_failures, h.retry_in_seconds, h.at) for h in services
    ]
    return pd.DataFrame(rows, columns=["service", "circuit", "failures", "retry_in_s", "at"])


def render(budget: Budget) -> str:
    parts = [table_counts().to_string(index=False), spend_summary(budget).to_string(index=False)]
    health = service_health()
    parts.append(health.to_string(index=False) if len(health) else "no external calls yet")
    pending = unfinished()
    if pending.empty:
        parts.append("every upload is ingested")
    else:
        parts.append(
            f"not ingested yet ({len(pending)}; `tvdb ingest` or the sensor finishes them):\n"
            f"{pending.head(50).to_string(index=False)}"
        )
    errors = open_errors()
    if errors.empty:
        parts.append("no open ingest errors")
    else:
        parts.append(f"open ingest errors ({len(errors)}):\n{errors.to_string(index=False)}")
    return "\n\n".join(parts)
