"""Uploads become parsed markdown in `documents`."""

from dataclasses import replace
from typing import Any

import dagster as dg

from tvdb_assets.defs.assets.batch import (
    Timer,
    batch_bookkeeping,
    report_failed,
    report_ok,
    save_circuit,
)
from tvdb_assets.defs.partitions import documents_partitions
from tvdb_assets.defs.resources import (
    EmbedderResource,
    ParserResource,
    PostgresResource,
    UploadsResource,
)
from tvdb_assets.lib import ahead, stages
from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.store import documents, inbox_files, ingest_errors
from tvdb_assets.lib.store.ingest_errors import IngestError

PREVIEW_CHARS = 600

uploads = dg.AssetSpec(
    "uploads",
    description="The inbox itself: files users drop in. Watched by the sensor, never written.",
    group_name="ingestion",
    kinds={"filesystem"},
    partitions_def=documents_partitions,
)


@dg.asset(
    partitions_def=documents_partitions,
    deps=[uploads],
    group_name="ingestion",
    kinds={"python", "postgres"},
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def parsed_documents(
    context: dg.AssetExecutionContext,
    parser: ParserResource,
    upload_store: UploadsResource,
    database: PostgresResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    """Each upload parsed to markdown (PDF pages kept), one row per document in `documents`.

    A document that cannot be parsed is recorded in `ingest_errors`, its partition's
    metadata says `status: failed`, and every other document in the run goes on.
    """
    with batch_bookkeeping(context):
        timer = Timer()
        keys = context.partition_keys
        with database.connect() as conn:
            files = inbox_files.load(conn, keys)
            unknown = [
                IngestError(key, key, "read", "not in the inbox registry (was the upload deleted?)")
                for key in keys
                if key not in files
            ]
            call = CallContext(context.run.run_id, keys)
            context.log.info(f"[{call.correlation_id}] parsing {len(keys)} document(s)")
            uploads_client = upload_store.client()
            with parser.client(call) as client:
                outcomes = stages.parse_batch(
                    uploads_client, client, [files[k] for k in keys if k in files], conn
                )
                parsed = [o.document for o in outcomes if o.document is not None]
                errors = [
                    replace(e, run_id=context.run.run_id)
                    for e in unknown + [o.error for o in outcomes if o.error is not None]
                ]
                with conn.transaction():
                    documents.replace(conn, parsed, context.run.run_id)
                    ingest_errors.resolve(
                        conn, [d.partition_key for d in parsed], ("read", "parse")
                    )
                    ingest_errors.record(conn, errors)
                coming = ahead.next_batch()
                following = inbox_files.load(conn, coming) if coming else {}
                next_files = [following[k] for k in coming if k in following]
                _work_ahead(
                    context, embedder, parsed, stages.NextBatch(uploads_client, client, next_files)
                )
                circuit = save_circuit(conn, client)

        for outcome in outcomes:
            if outcome.document is None:
                continue
            doc = outcome.document
            report_ok(
                context,
                doc.partition_key,
                {
                    "path": doc.path,
                    "bytes": doc.bytes,
                    "mime": doc.mime,
                    "parser": doc.parser,
                    "pages": doc.pages if doc.pages is not None else 0,
                    "characters": len(doc.markdown),
                    "parse_seconds": round(outcome.seconds, 4),
                    "from_parse_cache": outcome.cached,
                    "fallback": doc.fallback,
                    "preview": dg.MetadataValue.md(doc.markdown[:PREVIEW_CHARS]),
                },
            )
        for error in errors:
            report_failed(context, error)
        return dg.MaterializeResult(
            metadata={
                "batch_documents": len(keys),
                "batch_parsed": len(parsed),
                "batch_failed": len(errors),
                "batch_bytes": sum(d.bytes for d in parsed),
                "batch_from_parse_cache": sum(1 for o in outcomes if o.cached),
                "batch_fallbacks": sum(1 for d in parsed if d.fallback),
                "batch_seconds": timer.seconds,
                "correlation_id": call.correlation_id,
                **circuit,
            }
        )


def _work_ahead(
    context: dg.AssetExecutionContext,
    embedder: EmbedderResource,
    parsed: list,
    following: stages.NextBatch,
) -> None:
    """Have the workers chunk (and, in mock mode, embed) what this run stores next, then
    parse what the next run of the same ingest will, while this process writes documents
    and events (`lib.ahead`)."""
    selected = context.run.asset_selection  # None or empty: the whole job
    if selected and dg.AssetKey("chunks") not in selected:
        return
    ops: Any = context.run.run_config.get("ops") or {}
    config: Any = (ops.get("chunks") or {}).get("config") or {}
    settings = stages.ChunkSettings(
        **{k: config[k] for k in ("max_tokens", "overlap_tokens") if k in config}
    )
    embeds = not selected or dg.AssetKey("embeddings") in selected
    mock_dims = embedder.dims if embeds and embedder.mode == "mock" else None
    stages.work_ahead(parsed, settings, mock_dims, following)
