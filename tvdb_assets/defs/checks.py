"""Checks run after each batch: data quality, the cost budget, the services' health."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import psycopg

from tvdb_assets.defs.assets.indexing import embeddings
from tvdb_assets.defs.assets.ingestion import parsed_documents
from tvdb_assets.defs.partitions import DOCUMENTS, RANGE_END_TAG, RANGE_START_TAG
from tvdb_assets.defs.resources import EmbedderResource, ParserResource, PostgresResource
from tvdb_assets.lib import settings
from tvdb_assets.lib.costs import budget
from tvdb_assets.lib.store import cost_ledger, documents, service_health
from tvdb_assets.lib.store import embeddings as embeddings_store

PARTITION_TAG = "dagster/partition"


def run_partition_keys(context: dg.AssetCheckExecutionContext) -> list[str] | None:
    """The documents this run materialized, so a check reads those rows only and stays
    cheap however many documents are stored; None for a run without partitions."""
    tags = context.run.tags
    if key := tags.get(PARTITION_TAG):
        return [key]
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if not (start and end):
        return None
    keys = list(context.instance.get_dynamic_partitions(DOCUMENTS))
    if start not in keys or end not in keys:
        return None  # a range since changed: check everything rather than guess
    return keys[keys.index(start) : keys.index(end) + 1]


def _scope(keys: list[str] | None) -> str:
    return f"{len(keys)} document(s) of this run" if keys is not None else "all documents"


def every_chunk_has_one_vector(
    conn: psycopg.Connection, keys: list[str] | None, embedder: EmbedderResource
) -> dg.AssetCheckResult:
    with embedder.client() as client:  # the vectors expected: its model, dims, stand-ins
        model, dims, stand_in = client.model, client.dims, client.stand_in_model()
    found = embeddings_store.coverage(conn, keys, model, dims, stand_in)
    wrong = found.of_another_model + found.with_wrong_dims + found.zero
    # Chunks the service refused are known and listed in ingest_errors: a warning. Any
    # other gap is an error.
    unexplained = max(0, found.without_vector - found.without_vector_known_why) + wrong
    return dg.AssetCheckResult(
        passed=found.without_vector == wrong == 0,
        severity=dg.AssetCheckSeverity.ERROR if unexplained else dg.AssetCheckSeverity.WARN,
        metadata={
            "chunks": found.chunks,
            "chunks_without_vector": found.without_vector,
            "chunks_without_vector_known_why": found.without_vector_known_why,
            "vectors_of_another_model": found.of_another_model,
            "vectors_with_wrong_dims": found.with_wrong_dims,
            "zero_vectors": found.zero,
            "fallback_vectors": found.fallbacks,
            "model": model,
            "dims": dims,
            "scope": _scope(keys),
        },
    )


def documents_are_not_empty(
    conn: psycopg.Connection, keys: list[str] | None
) -> dg.AssetCheckResult:
    empty = documents.empty_paths(conn, keys)
    return dg.AssetCheckResult(
        passed=not empty,
        metadata={
            "empty_documents": len(empty),
            "examples": ", ".join(empty),
            "scope": _scope(keys),
        },
    )


def cost_within_budget(conn: psycopg.Connection) -> dg.AssetCheckResult:
    limits = budget.from_env()
    used = cost_ledger.spend(conn)
    share = used.today_usd / limits.daily_usd if limits.daily_usd > 0 else 1.0
    requests_share = used.last_hour_requests / max(1, limits.hourly_requests)
    worst = max(share, requests_share)
    return dg.AssetCheckResult(
        passed=worst < settings.budget_warn_share(),
        severity=dg.AssetCheckSeverity.ERROR if worst >= 1 else dg.AssetCheckSeverity.WARN,
        metadata={
            "spent_today_usd": round(used.today_usd, 6),
            "daily_budget_usd": limits.daily_usd,
            "budget_used": f"{share:.0%}",
            "requests_last_hour": used.last_hour_requests,
            "hourly_request_cap": limits.hourly_requests,
        },
    )


def services_healthy(
    conn: psycopg.Connection, parser: ParserResource, embedder: EmbedderResource
) -> dg.AssetCheckResult:
    in_use = {
        service
        for service, mode in (("llamaparse", parser.mode), ("openai", embedder.mode))
        if mode != "mock"
    }
    if not in_use:
        return dg.AssetCheckResult(
            passed=True, metadata={"skipped": "mock mode: no external service is called"}
        )
    services = [h for h in service_health.load(conn) if h.service in in_use]
    failing = [h for h in services if h.state != "closed" or h.consecutive_failures]
    circuit_open = any(h.state != "closed" for h in failing)
    metadata: dict[str, Any] = {
        "services": ", ".join(f"{h.service} {h.state}" for h in services) or "none called yet",
        "unhealthy": ", ".join(f"{h.service}: {h.state}" for h in failing),
    }
    for h in services:
        metadata[f"{h.service}_failures"] = h.consecutive_failures
        metadata[f"{h.service}_last_call_seconds"] = h.last_call_seconds
        metadata[f"{h.service}_last_error"] = h.last_error
    return dg.AssetCheckResult(
        passed=not failing,
        severity=dg.AssetCheckSeverity.ERROR if circuit_open else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )


SPECS = {
    "documents_are_not_empty": dg.AssetCheckSpec(
        "documents_are_not_empty",
        asset=parsed_documents,
        description="No parsed document of the run is empty.",
    ),
    "every_chunk_has_one_vector": dg.AssetCheckSpec(
        "every_chunk_has_one_vector",
        asset=embeddings,
        description="Every chunk of the run has one non-zero vector of the model's dims (in "
        "hybrid mode, or the fallback's flagged stand-in).",
    ),
    "cost_within_budget": dg.AssetCheckSpec(
        "cost_within_budget",
        asset=embeddings,
        blocking=True,
        description="Spend today against the daily budget: warns from "
        "TVDB_BUDGET_WARN_SHARE (80% unless set), fails when used up.",
    ),
    "services_healthy": dg.AssetCheckSpec(
        "services_healthy",
        asset=embeddings,
        description="The services this run's modes call answered their last calls: fails "
        "while a circuit is open or calls are failing; passes without a look in mock mode.",
    ),
}


@dg.multi_asset_check(specs=list(SPECS.values()), can_subset=True)
def batch_checks(
    context: dg.AssetCheckExecutionContext,
    parser: ParserResource,
    embedder: EmbedderResource,
    database: PostgresResource,
) -> Iterator[dg.AssetCheckResult]:
    """The four checks of a batch in one step: a step costs Dagster about 50 ms of events
    whatever it does, and these are a few queries each."""
    selected = {key.name for key in context.selected_asset_check_keys}
    keys = run_partition_keys(context)
    with database.connect() as conn:
        made = {
            "documents_are_not_empty": lambda: documents_are_not_empty(conn, keys),
            "every_chunk_has_one_vector": lambda: every_chunk_has_one_vector(conn, keys, embedder),
            "cost_within_budget": lambda: cost_within_budget(conn),
            "services_healthy": lambda: services_healthy(conn, parser, embedder),
        }
        for name, check in made.items():
            if name in selected:
                # Each check says what it found; the spec says which check it is.
                yield check()._replace(asset_key=SPECS[name].asset_key, check_name=name)
