"""Parsed documents become chunks, and chunks become vectors in pgvector."""

from collections import Counter
from typing import Any

import dagster as dg

from tvdb_assets.defs.assets.batch import (
    Timer,
    batch_bookkeeping,
    call_context,
    circuit_metadata,
    report_batch,
    report_failed,
    report_ok,
    report_skipped,
    tag_failed,
    warn_fallbacks,
)
from tvdb_assets.defs.assets.ingestion import parsed_documents
from tvdb_assets.defs.partitions import documents_partitions
from tvdb_assets.defs.pools import EMBEDDER_POOL
from tvdb_assets.defs.resources import EmbedderResource, PostgresResource
from tvdb_assets.defs.tables import table_metadata
from tvdb_assets.lib import settings, stages
from tvdb_assets.lib.store import embeddings as embedding_store

# The deployment's chunker settings (TVDB_CHUNK_MAX_TOKENS, _OVERLAP_TOKENS) and model.
_CHUNKING = stages.ChunkSettings()
_MODEL, _DIMS = settings.embedding()


class ChunkingConfig(dg.Config):
    """How documents are cut; changing it re-chunks (and re-embeds only new text)."""

    max_tokens: int = _CHUNKING.max_tokens
    overlap_tokens: int = _CHUNKING.overlap_tokens


@dg.asset(
    partitions_def=documents_partitions,
    deps=[parsed_documents],
    group_name="indexing",
    kinds={"python", "postgres"},
    metadata=table_metadata("chunks"),
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
        call = call_context(context)
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
                    "dagster/row_count": len(rows),  # its chunks
                    "tokens": sum(tokens),
                    "max_chunk_tokens": max(tokens, default=0),
                    "first_chunk": dg.MetadataValue.md(rows[0].text[:400] if rows else ""),
                },
            )
        every = [row for rows in report.chunked.values() for row in rows]
        report_batch(
            context,
            f"[{call.correlation_id}] cut {len(report.chunked)} document(s) "
            f"into {len(every)} chunk(s) of at most {settings.max_tokens} tokens in "
            f"{timer.seconds:.1f} s: {report.added} new, {len(report.skipped)} skipped",
            {
                "documents": len(report.chunked),
                "chunks": len(every),
                "tokens": sum(r.tokens for r in every),
                "chunks_added": report.added,
                "chunks_superseded": report.superseded,
                "skipped": len(report.skipped),
                "max_tokens": settings.max_tokens,
                "overlap_tokens": settings.overlap_tokens,
                "seconds": timer.seconds,
            },
        )
        tag_failed(context, len(report.skipped))
        return dg.MaterializeResult()


@dg.asset(
    partitions_def=documents_partitions,
    deps=[chunks],
    group_name="indexing",
    kinds={"python", "pgvector"},
    metadata={
        **table_metadata("embeddings"),
        # The deployment's model (TVDB_EMBEDDING_MODEL, _DIMS); each document's metadata
        # names the model that wrote its vectors.
        "model": _MODEL,
        "dims": _DIMS,
        "index": embedding_store.index_name(_MODEL, _DIMS),
    },
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
        call = call_context(context)
        context.log.info(f"[{call.correlation_id}] embedding the chunks of {len(keys)} document(s)")
        with database.connect() as conn, embedder.client(call) as client:
            report = stages.embed_documents(conn, client, keys, context.run.run_id)

        for key, why in report.skipped.items():
            report_skipped(context, key, why)
        missing = Counter(c.partition_key for c, _ in report.rejected + report.unembedded)
        errors = {e.partition_key: e for e in report.errors}
        stand_in = report.fallback_model[0] if report.fallback_model else None
        for key in report.embedded:
            count, _ = report.totals.get(key, (0, 0))
            fallbacks = report.fallbacks.get(key, 0)
            vectors = count - missing[key]
            metadata: dict[str, Any] = {
                "dagster/row_count": vectors,
                "new_vectors": report.per_partition.get(key, 0),
                "fallback_vectors": fallbacks,
                "model": _models_written(client.model, vectors, fallbacks, stand_in),
            }
            if fallbacks:
                metadata["fallback_reason"] = report.fallback_reasons.get(key, "")
            if key in errors:
                report_failed(context, errors[key], metadata)
            else:
                report_ok(context, key, metadata)
        warn_fallbacks(context, "document(s) embedded", list(report.fallback_reasons.values()))
        report_batch(
            context,
            f"[{call.correlation_id}] wrote {report.chunks} vector(s) of {client.model} for "
            f"{len(report.embedded)} document(s) in {timer.seconds:.1f} s: "
            f"{report.from_cache} from the cache, {report.embedded_texts} text(s) embedded in "
            f"{report.calls} call(s), {sum(report.fallbacks.values())} stand-in(s), "
            f"{len(report.errors)} document(s) failed, {len(report.skipped)} skipped",
            {
                "vectors_written": report.chunks,
                "cache_hits": report.from_cache,
                "texts_embedded": report.embedded_texts,
                "tokens_embedded": report.tokens,
                "embedding_calls": report.calls,
                "fallback_vectors": sum(report.fallbacks.values()),
                "chunks_rejected": len(report.rejected),
                "chunks_unembedded": len(report.unembedded),
                "seconds": timer.seconds,
                "correlation_id": call.correlation_id,
                **circuit_metadata(report.circuit),
            },
            report.errors,
        )
        tag_failed(context, len(report.errors) + len(report.skipped))
        return dg.MaterializeResult()


def _models_written(model: str, vectors: int, fallbacks: int, stand_in: str | None) -> str:
    """The model of the vectors a document holds now: hybrid stand-ins are another's."""
    if not fallbacks or stand_in is None:
        return model
    if fallbacks >= vectors:
        return f"{stand_in} (fallback)"
    return f"{model}, {stand_in} (fallback)"
