"""The spend limits: a daily USD budget and an hourly request cap, from the deployment's
environment, never from a run's config."""

from dataclasses import dataclass

from tvdb_assets.lib import settings


@dataclass(frozen=True, slots=True)
class Budget:
    daily_usd: float
    hourly_requests: int


@dataclass(frozen=True, slots=True)
class Spend:
    today_usd: float
    last_hour_requests: int


def from_env() -> Budget:
    return Budget(settings.daily_budget_usd(), settings.hourly_request_cap())
