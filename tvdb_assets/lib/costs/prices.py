"""What billable calls cost: the price table and estimates made before every call."""

from dataclasses import dataclass

# LlamaParse bills credits, a number of them per page by parse tier, at $1.25 per 1,000
# credits (pay-as-you-go). Its ledger rows are pages under the tier, as the service counts
# them, and the USD of the credits it says it billed.
USD_PER_LLAMAPARSE_CREDIT = 1.25 / 1000
LLAMAPARSE_CREDITS_PER_PAGE = {"fast": 1, "cost_effective": 3, "agentic": 10, "agentic_plus": 45}

# USD per unit. OpenAI bills embeddings per token; LlamaParse per page of a tier.
PRICES: dict[tuple[str, str], tuple[str, float]] = {
    ("openai", "text-embedding-3-small"): ("tokens", 0.02 / 1_000_000),
    ("openai", "text-embedding-3-large"): ("tokens", 0.13 / 1_000_000),
    ("openai", "text-embedding-ada-002"): ("tokens", 0.10 / 1_000_000),
    **{
        ("llamaparse", tier): ("pages", credits * USD_PER_LLAMAPARSE_CREDIT)
        for tier, credits in LLAMAPARSE_CREDITS_PER_PAGE.items()
    },
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


def llamaparse_billed(tier: str, pages: int, credits: float | None) -> Charge:
    """What a LlamaParse job cost: its pages, and the credits the service billed for them
    (the tier's price for the pages while the service has not counted them yet)."""
    listed = price("llamaparse", tier, pages)
    if credits is None:
        return listed
    return Charge(listed.service, tier, listed.unit, pages, credits * USD_PER_LLAMAPARSE_CREDIT)
