"""Parsed documents become chunks, and chunks become vectors in pgvector."""

from collections import Counter

import dagster as dg

from tvdb_assets.defs.assets.batch import (
    Timer,
    batch_bookkeeping,
    circuit_metadata,
    report_ok,
    report_skipped,
)
from tvdb_assets.defs.assets.ingestion import parsed_documents
from tvdb_assets.defs.partitions import documents_partitions
from tvdb_assets.defs.pools import EMBEDDER_POOL
from tvdb_assets.defs.resources import EmbedderResource, PostgresResource
from tvdb_assets.lib import stages
from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.store import embeddings as embedding_store

# The deployment's chunker settings (TVDB_CHUNK_MAX_TOKENS, _OVERLAP_TOKENS).
_CHUNKING = stages.ChunkSettings()


class ChunkingConfig(dg.Config):
    """How documents are cut; changing it re-chunks (and re-embeds only new text)."""

    max_tokens: int = _CHUNKING.max_tokens
    overlap_tokens: int = _CHUNKING.overlap_tokens


@dg.asset(
    partitions_def=documents_partitions,
    deps=[parsed_documents],
    group_name="indexing",
    kinds={"python", "postgres"},
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def chunks(
    context: dg.AssetExecutionContext, config: ChunkingConfig, database: PostgresResource
) -> dg.MaterializeResult:
    """Markdown cut into token-bounded chunks along its headings, with heading path and pages.

    Chunk ids derive from (document, position, text hash): unchanged chunks keep their row
    and their vector when a document is edited.
    """
    with batch_bookkeeping(context):
        timer = Timer()
        settings = stages.ChunkSettings(config.max_tokens, config.overlap_tokens)
        with database.connect() as conn:
            report = stages.chunk_documents(conn, settings, context.partition_keys)

        for key, why in report.skipped.items():
            report_skipped(context, key, why)
        for key, rows in report.chunked.items():
            tokens = [r.tokens for r in rows]
            report_ok(
                context,
                key,
                {
                    "chunks": len(rows),
                    "tokens": sum(tokens),
                    "max_chunk_tokens": max(tokens, default=0),
                    "first_chunk": dg.MetadataValue.md(rows[0].text[:400] if rows else ""),
                },
            )
        every = [row for rows in report.chunked.values() for row in rows]
        return dg.MaterializeResult(
            metadata={
                "batch_documents": len(report.chunked),
                "batch_chunks": len(every),
                "batch_tokens": sum(r.tokens for r in every),
                "batch_chunks_added": report.added,
                "batch_chunks_superseded": report.superseded,
                "batch_seconds": timer.seconds,
            }
        )


@dg.asset(
    partitions_def=documents_partitions,
    deps=[chunks],
    group_name="indexing",
    kinds={"python", "pgvector"},
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=EMBEDDER_POOL,
)
def embeddings(
    context: dg.AssetExecutionContext, embedder: EmbedderResource, database: PostgresResource
) -> dg.MaterializeResult:
    """One vector per chunk, from `embedding_cache` when the same text was embedded before.

    A chunk the service refuses, or that a failed call left without a vector (real mode),
    is recorded in `ingest_errors` and its document's metadata says `status: failed`; in
    hybrid mode it gets the mock's vector instead, flagged `fallback` for a later heal.
    """
    with batch_bookkeeping(context):
        timer = Timer()
        keys = context.partition_keys
        call = CallContext(context.run.run_id, keys)
        context.log.info(f"[{call.correlation_id}] embedding the chunks of {len(keys)} document(s)")
        with database.connect() as conn, embedder.client(call) as client:
            report = stages.embed_documents(conn, client, keys, context.run.run_id)

        for key, why in report.skipped.items():
            report_skipped(context, key, why)
        missing = Counter(c.partition_key for c, _ in report.rejected + report.unembedded)
        reasons = {e.partition_key: e.reason for e in report.errors}
        for key in report.embedded:
            count, _ = report.totals.get(key, (0, 0))
            metadata = {
                "vectors": count - missing[key],
                "new_vectors": report.per_partition.get(key, 0),
                "fallback_vectors": report.fallbacks.get(key, 0),
                "model": client.model,
                "dims": client.dims,
            }
            if key in reasons:
                context.add_asset_metadata(
                    {"status": "failed", "error": reasons[key], **metadata}, partition_key=key
                )
            else:
                report_ok(context, key, metadata)
        return dg.MaterializeResult(
            metadata={
                "model": client.model,
                "dims": client.dims,
                "index": embedding_store.index_name(client.model, client.dims),
                "batch_vectors_written": report.chunks,
                "batch_cache_hits": report.from_cache,
                "batch_texts_embedded": report.embedded_texts,
                "batch_tokens_embedded": report.tokens,
                "batch_embedding_calls": report.calls,
                "batch_fallback_vectors": sum(report.fallbacks.values()),
                "batch_chunks_rejected": len(report.rejected),
                "batch_chunks_unembedded": len(report.unembedded),
                "batch_seconds": timer.seconds,
                "correlation_id": call.correlation_id,
                **circuit_metadata(report.circuit),
            }
        )
