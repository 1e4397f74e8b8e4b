"""What billable calls cost: the price table and estimates made before every call."""

from dataclasses import dataclass

# USD per unit. OpenAI bills embeddings per token; LlamaParse per page (credits at
# $1 per 1,000, 3 credits a page in its default mode).
PRICES: dict[tuple[str, str], tuple[str, float]] = {
    ("openai", "text-embedding-3-small"): ("tokens", 0.02 / 1_000_000),
    ("openai", "text-embedding-3-large"): ("tokens", 0.13 / 1_000_000),
    ("openai", "text-embedding-ada-002"): ("tokens", 0.10 / 1_000_000),
    ("llamaparse", "default"): ("pages", 0.003),
}


@dataclass(frozen=True, slots=True)
class Charge:
    service: str
    model: str
    unit: str
    units: int
    usd: float


def price(service: str, model: str, units: int) -> Charge:
    """The cost of `units` of a service; an unknown model is refused rather than guessed."""
    try:
        unit, per_unit = PRICES[(service, model)]
    except KeyError:
        known = ", ".join(m for s, m in PRICES if s == service)
        raise ValueError(f"no price for {service} model {model!r} (known: {known})") from None
    return Charge(service, model, unit, units, units * per_unit)
