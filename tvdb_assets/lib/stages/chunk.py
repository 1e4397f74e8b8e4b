"""Stage 2: documents cut into token-bounded chunks in `chunks`."""

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import psycopg

from tvdb_assets.lib import ahead, settings, workers
from tvdb_assets.lib.chunking.rows import Cut, chunk_fields
from tvdb_assets.lib.embedding import MockEmbedder
from tvdb_assets.lib.ids import sha256_text
from tvdb_assets.lib.store import chunks as chunk_store
from tvdb_assets.lib.store import documents, ingest_errors
from tvdb_assets.lib.store.chunks import ChunkRow
from tvdb_assets.lib.store.documents import DocumentRow


@dataclass
class ChunkReport:
    """What `chunk_documents` did: each chunked document's rows, the documents skipped
    and why, the rows added, and the rows superseded (they serve until the new vectors land)."""

    chunked: dict[str, list[ChunkRow]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    added: int = 0
    superseded: int = 0


def chunk_documents(
    conn: psycopg.Connection, settings: "ChunkSettings", partition_keys: Sequence[str]
) -> ChunkReport:
    """Chunk these partitions' documents and store the chunks (replacing a document's
    older ones, keeping unchanged rows) in one transaction. A document that failed
    upstream, or has no parsed row, is skipped and said so."""
    skipped = ingest_errors.failed(conn, partition_keys, ("read", "parse"))
    docs = list(documents.load(conn, [k for k in partition_keys if k not in skipped]))
    loaded = {d.partition_key for d in docs}
    skipped |= {
        k: "no parsed document" for k in partition_keys if k not in skipped and k not in loaded
    }
    per_doc = chunk_batch(settings, docs)
    rows = [row for doc_rows in per_doc for row in doc_rows]
    with conn.transaction():
        added, superseded = chunk_store.replace(conn, [d.partition_key for d in docs], rows)
        documents.mark_chunked(conn, docs, settings.max_tokens, settings.overlap_tokens)
    chunked = {d.partition_key: r for d, r in zip(docs, per_doc, strict=True)}
    return ChunkReport(chunked, skipped, added, superseded)


@dataclass(frozen=True, slots=True)
class ChunkSettings:
    max_tokens: int = field(default_factory=lambda: settings.chunking()[0])
    overlap_tokens: int = field(default_factory=lambda: settings.chunking()[1])


def cut(settings: ChunkSettings, document: DocumentRow) -> Cut:
    """What a worker is sent to chunk the document (`chunking.rows`)."""
    return Cut(
        document.partition_key,
        document.markdown,
        document.page_starts,
        settings.max_tokens,
        settings.overlap_tokens,
    )


def chunk_batch(settings: ChunkSettings, documents: Sequence[DocumentRow]) -> list[list[ChunkRow]]:
    """Chunk each document (in document order), spread over processes for large batches;
    what `work_ahead` already cut from the same markdown with these settings is taken."""
    made = ahead.take(("prepared", settings), [d.partition_key for d in documents])
    ready = {}
    for document in documents:
        found = made.get(document.partition_key)
        if found is not None and found[0] == content_key(document):
            ready[document.partition_key] = found
    rest = [d for d in documents if d.partition_key not in ready]
    cuts = [cut(settings, d) for d in rest]
    sizes = [len(c.markdown) for c in cuts]
    computed = (
        [ChunkRow(*fields) for fields in rows]
        for rows in workers.map_in_order(chunk_fields, cuts, sizes)
    )
    out: list[list[ChunkRow]] = []
    vectors: dict[Hashable, np.ndarray] = {}
    for document in documents:
        if document.partition_key not in ready:
            out.append(next(computed))
            continue
        _, rows, prepared = ready[document.partition_key]
        out.append(rows)
        if prepared is not None:
            vectors |= {(r.id, r.text_sha256): v for r, v in zip(rows, prepared, strict=True)}
    if vectors:
        ahead.keep(("vectors", MockEmbedder.model, _dims(vectors)), vectors)
    return out


def content_key(document: DocumentRow) -> tuple[str, str]:
    return document.partition_key, sha256_text(document.markdown)


def _dims(vectors: dict[Hashable, np.ndarray]) -> int:
    return len(next(iter(vectors.values())))
