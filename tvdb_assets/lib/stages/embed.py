"""Stage 3: a vector per chunk in `embeddings`, paid for once per text."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import psycopg

from tvdb_assets.lib import ahead, services
from tvdb_assets.lib.embedding import Embedder
from tvdb_assets.lib.store import chunks as chunk_store
from tvdb_assets.lib.store import documents, embedding_cache, embeddings, ingest_errors
from tvdb_assets.lib.store.connection import lock_partitions
from tvdb_assets.lib.store.embeddings import PendingChunk
from tvdb_assets.lib.store.ingest_errors import IngestError


@dataclass
class EmbedReport:
    """What `embed_batch` did, added up slice by slice."""

    chunks: int = 0  # chunks that got a (new) vector
    from_cache: int = 0  # of which the vector came from embedding_cache
    embedded_texts: int = 0  # distinct texts the embedder returned vectors for
    tokens: int = 0  # tokens of those texts
    calls: int = 0  # requests the embedder made
    per_partition: dict[str, int] = field(default_factory=dict)
    fallbacks: dict[str, int] = field(default_factory=dict)  # hybrid: fallback vectors
    fallback_model: tuple[str, int] | None = None  # hybrid: their model and dims
    fallback_reasons: dict[str, str] = field(default_factory=dict)  # hybrid: why, per document
    rejected: list[tuple[PendingChunk, str]] = field(default_factory=list)  # refused: no vector
    unembedded: list[tuple[PendingChunk, str]] = field(default_factory=list)  # failed, no fallback
    # Filled in by `embed_documents`:
    embedded: list[str] = field(default_factory=list)  # the documents it worked on
    skipped: dict[str, str] = field(default_factory=dict)  # failed upstream: why
    errors: list[IngestError] = field(default_factory=list)  # recorded: chunks left without
    totals: dict[str, tuple[int, int]] = field(default_factory=dict)  # chunks and tokens
    circuit: dict[str, str | int | float] = field(default_factory=dict)


# Distinct texts embedded, cached and written at a time: bounds memory (2,048 vectors of
# 1,536 floats are 12 MB) and is the most inputs one embeddings request may carry.
EMBED_SLICE = 2048


def embed_documents(
    conn: psycopg.Connection,
    embedder: Embedder,
    partition_keys: Sequence[str],
    run_id: str | None,
) -> EmbedReport:
    """Give these documents' chunks their vectors and mark the documents indexed, in one
    transaction; chunks left without a vector are recorded, one error row per document.
    Documents that failed upstream are skipped and said so."""
    skipped = ingest_errors.failed(conn, partition_keys, ("read", "parse", "chunk"))
    keys = [k for k in partition_keys if k not in skipped]
    stored = documents.paths_and_hashes(conn, keys)
    with conn.transaction():
        report = embed_batch(conn, embedder, keys)
        errors = _errors(report, stored, run_id)
        failed = {e.partition_key for e in errors}
        ingest_errors.resolve(conn, [k for k in keys if k not in failed], ("embed",))
        ingest_errors.record(conn, errors)
        # The swap: a document cut anew stops serving its old chunks once its new ones
        # have their vectors (a text the service refused will never have one); while a
        # call that may pass is owed, the old ones keep serving.
        waiting = {e.partition_key for e in errors if e.transient}
        chunk_store.drop_superseded(conn, [k for k in keys if k not in waiting])
        # Done, with their vectors or with the reason some are missing.
        documents.mark_indexed(conn, keys)
    report.embedded, report.skipped, report.errors = keys, skipped, errors
    report.totals = chunk_store.counts(conn, keys)
    report.circuit = services.circuit_state(embedder)
    return report


def _errors(
    report: EmbedReport, stored: dict[str, tuple[str, str]], run_id: str | None
) -> list[IngestError]:
    """One dead-letter row per document that has chunks without a vector, saying why; a
    call that failed may pass (`transient`), a text the service refused will not."""
    by_key: dict[str, list[tuple[PendingChunk, str]]] = {}
    for chunk, reason in report.rejected + report.unembedded:
        by_key.setdefault(chunk.partition_key, []).append((chunk, reason))
    unanswered = {chunk.partition_key for chunk, _ in report.unembedded}
    errors = []
    for key, missing in by_key.items():
        why = "; ".join(sorted({reason for _, reason in missing}))
        first = ", ".join(str(chunk.id) for chunk, _ in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        reason = f"{len(missing)} chunk(s) without a vector ({first}{more}): {why}"
        path, sha = stored.get(key, (key, None))
        errors.append(
            IngestError(key, path, "embed", reason, sha, run_id, transient=key in unanswered)
        )
    return errors


def embed_batch(
    conn: psycopg.Connection, embedder: Embedder, partition_keys: Sequence[str]
) -> EmbedReport:
    """Give every chunk of these partitions a vector of the embedder's model.

    Vectors come from the cache when the same text was embedded before (in any document);
    only the remaining distinct texts are sent, packed into requests across documents. A
    chunk the service refuses gets no vector (never a zero one) and is reported. Where a
    call fails, a hybrid embedder's stand-ins are stored flagged, under their own model.
    The caller holds the transaction, so a failure leaves the previous vectors in place.
    """
    model, dims = embedder.model, embedder.dims
    lock_partitions(conn, partition_keys)
    pending = embeddings.pending_chunks(conn, partition_keys, model, dims)
    by_text: dict[str, list[PendingChunk]] = {}
    for c in pending:
        by_text.setdefault(c.text_sha256, []).append(c)
    hashes = list(by_text)
    report = EmbedReport()
    calls_before = embedder.calls
    with embeddings.index_maintenance(conn, model, dims, len(pending)):
        for at in range(0, len(hashes), EMBED_SLICE):
            part = {h: by_text[h] for h in hashes[at : at + EMBED_SLICE]}
            _embed_slice(conn, embedder, part, report)
    report.calls = embedder.calls - calls_before
    if report.fallback_model is not None:
        # Fallback vectors are few and not known in advance: inserted one by one into an
        # existing index, or counted towards building one.
        embeddings.build_index_when_due(conn, *report.fallback_model)
    return report


def _embed_slice(
    conn: psycopg.Connection,
    embedder: Embedder,
    by_text: dict[str, list[PendingChunk]],
    report: EmbedReport,
) -> None:
    model, dims = embedder.model, embedder.dims
    known = embedding_cache.lookup(conn, model, dims, by_text) if embedder.cacheable else {}
    # Vectors made ahead (mock mode) for exactly these chunks: fresh, as if embedded now.
    wanted = [(c.id, h) for h, chunks in by_text.items() for c in chunks[:1] if h not in known]
    made = ahead.take_kept(("vectors", model, dims), wanted)
    fresh: dict[str, np.ndarray] = {key[1]: made[key] for key in wanted if key in made}
    missing = [h for h in by_text if h not in known and h not in fresh]
    substitutes: dict[str, np.ndarray] = {}
    if missing:
        first = [by_text[h][0] for h in missing]
        texts = chunk_store.texts(conn, [c.id for c in first])
        result = embedder.embed_texts([texts[c.id] for c in first], [c.tokens for c in first])
        paid = {missing[i]: result.vectors[i] for i in result.embedded}
        if embedder.cacheable:
            embedding_cache.remember(conn, model, dims, paid)
        fresh |= paid
        stand_ins = result.stand_ins
        if stand_ins is not None:
            substitutes = {missing[i]: vector for i, vector in stand_ins.vectors.items()}
            report.fallback_model = (stand_ins.model, stand_ins.dims)
            for i in stand_ins.vectors:
                for c in by_text[missing[i]]:
                    report.fallback_reasons[c.partition_key] = result.missing[i]
        for i, reason in result.rejected.items():
            report.rejected += [(c, reason) for c in by_text[missing[i]]]
        for i, reason in result.missing.items():
            if missing[i] not in substitutes:
                report.unembedded += [(c, reason) for c in by_text[missing[i]]]
    report.embedded_texts += len(fresh)
    report.tokens += sum(by_text[h][0].tokens for h in fresh)

    rows, flagged = [], []
    for text_hash, chunks in by_text.items():
        vector = fresh.get(text_hash)
        if vector is None:
            vector = known.get(text_hash)
        if vector is not None:
            rows += [(c.id, c.partition_key, vector) for c in chunks]
            report.from_cache += len(chunks) if text_hash in known else 0
            counts = report.per_partition
        elif text_hash in substitutes:
            flagged += [(c.id, c.partition_key, substitutes[text_hash]) for c in chunks]
            counts = report.fallbacks
        else:
            continue
        for c in chunks:
            counts[c.partition_key] = counts.get(c.partition_key, 0) + 1
    embeddings.write(conn, model, dims, rows)
    report.chunks += len(rows)
    if flagged and report.fallback_model is not None:
        embeddings.write(conn, *report.fallback_model, flagged, fallback=True)
