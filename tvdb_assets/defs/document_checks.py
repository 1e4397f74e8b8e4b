"""Whether each document of a run was ingested: a check per partition, and the run's
failures in one table.

Dagster marks every partition a batch run wrote as materialized; these checks say which
documents did not make it, and why.
"""

from typing import Any

import dagster as dg
import psycopg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from tvdb_assets.defs.assets.indexing import embeddings
from tvdb_assets.lib.store import ingest_errors
from tvdb_assets.lib.store.ingest_errors import IngestError

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
STAGES = ("read", "parse", "chunk", "embed")


def scope_of(keys: list[str] | None) -> str:
    return f"{len(keys)} document(s) of this run" if keys is not None else "all documents"


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
    """An evaluation of `document_ingested` for each of these documents of the run, so a
    failed one's partition is red.

    Dagster reports a check's result on the partition of a single-partition run only; a
    batch run covers a range, so each document's evaluation is logged by hand, aimed at
    that partition's materialization by this run (else the UI would not count it current).
    A document `embeddings` did not materialize in this run gets none.
    """
    if not keys:
        return
    op = context.op_execution_context
    targets = _materializations(context, embeddings.key)
    why = {e.partition_key: e for e in failed}
    for key in keys:
        if key not in targets:
            continue
        error = why.get(key)
        metadata: dict[str, Any] = (
            {"status": "ingested"}
            if error is None
            else {
                "status": "failed",
                "stage": error.stage,
                "error": f"{error.path}: {error.reason}",
                "attempt": error.attempt,
                "next": (
                    "tried again by retry_failed or `tvdb backfill --failed`"
                    if error.transient
                    else "fix the upload: a changed file is ingested again"
                ),
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
            "scope": scope_of(keys),
        },
    )
