"""LlamaParse's parse tiers: which one a run may ask for, and the name its results go by.

Kept apart from the client so that run config, prices and the dry-run estimate can name a
tier without importing the SDK.
"""

from typing import Literal, get_args

Tier = Literal["fast", "cost_effective", "agentic", "agentic_plus"]
TIERS: tuple[Tier, ...] = get_args(Tier)
# The tier closest to what the deprecated SDK did by default (3 credits a page): upgrading
# keeps a deployment's spend, and the results it has cached.
DEFAULT_TIER: Tier = "cost_effective"
SERVICE = "llamaparse"


def parser_name(tier: str) -> str:
    """The parser name a tier's results are stored and cached under.

    Tiers read the same file differently, so one tier's cached result must never stand in
    for another's. The default tier keeps the plain name, the one earlier results carry.
    """
    return SERVICE if tier == DEFAULT_TIER else f"{SERVICE}/{tier}"
