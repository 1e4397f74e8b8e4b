"""Checks run after each batch: each document ingested (`document_checks`), data quality,
the cost budget, the services' health."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import psycopg

from tvdb_assets.defs.assets.batch import FAILED_TAG
from tvdb_assets.defs.assets.indexing import embeddings
from tvdb_assets.defs.assets.ingestion import parsed_documents
from tvdb_assets.defs.document_checks import (
    DOCUMENT_CHECK,
    batch_documents_ingested,
    document_ingested,
    failed_documents,
    scope_of,
)
from tvdb_assets.defs.partitions import (
    DOCUMENTS,
    RANGE_END_TAG,
    RANGE_START_TAG,
    documents_partitions,
)
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


def every_chunk_has_one_vector(
    conn: psycopg.Connection, keys: list[str] | None
) -> dg.AssetCheckResult:
    """Fails on a chunk without a vector (an error when nothing says why), a vector whose
    length is not its model's dims, or a zero vector. Vectors of several models are not a
    failure: a hybrid fallback or a model change in progress leaves them, counted apart."""
    found = embeddings_store.coverage(conn, keys)
    broken = found.with_wrong_dims + found.zero
    unexplained = max(0, found.without_vector - found.without_vector_known_why) + broken
    models = sorted(found.by_model.items(), key=lambda item: -item[1])
    stand_ins = sum(n for (_, _, fallback), n in models if fallback)
    return dg.AssetCheckResult(
        passed=found.without_vector == broken == 0,
        severity=dg.AssetCheckSeverity.ERROR if unexplained else dg.AssetCheckSeverity.WARN,
        description=(
            f"{stand_ins} stand-in vector(s) of hybrid mode wait for a heal" if stand_ins else None
        ),
        metadata={
            "chunks": found.chunks,
            "chunks_without_vector": found.without_vector,
            "chunks_without_vector_known_why": found.without_vector_known_why,
            "vectors_with_wrong_dims": found.with_wrong_dims,
            "zero_vectors": found.zero,
            "vectors_by_model": ", ".join(
                f"{model}/{dims}{' (fallback)' if fallback else ''}: {n}"
                for (model, dims, fallback), n in models
            ),
            "scope": scope_of(keys),
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
            "scope": scope_of(keys),
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
            "budget_used": f"{share:.0%} of ${limits.daily_usd:.2f}",
            "requests_last_hour": used.last_hour_requests,
            "requests_used": f"{requests_share:.0%} of {limits.hourly_requests}",
        },
    )


def services_healthy(
    conn: psycopg.Connection, parser: ParserResource, embedder: EmbedderResource
) -> dg.AssetCheckResult:
    in_use = {
        service: resource
        for service, resource in (("llamaparse", parser), ("openai", embedder))
        if resource.mode != "mock"
    }
    if not in_use:
        return dg.AssetCheckResult(
            passed=True, metadata={"skipped": "mock mode: no external service is called"}
        )
    called = {h.service: h for h in service_health.load(conn) if h.service in in_use}
    states = {
        service: _state(resource, called.get(service)) for service, resource in in_use.items()
    }
    failing = [
        s
        for s, state in states.items()
        if state == "no key"
        or (s in called and (state != "closed" or called[s].consecutive_failures))
    ]
    # A real mode without its key, or an open circuit, stops the work; hybrid falls back.
    stopped = any(
        states[s] in ("open", "half_open") or (states[s] == "no key" and in_use[s].mode == "real")
        for s in failing
    )
    metadata: dict[str, Any] = {
        "services": ", ".join(f"{s}: {state}" for s, state in states.items()),
        "unhealthy": ", ".join(f"{s}: {states[s]}" for s in failing),
    }
    for service, health in called.items():
        metadata[f"{service}_failures"] = health.consecutive_failures
        metadata[f"{service}_last_call_seconds"] = health.last_call_seconds
        metadata[f"{service}_last_error"] = health.last_error
    return dg.AssetCheckResult(
        passed=not failing,
        severity=dg.AssetCheckSeverity.ERROR if stopped else dg.AssetCheckSeverity.WARN,
        description=metadata["unhealthy"] or None,
        metadata=metadata,
    )


def _state(
    resource: ParserResource | EmbedderResource, health: service_health.Health | None
) -> str:
    if not resource.credentials.api_key:
        return "no key"
    return health.state if health is not None else "not called yet"


_LIMITS = budget.from_env()

SPECS = {
    DOCUMENT_CHECK: dg.AssetCheckSpec(
        DOCUMENT_CHECK,
        asset=embeddings,
        partitions_def=documents_partitions,
        description="Red for each document of a run that did not reach its vectors, with the "
        "stage and the reason (`ingest_errors` holds them all). Batch runs report the failed "
        "documents only: a result per healthy document would cost Dagster about 10 ms each, "
        "so their partitions show no result here; a run launched from this page checks every "
        "document it covers.",
    ),
    "batch_documents_ingested": dg.AssetCheckSpec(
        "batch_documents_ingested",
        asset=embeddings,
        description="The run's documents that are not ingested, as a table: key, path, stage "
        "and reason. Warns: the other documents went on.",
    ),
    "documents_are_not_empty": dg.AssetCheckSpec(
        "documents_are_not_empty",
        asset=parsed_documents,
        description="No parsed document of the run is empty.",
    ),
    "every_chunk_has_one_vector": dg.AssetCheckSpec(
        "every_chunk_has_one_vector",
        asset=embeddings,
        description="Every chunk of the run has one non-zero vector of its model's dims. "
        "Vectors of several models (hybrid stand-ins, a model change in progress) are counted "
        "per model, not failed.",
    ),
    "cost_within_budget": dg.AssetCheckSpec(
        "cost_within_budget",
        asset=embeddings,
        blocking=True,
        description="Spend today against the daily budget: warns from "
        "TVDB_BUDGET_WARN_SHARE (80% unless set), fails when used up.",
        metadata={
            "daily_budget_usd": _LIMITS.daily_usd,
            "hourly_request_cap": _LIMITS.hourly_requests,
            "warn_share": settings.budget_warn_share(),
        },
    ),
    "services_healthy": dg.AssetCheckSpec(
        "services_healthy",
        asset=embeddings,
        description="The services this run's modes call have their keys and answered their "
        "last calls: fails while a key is missing, a circuit is open or calls are failing; "
        "passes without a look in mock mode.",
    ),
}


@dg.multi_asset_check(specs=list(SPECS.values()), can_subset=True)
def batch_checks(
    context: dg.AssetCheckExecutionContext,
    parser: ParserResource,
    embedder: EmbedderResource,
    database: PostgresResource,
) -> Iterator[dg.AssetCheckResult | dg.Output]:
    """The checks of a batch in one step: a step costs Dagster about 50 ms of events
    whatever it does, and these are a few queries each."""
    selected = {key.name for key in context.selected_asset_check_keys}
    keys = run_partition_keys(context)
    with database.connect() as conn:
        failed = failed_documents(conn, keys)
        if keys is not None:
            planned = DOCUMENT_CHECK in selected
            document_ingested(
                context,
                keys if planned else [e.partition_key for e in failed if e.partition_key],
                failed,
            )
            if planned:
                # What an AssetCheckResult would yield besides its evaluation: the step then
                # counts the check as done.
                layer = context.op_execution_context.job_def.asset_layer
                yield dg.Output(None, layer.get_op_output_name(SPECS[DOCUMENT_CHECK].key))
        made = {
            "batch_documents_ingested": lambda: batch_documents_ingested(keys, failed),
            "documents_are_not_empty": lambda: documents_are_not_empty(conn, keys),
            "every_chunk_has_one_vector": lambda: every_chunk_has_one_vector(conn, keys),
            "cost_within_budget": lambda: cost_within_budget(conn),
            "services_healthy": lambda: services_healthy(conn, parser, embedder),
        }
        for name, check in made.items():
            if name in selected:
                # Each check says what it found; the spec says which check it is.
                yield check()._replace(asset_key=SPECS[name].asset_key, check_name=name)
    if keys is not None:
        context.instance.add_run_tags(context.run.run_id, {FAILED_TAG: str(len(failed))})
