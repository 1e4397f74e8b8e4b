"""Parsed documents become chunks, and chunks become vectors in pgvector."""

from collections import Counter
from collections.abc import Sequence

import dagster as dg
import psycopg

from tvdb_assets.defs.assets.batch import (
    Timer,
    batch_bookkeeping,
    report_ok,
    report_skipped,
    save_circuit,
)
from tvdb_assets.defs.assets.ingestion import parsed_documents
from tvdb_assets.defs.partitions import documents_partitions
from tvdb_assets.defs.resources import EmbedderResource, PostgresResource
from tvdb_assets.lib import stages
from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.store import chunks as chunk_store
from tvdb_assets.lib.store import documents, ingest_errors
from tvdb_assets.lib.store import embeddings as embedding_store
from tvdb_assets.lib.store.embeddings import PendingChunk
from tvdb_assets.lib.store.ingest_errors import IngestError


class ChunkingConfig(dg.Config):
    """How documents are cut; changing it re-chunks (and re-embeds only new text)."""

    max_tokens: int = 512
    overlap_tokens: int = 64


def _split_failed(
    context: dg.AssetExecutionContext, conn: psycopg.Connection, keys: Sequence[str]
) -> list[str]:
    """The keys to work on; documents that failed upstream are reported as skipped."""
    failed = {e.partition_key: e for e in ingest_errors.open_errors(conn, keys) if e.partition_key}
    for key, error in failed.items():
        report_skipped(context, key, f"{error.stage} failed: {error.reason}")
    return [k for k in keys if k not in failed]


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
            keys = _split_failed(context, conn, context.partition_keys)
            docs = list(documents.load(conn, keys))
            for key in set(keys) - {d.partition_key for d in docs}:
                report_skipped(context, key, "no parsed document")
            per_doc = stages.chunk_batch(settings, docs)
            rows = [row for doc_rows in per_doc for row in doc_rows]
            with conn.transaction():
                added, removed = chunk_store.replace(conn, [d.partition_key for d in docs], rows)
                documents.mark_chunked(conn, docs)

        for doc, doc_rows in zip(docs, per_doc, strict=True):
            tokens = [r.tokens for r in doc_rows]
            report_ok(
                context,
                doc.partition_key,
                {
                    "chunks": len(doc_rows),
                    "tokens": sum(tokens),
                    "max_chunk_tokens": max(tokens, default=0),
                    "first_chunk": dg.MetadataValue.md(doc_rows[0].text[:400] if doc_rows else ""),
                },
            )
        return dg.MaterializeResult(
            metadata={
                "batch_documents": len(docs),
                "batch_chunks": len(rows),
                "batch_tokens": sum(r.tokens for r in rows),
                "batch_chunks_added": added,
                "batch_chunks_removed": removed,
                "batch_seconds": timer.seconds,
            }
        )


@dg.asset(
    partitions_def=documents_partitions,
    deps=[chunks],
    group_name="indexing",
    kinds={"python", "pgvector"},
    backfill_policy=dg.BackfillPolicy.single_run(),
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
        with database.connect() as conn:
            keys = _split_failed(context, conn, context.partition_keys)
            call = CallContext(context.run.run_id, keys)
            context.log.info(
                f"[{call.correlation_id}] embedding the chunks of {len(keys)} document(s)"
            )
            paths = documents.paths(conn, keys)
            with embedder.client(call) as client, conn.transaction():
                report = stages.embed_batch(conn, client, keys)
                errors = _embed_errors(report, paths, context.run.run_id)
                failed = {e.partition_key for e in errors}
                ingest_errors.resolve(conn, [k for k in keys if k not in failed], ("embed",))
                ingest_errors.record(conn, errors)
                # Done, with their vectors or with the reason some are missing.
                documents.mark_indexed(conn, keys)
            totals = chunk_store.counts(conn, keys)
            circuit = save_circuit(conn, client)

        missing = Counter(c.partition_key for c, _ in report.rejected + report.unembedded)
        reasons = {e.partition_key: e.reason for e in errors}
        for key in keys:
            count, _ = totals.get(key, (0, 0))
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
                **circuit,
            }
        )


def _embed_errors(
    report: stages.EmbedReport, paths: dict[str, str], run_id: str
) -> list[IngestError]:
    """One dead-letter row per document that has chunks without a vector, saying why."""
    by_key: dict[str, list[tuple[PendingChunk, str]]] = {}
    for chunk, reason in report.rejected + report.unembedded:
        by_key.setdefault(chunk.partition_key, []).append((chunk, reason))
    errors = []
    for key, missing in by_key.items():
        why = "; ".join(sorted({reason for _, reason in missing}))
        first = ", ".join(str(chunk.id) for chunk, _ in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        errors.append(
            IngestError(
                key,
                paths.get(key, key),
                "embed",
                f"{len(missing)} chunk(s) without a vector ({first}{more}): {why}",
                run_id=run_id,
            )
        )
    return errors
