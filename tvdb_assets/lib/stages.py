"""The pipeline's work on a batch of documents, free of Dagster.

Each stage takes a whole batch, so the assets (and the benchmark's bare loop) do one
transaction and one COPY per stage, and embedding requests are packed across documents.
"""

import hashlib
import time
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import psycopg

from tvdb_assets.lib import ahead, clients, settings, workers
from tvdb_assets.lib.chunking import chunk_markdown
from tvdb_assets.lib.embedding import Embedder, MockEmbedder
from tvdb_assets.lib.errors import BudgetExceeded, DocumentError, ServiceError
from tvdb_assets.lib.ids import chunk_id, sha256_text
from tvdb_assets.lib.models import ParsedDocument
from tvdb_assets.lib.parsing import Parser
from tvdb_assets.lib.parsing.base import char_limit, storable
from tvdb_assets.lib.parsing.detect import Kind, detect_kind
from tvdb_assets.lib.store import chunks as chunk_store
from tvdb_assets.lib.store import embedding_cache, embeddings, parse_cache
from tvdb_assets.lib.store.chunks import ChunkRow
from tvdb_assets.lib.store.connection import lock_partitions
from tvdb_assets.lib.store.documents import DocumentRow
from tvdb_assets.lib.store.embeddings import PendingChunk
from tvdb_assets.lib.store.inbox_files import InboxFile
from tvdb_assets.lib.store.ingest_errors import IngestError
from tvdb_assets.lib.uploads import UploadStore


@dataclass(frozen=True, slots=True)
class ParseOutcome:
    file: InboxFile
    document: DocumentRow | None
    error: IngestError | None
    seconds: float
    cached: bool = False


