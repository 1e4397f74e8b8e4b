"""Checks run after each batch: data quality, the cost budget, the services' health."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import psycopg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from tvdb_assets.defs.assets.batch import FAILED_TAG
from tvdb_assets.defs.assets.indexing import embeddings
from tvdb_assets.defs.assets.ingestion import parsed_documents
from tvdb_assets.defs.partitions import (
    DOCUMENTS,
    RANGE_END_TAG,
    RANGE_START_TAG,
    documents_partitions,
)
from tvdb_assets.defs.resources import EmbedderResource, ParserResource, PostgresResource
from tvdb_assets.lib import settings
from tvdb_assets.lib.costs import budget
from tvdb_assets.lib.store import cost_ledger, documents, ingest_errors, service_health
from tvdb_assets.lib.store import embeddings as embeddings_store
from tvdb_assets.lib.store.ingest_errors import IngestError

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


STAGES = ("read", "parse", "chunk", "embed")


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
            "scope": _scope(keys),
        },
    )


def failed_documents(conn: psycopg.Connection, keys: list[str] | None) -> list[IngestError]:
    """The documents of the run that are not ingested: each one's first open error, in
    the order of the stages (a skipped stage is implied by the failed one before it)."""
    first: dict[str | None, IngestError] = {}
    for error in ingest_errors.open_errors(conn, keys):
        known = first.get(error.partition_key)
        if known is None or STAGES.index(error.stage) < STAGES.index(known.stage):
            first[error.partition_key] = error
    return list(first.values())


def document_ingested(
    context: dg.AssetCheckExecutionContext, keys: list[str], failed: list[IngestError]
) -> None:
    """One evaluation per document of the run, so a failed document's partition is red.

    Dagster reports a check's result on the partition of a single-partition run only; a
    batch run covers a range, so each document's evaluation is logged by hand, aimed at
    that partition's materialization of this run (else the UI would not count it current).
    """
    op = context.op_execution_context
    targets = _materializations(context, embeddings.key)
    why = {e.partition_key: e for e in failed}
    for key in keys:
        error = why.get(key)
        metadata: dict[str, Any] = (
            {"status": "ingested"}
            if error is None
            else {
                "status": "failed",
                "stage": error.stage,
                "error": f"{error.path}: {error.reason}",
                "attempt": error.attempt,
                "retried": "by retry_failed" if error.transient else "no: fix the file",
            }
        )
        # `log_event` takes an evaluation (see OpExecutionContext.log_event), though its
        # annotation leaves it out.
        op.log_event(
            dg.AssetCheckEvaluation(  # type: ignore[arg-type]
                asset_key=embeddings.key,
                check_name=DOCUMENT_CHECK,
                passed=error is None,
                partition=key,
                metadata=metadata,
                description=None if error is None else f"{error.stage} failed: {error.reason}",
                target_materialization_data=targets.get(key),
                severity=dg.AssetCheckSeverity.ERROR,
            )
        )


def _materializations(
    context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """This run's materialization of each partition of `asset_key`."""
    found = {}
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in records:
        event = record.event_log_entry
        materialization = event.asset_materialization
        if materialization and materialization.asset_key == asset_key:
            found[materialization.partition] = AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=event.run_id, timestamp=event.timestamp
            )
    return found


def batch_documents_ingested(
    keys: list[str] | None, failed: list[IngestError]
) -> dg.AssetCheckResult:
    """The run's failed documents in one table: key, path, stage, reason."""
    shown = failed[:MAX_ROWS]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(failed)} document(s) not ingested" if failed else None,
        metadata={
            "failed": len(failed),
            "failed_documents": dg.TableMetadataValue(
                records=[
                    dg.TableRecord(
                        {
                            "key": e.partition_key or "",
                            "path": e.path,
                            "stage": e.stage,
                            "reason": e.reason,
                        }
                    )
                    for e in shown
                ],  # fmt: skip
                schema=FAILED_SCHEMA,
            ),
            "not_shown": len(failed) - len(shown),
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
    states = {}
    for service, resource in in_use.items():
        health = called.get(service)
        states[service] = (
            "no key"
            if not resource.credentials.api_key
            else health.state
            if health is not None
            else "not called yet"
        )
    failing = [
        s
        for s, state in states.items()
        if state == "no key"
        or s in called
        and (state != "closed" or called[s].consecutive_failures)
    ]
    # A real mode without its key, or an open circuit, stops the work; hybrid falls back.
    stopped = any(
        states[s] not in ("no key", "closed") or in_use[s].mode == "real" for s in failing
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


DOCUMENT_CHECK = "document_ingested"
MAX_ROWS = 200
FAILED_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("key", "text", description="the document's partition key"),
        dg.TableColumn("path", "text", description="its path in the inbox"),
        dg.TableColumn("stage", "text", description="read, parse, chunk or embed"),
        dg.TableColumn("reason", "text"),
    ]
)
_LIMITS = budget.from_env()

SPECS = {
    DOCUMENT_CHECK: dg.AssetCheckSpec(
        DOCUMENT_CHECK,
        asset=embeddings,
        partitions_def=documents_partitions,
        description="Each document of the run went all the way to its vectors; a failed one "
        "shows the stage and the reason on its partition (`ingest_errors` holds them all).",
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
        if DOCUMENT_CHECK in selected and keys is not None:
            document_ingested(context, keys, failed)
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
