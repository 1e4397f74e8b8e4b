"""Uploads become parsed markdown in `documents`."""

from typing import Any

import dagster as dg
import psycopg

from tvdb_assets.defs.assets.batch import (
    Timer,
    batch_bookkeeping,
    call_context,
    circuit_metadata,
    report_batch,
    report_failed,
    report_ok,
    steps_share_the_process,
    tag_failed,
    warn_fallbacks,
)
from tvdb_assets.defs.partitions import documents_partitions
from tvdb_assets.defs.pools import PARSER_POOL
from tvdb_assets.defs.resources import (
    EmbedderResource,
    ParserResource,
    PostgresResource,
    UploadsResource,
)
from tvdb_assets.defs.tables import table_metadata
from tvdb_assets.lib import stages
from tvdb_assets.lib.parsing import Parser
from tvdb_assets.lib.store.documents import DocumentRow
from tvdb_assets.lib.uploads import UploadStore

PREVIEW_CHARS = 600

uploads = dg.AssetSpec(
    "uploads",
    description="The inbox itself: files users drop in. Watched by the sensor, never written; "
    "the sensor observes each new or changed file (path, bytes, sha256; data version = "
    "content hash).",
    group_name="ingestion",
    kinds={"filesystem"},
    partitions_def=documents_partitions,
)


@dg.asset(
    partitions_def=documents_partitions,
    deps=[uploads],
    group_name="ingestion",
    kinds={"python", "postgres"},
    metadata=table_metadata("documents"),
    pool=PARSER_POOL,
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
        call = call_context(context)
        context.log.info(f"[{call.correlation_id}] parsing {len(keys)} document(s)")
        uploads_client = upload_store.client()
        with database.connect() as conn, parser.client(call) as client:
            report = stages.parse_documents(conn, uploads_client, client, keys, context.run.run_id)
            _work_ahead(context, embedder, conn, report.parsed, uploads_client, client)

        for outcome in report.outcomes:
            if outcome.document is not None:
                report_ok(context, outcome.document.partition_key, _facts(outcome))
        for error in report.errors:
            report_failed(context, error)
        parsed = report.parsed
        cached = sum(1 for o in report.outcomes if o.cached)
        fallbacks = [d for d in parsed if d.fallback]
        warn_fallbacks(context, "document(s) parsed", [d.fallback_reason or "" for d in fallbacks])
        report_batch(
            context,
            f"[{call.correlation_id}] parsed {len(parsed)} of {len(keys)} document(s) in "
            f"{timer.seconds:.1f} s: {len(report.errors)} failed, {cached} from the parse "
            f"cache, {len(fallbacks)} fallback(s)",
            {
                "documents": len(keys),
                "parsed": len(parsed),
                "failed": len(report.errors),
                "bytes": sum(d.bytes for d in parsed),
                "from_parse_cache": cached,
                "fallbacks": len(fallbacks),
                "seconds": timer.seconds,
                "correlation_id": call.correlation_id,
                **circuit_metadata(report.circuit),
            },
            report.errors,
        )
        tag_failed(context, len(report.errors))
        return dg.MaterializeResult()


def _facts(outcome: stages.ParseOutcome) -> dict[str, Any]:
    """One parsed document's own facts, for its partition."""
    doc = outcome.document
    assert doc is not None
    facts: dict[str, Any] = {
        "path": doc.path,
        "parser": doc.parser,
        "bytes": doc.bytes,
        "mime": doc.mime,
        "pages": doc.pages if doc.pages is not None else 0,
        "characters": len(doc.markdown),
        "parse_seconds": round(outcome.seconds, 4),
        "from_parse_cache": outcome.cached,
    }
    if doc.fallback:
        facts["fallback_reason"] = doc.fallback_reason or "the service could not answer"
    facts["preview"] = dg.MetadataValue.md(doc.markdown[:PREVIEW_CHARS])
    return facts


def _work_ahead(
    context: dg.AssetExecutionContext,
    embedder: EmbedderResource,
    conn: psycopg.Connection,
    parsed: list[DocumentRow],
    uploads: UploadStore,
    parser: Parser,
) -> None:
    """Have the workers chunk (and, in mock mode, embed) what this run stores next, then
    parse what the next run of the same ingest will, while this process writes documents
    and events (`lib.ahead`)."""
    selected = context.run.asset_selection  # None or empty: the whole job
    if selected and dg.AssetKey("chunks") not in selected:
        return
    if not steps_share_the_process(context):
        return  # `chunks` starts a process of its own: nothing here would be taken
    ops: Any = context.run.run_config.get("ops") or {}
    config: Any = (ops.get("chunks") or {}).get("config") or {}
    settings = stages.ChunkSettings(
        **{k: config[k] for k in ("max_tokens", "overlap_tokens") if k in config}
    )
    embeds = not selected or dg.AssetKey("embeddings") in selected
    mock_dims = embedder.dims if embeds and embedder.mode == "mock" else None
    stages.after_parse(conn, parsed, uploads, parser, settings, mock_dims)