def _parse_one(
    uploads: UploadStore, parser: Parser, file: InboxFile, cached: ParsedDocument | None = None
) -> ParseOutcome:
    started = time.perf_counter()
    try:
        data = uploads.read(file.path)
    except OSError as exc:
        error = IngestError(
            file.partition_key,
            file.shown,
            "read",
            f"cannot read upload ({exc.strerror})",
            file.sha256,
        )
        return ParseOutcome(file, None, error, time.perf_counter() - started)
    # The hash of the bytes actually parsed: the upload may have changed since it was listed.
    sha = hashlib.sha256(data).hexdigest()
    try:
        parsed = (
            cached
            if cached is not None and sha == file.sha256
            else storable(parser.parse(file.shown, data))
        )
    except DocumentError as exc:
        error = IngestError(file.partition_key, file.shown, exc.stage, exc.reason, file.sha256)
        return ParseOutcome(file, None, error, time.perf_counter() - started)
    except (ServiceError, BudgetExceeded) as exc:
        # Real mode: the service could not parse it now; this document fails, not the batch.
        error = IngestError(file.partition_key, file.shown, "parse", str(exc), file.sha256)
        return ParseOutcome(file, None, error, time.perf_counter() - started)
    if len(parsed.markdown) > char_limit(len(data)):
        # Checked for every parser, the paid ones too: such text would cost a fortune to embed.
        reason = (
            f"text far larger than the file ({len(parsed.markdown):,} characters from "
            f"{len(data):,} bytes): a compression bomb?"
        )
        error = IngestError(file.partition_key, file.shown, "parse", reason, file.sha256)
        return ParseOutcome(file, None, error, time.perf_counter() - started)
    document = DocumentRow(
        file.partition_key, file.shown, sha, len(data), parsed.mime, parsed.parser,
        parsed.pages, parsed.page_starts, parsed.markdown, parsed.fallback,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    return ParseOutcome(file, document, None, seconds, cached=parsed is cached)


def parse_batch(
    uploads: UploadStore,
    parser: Parser,
    files: Sequence[InboxFile],
    conn: psycopg.Connection | None = None,
) -> list[ParseOutcome]:
    """Parse every file; a bad one becomes an error outcome and never stops the others.

    A parser that costs money (`cacheable`) is asked only for content it has not parsed
    before (any file, any name), several documents at a time (`concurrency`), and what it
    returns is cached; local parsing is CPU-bound and spreads over processes instead.
    """
    if parser.runs_locally:
        return _parse_locally(uploads, parser, files)
    if not parser.cacheable or conn is None:
        return [_parse_one(uploads, parser, f) for f in files]

    known = parse_cache.lookup(conn, parser.name, (f.sha256 for f in files))
    outcomes: list[ParseOutcome | None] = [None] * len(files)
    with ThreadPoolExecutor(max_workers=max(1, parser.concurrency)) as pool:
        futures = {
            pool.submit(_parse_one, uploads, parser, f, known.get(f.sha256)): i
            for i, f in enumerate(files)
        }
        for future in as_completed(futures):
            outcome = outcomes[futures[future]] = future.result()
            doc = outcome.document
            if doc is not None and not outcome.cached and not doc.fallback:
                # Kept the moment it is paid for: whatever fails later, no one pays twice.
                parse_cache.save(conn, [(doc.sha256, _as_parsed(doc))])
                conn.commit()
    return [o for o in outcomes if o is not None]


def _parse_locally(
    uploads: UploadStore, parser: Parser, files: Sequence[InboxFile]
) -> list[ParseOutcome]:
    """Parse on this machine, or take what the previous run parsed ahead (`work_ahead`)
    from exactly these files."""
    made = ahead.take(_parsed(parser), [f.partition_key for f in files])
    ready = {
        f.partition_key: made[f.partition_key]
        for f in files
        if f.partition_key in made and made[f.partition_key].file == f
    }
    rest = [f for f in files if f.partition_key not in ready]
    computed = iter(_parse_here(uploads, parser, rest))
    return [ready.get(f.partition_key) or next(computed) for f in files]


def _parse_here(
    uploads: UploadStore, parser: Parser, files: Sequence[InboxFile]
) -> list[ParseOutcome]:
    """A batch with any PDF or HTML, whose cost is not bounded by their size, goes through
    guarded workers: each document within a time and memory limit. Text and markdown alone
    need no guard and go as before (the pool if it pays)."""
    work = partial(_parse_one, uploads, parser)
    if not any(_risky(uploads, f) for f in files):
        return workers.map_in_order(work, files)
    limits = workers.Limits(settings.parse_seconds(), settings.parse_memory_mb())
    outcomes = []
    for file, result in zip(files, workers.map_guarded(work, files, limits), strict=True):
        if isinstance(result, workers.Exceeded):
            reason = result.reason
            if result.limit:
                detail = f"; {result.detail}" if result.detail else ""
                reason += f" to parse (limits: TVDB_PARSE_TIMEOUT_S, _MEMORY_MB{detail})"
            error = IngestError(file.partition_key, file.shown, "parse", reason, file.sha256)
            result = ParseOutcome(file, None, error, 0.0)
        outcomes.append(result)
    return outcomes


def _parsed(parser: Parser) -> Hashable:
    """Where parse results made ahead wait: per parser settings."""
    return ("parsed", parser.settings)


def _risky(uploads: UploadStore, file: InboxFile) -> bool:
    try:
        kind = detect_kind(file.shown, uploads.head(file.path))
    except (DocumentError, OSError):
        return False  # fails at once in `_parse_one`, with its reason
    return kind in (Kind.PDF, Kind.HTML)


def _as_parsed(row: DocumentRow) -> ParsedDocument:
    return ParsedDocument(row.markdown, row.parser, row.mime, row.pages, row.page_starts)


# Markdown characters whose mock vectors one job ahead makes (~16 MB of text, about 10,000
# chunks, 60 MB of vectors): the vectors wait in memory until `embeddings` takes them.
AHEAD_EMBED_CHARS = 16_000_000
# Upload bytes of the next run's batch that one job ahead parses: its text waits in memory,
# beside the batch being stored, until that run takes it.
AHEAD_PARSE_BYTES = 32 * 1024 * 1024


# What the workers' fork server imports first (`workers.start`): this module's imports, the
# tokenizer and its token lengths, loaded once for every worker.
WORKER_PRELOAD = "tvdb_assets.lib.worker_preload"


@dataclass(frozen=True, slots=True)
class ChunkSettings:
    max_tokens: int = 512
    overlap_tokens: int = 64


def _chunk_one(settings: ChunkSettings, document: DocumentRow) -> list[ChunkRow]:
    pieces = chunk_markdown(
        document.markdown,
        page_starts=document.page_starts,
        max_tokens=settings.max_tokens,
        overlap_tokens=settings.overlap_tokens,
    )
    rows = []
    for piece in pieces:
        text_hash = sha256_text(piece.text)
        rows.append(
            ChunkRow(
                chunk_id(document.partition_key, piece.ord, text_hash),
                document.partition_key,
                piece.ord,
                piece.heading_path,
                piece.text,
                text_hash,
                piece.tokens,
                piece.page_start,
                piece.page_end,
            )  # fmt: skip
        )
    return rows


def chunk_batch(settings: ChunkSettings, documents: Sequence[DocumentRow]) -> list[list[ChunkRow]]:
    """Chunk each document (in document order), spread over processes for large batches;
    what `work_ahead` already cut from the same markdown with these settings is taken."""
    made = ahead.take(("prepared", settings), [d.partition_key for d in documents])
    ready = {}
    for document in documents:
        found = made.get(document.partition_key)
        if found is not None and found[0] == _content_key(document):
            ready[document.partition_key] = found
    rest = [d for d in documents if d.partition_key not in ready]
    computed = iter(workers.map_in_order(partial(_chunk_one, settings), rest))
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


@dataclass(frozen=True)
class NextBatch:
    """The files of the run that comes after this one, to parse ahead when the parser is
    local (a paid parser is asked only by the run that needs the text)."""

    uploads: UploadStore
    parser: Parser
    files: Sequence[InboxFile]


@dataclass(frozen=True)
class HeadStart:
    """How an ingest's runs parse, chunk and embed, known before its first run starts:
    the workers begin on that run's files while Dagster creates it. The run takes what
    matches its own parser, settings and files, and computes the rest as always."""

    uploads: UploadStore
    parser: Parser
    settings: ChunkSettings
    mock_dims: int | None

    @classmethod
    def for_ingest(
        cls, parser: clients.ParserSettings, embedder: clients.EmbedderSettings
    ) -> "HeadStart | None":
        """With the clients `tvdb ingest`'s runs will build (its modes, default settings);
        None when a service parses, which only a run may ask."""
        if parser.mode != "mock":
            return None
        mock_dims = embedder.dims if embedder.mode == "mock" else None
        return cls(clients.upload_store(), clients.parser(parser), ChunkSettings(), mock_dims)

    def begin(self, files: Sequence[InboxFile]) -> None:
        following = NextBatch(self.uploads, self.parser, files)
        work_ahead([], self.settings, self.mock_dims, following)


def work_ahead(
    documents: Sequence[DocumentRow],
    settings: ChunkSettings,
    mock_dims: int | None,
    following: NextBatch | None = None,
) -> None:
    """Start, in the background (`ahead`): chunking these just-parsed documents, and
    embedding their chunks when the run's embedder is the mock; then parsing, chunking and
    embedding the next run's files. The assets take the results instead of waiting for the
    workers, and the workers never wait for this process to store a batch."""
    files = []
    if following is not None and following.parser.runs_locally:
        budget = AHEAD_PARSE_BYTES
        for file in following.files:
            budget -= file.bytes
            if budget < 0:
                break  # the rest is parsed by its own run: two batches of text in memory
            files.append(file)
    ahead.retain({d.partition_key for d in documents} | {f.partition_key for f in files})
    job = ahead.Job()
    prepared = ("prepared", settings)
    now = set(job.claim(prepared, [d.partition_key for d in documents]))
    now_docs = [d for d in documents if d.partition_key in now]
    if following is not None and files:
        parse = set(job.claim(_parsed(following.parser), [f.partition_key for f in files]))
        files = [f for f in files if f.partition_key in parse]
    chunk_next = set(job.claim(prepared, [f.partition_key for f in files]))

    def work() -> None:
        _prepare(job, settings, mock_dims, now_docs)
        if not files or following is None:
            return
        outcomes = _parse_here(following.uploads, following.parser, files)
        job.publish(_parsed(following.parser), {o.file.partition_key: o for o in outcomes})
        parsed = [o.document for o in outcomes if o.document is not None]
        _prepare(job, settings, mock_dims, [d for d in parsed if d.partition_key in chunk_next])

    job.start(work)


def _prepare(
    job: ahead.Job,
    settings: ChunkSettings,
    mock_dims: int | None,
    documents: Sequence[DocumentRow],
) -> None:
    # Mock vectors only for the first documents up to a bound; the rest are embedded as
    # always when `embeddings` runs.
    budget = AHEAD_EMBED_CHARS if mock_dims is not None else 0
    items = []
    for document in documents:
        budget -= len(document.markdown)
        items.append((document, mock_dims if budget >= 0 else None))
    results = workers.map_all(partial(_prepare_one, settings), items)
    job.publish(
        ("prepared", settings),
        {d.partition_key: r for d, r in zip(documents, results, strict=True)},
    )


def _prepare_one(
    settings: ChunkSettings, item: tuple[DocumentRow, int | None]
) -> tuple[tuple[str, str], list[ChunkRow], np.ndarray | None]:
    document, mock_dims = item
    rows = _chunk_one(settings, document)
    if mock_dims is None or not rows:
        return _content_key(document), rows, None
    vectors = MockEmbedder(mock_dims).embed([r.text for r in rows], [r.tokens for r in rows])
    return _content_key(document), rows, vectors


def _content_key(document: DocumentRow) -> tuple[str, str]:
    return document.partition_key, sha256_text(document.markdown)


def _dims(vectors: dict[Hashable, np.ndarray]) -> int:
    return len(next(iter(vectors.values())))


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
    rejected: list[tuple[PendingChunk, str]] = field(default_factory=list)  # refused: no vector
    unembedded: list[tuple[PendingChunk, str]] = field(default_factory=list)  # failed, no fallback


# Distinct texts embedded, cached and written at a time: bounds memory (2,048 vectors of
# 1,536 floats are 12 MB) and is the most inputs one embeddings request may carry.
EMBED_SLICE = 2048


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
