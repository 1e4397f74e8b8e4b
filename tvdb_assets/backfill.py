"""`tvdb backfill`: what it would run again and what that would cost, shown before any
paid work starts (the run itself goes through `runner.rerun`, as `tvdb ingest` runs)."""

from dataclasses import dataclass, field
from functools import partial

import pandas as pd

from tvdb_assets.lib import clients, reruns, store
from tvdb_assets.lib.costs import budget, estimate
from tvdb_assets.lib.settings import Mode
from tvdb_assets.lib.store.inbox_files import InboxFile

# Documents listed by name before the rest are only counted.
SHOWN = 20

WHY = {
    "failed": "failed for a passing cause (a service, the budget)",
    "fallbacks": "hold hybrid mode's stand-in parses or vectors",
    "stale": "were built with other chunker settings or another model, or half rebuilt",
    "all": "are in the inbox",
}


@dataclass
class Plan:
    reason: reruns.Reason
    files: list[InboxFile]
    paid: bool  # a mode calls a service: the run may cost money
    costs: pd.DataFrame = field(default_factory=pd.DataFrame)
    totals: dict[str, float | int | str] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.files:
            return f"nothing to run again: no document {WHY[self.reason]}"
        lines = [f"{len(self.files)} document(s) {WHY[self.reason]}, to run again:"]
        lines += [f"  {f.shown}" for f in self.files[:SHOWN]]
        if len(self.files) > SHOWN:
            lines.append(f"  ... and {len(self.files) - SHOWN} more")
        if self.paid:
            lines.append("estimated cost (cached parses and text are free):")
            lines += [f"  {name}: {value}" for name, value in self.totals.items()]
        return "\n".join(lines)


def plan(reason: reruns.Reason, parser_mode: Mode, embedder_mode: Mode) -> Plan:
    paid = parser_mode != "mock" or embedder_mode != "mock"
    built = reruns.BuildSettings.configured(embedder_mode)
    with store.connect() as conn:
        files = reruns.select(conn, reason, built)
        result = Plan(reason, files, paid)
        if paid and files:
            uploads = clients.upload_store()  # the inbox, or the bucket
            cost_plan = estimate.Plan.for_modes(parser_mode, embedder_mode)
            sources = [(f.shown, partial(uploads.read, f.path)) for f in files]
            result.costs, result.totals = estimate.estimate(
                conn, sources, cost_plan, budget.from_env(), again=True
            )
    return result
