"""`tvdb ingest --dry-run`: what an ingest would send and cost, without calling any API.

Documents are parsed and chunked locally (as in mock mode); tokens already in the
embedding cache and files already in the parse cache are free, as they would be for real.
"""

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import psycopg

from tvdb_assets.lib import settings
from tvdb_assets.lib.chunking import chunk_markdown
from tvdb_assets.lib.costs import prices
from tvdb_assets.lib.costs.budget import Budget
from tvdb_assets.lib.embedding import MockEmbedder
from tvdb_assets.lib.errors import DocumentError
from tvdb_assets.lib.ids import sha256_text
from tvdb_assets.lib.parsing import LocalParser
from tvdb_assets.lib.parsing.tiers import DEFAULT_TIER, Tier, parser_name
from tvdb_assets.lib.store import documents, embedding_cache, parse_cache
from tvdb_assets.lib.store.cost_ledger import spend


@dataclass(frozen=True)
class Plan:
    parse_with_service: bool  # parser mode real/hybrid
    embed_with_service: bool  # embedder mode real/hybrid
    model: str
    dims: int
    parse_tier: Tier = DEFAULT_TIER

    @classmethod
    def for_modes(
        cls, parser_mode: str, embedder_mode: str, parse_tier: Tier = DEFAULT_TIER
    ) -> "Plan":
        """What runs in these modes would send, with the deployment's model."""
        model, dims = settings.embedding()
        embed = embedder_mode != "mock"
        return cls(
            parser_mode != "mock", embed, model if embed else MockEmbedder.model, dims, parse_tier
        )


def estimate(
    conn: psycopg.Connection,
    files: Sequence[tuple[str, Callable[[], bytes]]],
    plan: Plan,
    budget: Budget,
    again: bool = False,
) -> tuple[pd.DataFrame, dict[str, float | int | str]]:
    """One row per document (path, status, pages, chunks, tokens, USD) and the totals.
    `files`: each document's path in the uploads and what reads its bytes (a local file,
    an object in the bucket). `again`: the documents are to be run again (`tvdb
    backfill`), stored or not."""
    parser = LocalParser()
    known = documents.hashes_by_path(conn)
    rows = []
    seen_texts: set[str] = set()
    for inbox_path, read in files:
        try:
            data = read()
        except OSError as exc:
            reason = f"fails: cannot read ({exc.strerror or exc})"
            rows.append((inbox_path, reason, 0, 0, 0, 0, 0, 0.0, 0.0))
            continue
        sha = hashlib.sha256(data).hexdigest()
        if known.get(inbox_path) == sha and not again:
            rows.append((inbox_path, "unchanged", 0, 0, 0, 0, 0, 0.0, 0.0))
            continue
        try:
            parsed = parser.parse(inbox_path, data)
        except DocumentError as exc:
            rows.append((inbox_path, f"fails: {exc.reason}", 0, 0, 0, 0, 0, 0.0, 0.0))
            continue
        pages = parsed.pages or 1
        cached_parse = parse_cache.has(conn, parser_name(plan.parse_tier), sha)
        billed_pages = pages if plan.parse_with_service and not cached_parse else 0
        chunks = chunk_markdown(parsed.markdown, page_starts=parsed.page_starts)
        hashes = {sha256_text(c.text): c.tokens for c in chunks}
        cached = embedding_cache.lookup(conn, plan.model, plan.dims, hashes) if hashes else {}
        new = {h: t for h, t in hashes.items() if h not in cached and h not in seen_texts}
        seen_texts.update(new)
        tokens = sum(new.values()) if plan.embed_with_service else 0
        status = "changed" if inbox_path in known else "new"
        rows.append((
            inbox_path,
            "again" if again else status,
            pages, billed_pages, len(chunks), sum(hashes.values()), tokens,
            prices.price("llamaparse", plan.parse_tier, billed_pages).usd,
            prices.price("openai", plan.model, tokens).usd if tokens else 0.0,
        ))  # fmt: skip
    table = pd.DataFrame(
        rows,
        columns=["document", "status", "pages", "pages_to_parse", "chunks", "tokens",
                 "tokens_to_embed", "parse_usd", "embed_usd"],
    )  # fmt: skip
    used = spend(conn)
    total = float(table["parse_usd"].sum() + table["embed_usd"].sum()) if len(table) else 0.0
    totals: dict[str, float | int | str] = {
        "documents": len(table),
        "to_ingest": (
            int((table["status"].isin(["new", "changed", "again"])).sum()) if len(table) else 0
        ),
        "pages_to_parse": int(table["pages_to_parse"].sum()) if len(table) else 0,
        "tokens_to_embed": int(table["tokens_to_embed"].sum()) if len(table) else 0,
        "estimated_usd": round(total, 6),
        "spent_today_usd": round(used.today_usd, 6),
        "budget_left_usd": round(budget.daily_usd - used.today_usd, 6),
        "requests_last_hour": used.last_hour_requests,
        "hourly_request_cap": budget.hourly_requests,
        "fits_budget": "yes" if total <= budget.daily_usd - used.today_usd else "no",
    }
    return table, totals
