"""Stage 1: uploads parsed to markdown in `documents`, one error row per file that fails."""

from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from functools import partial

import psycopg

from tvdb_assets.lib import ahead, services, settings, workers
from tvdb_assets.lib.errors import DocumentError
from tvdb_assets.lib.models import ParsedDocument
from tvdb_assets.lib.parsing import Parser
from tvdb_assets.lib.parsing.detect import Kind, detect_kind
from tvdb_assets.lib.parsing.upload import Failed, Parsed, parse_upload
from tvdb_assets.lib.store import documents, inbox_files, ingest_errors, parse_cache
from tvdb_assets.lib.store.documents import DocumentRow
from tvdb_assets.lib.store.inbox_files import InboxFile
from tvdb_assets.lib.store.ingest_errors import IngestError
from tvdb_assets.lib.uploads import UploadStore


@dataclass
class ParseReport:
    """What `parse_documents` did: an outcome per registered file, every error recorded
    (unregistered partitions too), and the parser's circuit as it stands."""

    outcomes: list["ParseOutcome"]
    errors: list[IngestError]
    circuit: dict[str, str | int | float]

    @property
    def parsed(self) -> list[DocumentRow]:
        return [o.document for o in self.outcomes if o.document is not None]


def parse_documents(
    conn: psycopg.Connection,
    uploads: UploadStore,
    parser: Parser,
    partition_keys: Sequence[str],
    run_id: str | None,
) -> ParseReport:
    """Parse these partitions' uploads and store the documents: rows replaced, their read
    and parse errors resolved and new ones recorded, in one transaction."""
    files = inbox_files.load(conn, partition_keys)
    unknown = [
        IngestError(
            key, key, "read", "not in the inbox registry (was the upload deleted?)", run_id=run_id
        )
        for key in partition_keys
        if key not in files
    ]
    outcomes = parse_batch(uploads, parser, [files[k] for k in partition_keys if k in files], conn)
    parsed = [o.document for o in outcomes if o.document is not None]
    errors = unknown + [replace(o.error, run_id=run_id) for o in outcomes if o.error is not None]
    with conn.transaction():
        documents.replace(conn, parsed, run_id)
        ingest_errors.resolve(conn, [d.partition_key for d in parsed], ("read", "parse"))
        ingest_errors.record(conn, errors)
    return ParseReport(outcomes, errors, services.circuit_state(parser))


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
    known = {file.sha256: cached} if cached is not None else None
    return _outcome(file, parse_upload(uploads, parser, file.path, known))


def _outcome(file: InboxFile, result: Parsed | Failed) -> ParseOutcome:
    """A worker's plain result as the rows it stands for."""
    if isinstance(result, Failed):
        error = IngestError(
            file.partition_key, file.shown, result.stage, result.reason, file.sha256,
            transient=result.transient,
        )  # fmt: skip
        return ParseOutcome(file, None, error, result.seconds)
    parsed = result.document
    document = DocumentRow(
        file.partition_key, file.shown, result.sha256, result.bytes, parsed.mime,
        parsed.parser, parsed.pages, parsed.page_starts, parsed.markdown, parsed.fallback,
        parsed.fallback_reason,
    )  # fmt: skip
    return ParseOutcome(file, document, None, result.seconds, cached=result.cached)


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
    made = ahead.take(parsed_key(parser), [f.partition_key for f in files])
    ready = {
        f.partition_key: made[f.partition_key]
        for f in files
        if f.partition_key in made and made[f.partition_key].file == f
    }
    rest = [f for f in files if f.partition_key not in ready]
    computed = iter(parse_here(uploads, parser, rest))
    return [ready.get(f.partition_key) or next(computed) for f in files]


def parse_here(
    uploads: UploadStore, parser: Parser, files: Sequence[InboxFile]
) -> list[ParseOutcome]:
    """A batch with any PDF or HTML, whose cost is not bounded by their size, goes through
    guarded workers: each document within a time and memory limit. Text and markdown alone
    need no guard and go as before (the pool if it pays)."""
    # The workers are sent paths and send back plain values (`parsing.upload`).
    work = partial(parse_upload, uploads, parser)
    paths = [f.path for f in files]
    if not any(_risky(uploads, f) for f in files):
        results = workers.map_in_order(work, paths, [f.bytes for f in files])
        return [_outcome(f, r) for f, r in zip(files, results, strict=True)]
    limits = workers.Limits(settings.parse_seconds(), settings.parse_memory_mb())
    outcomes = []
    guarded = workers.map_guarded(work, paths, limits, [f.bytes for f in files])
    for file, result in zip(files, guarded, strict=True):
        if isinstance(result, workers.Exceeded):
            reason = result.reason
            if result.limit:
                detail = f"; {result.detail}" if result.detail else ""
                reason += f" to parse (limits: TVDB_PARSE_TIMEOUT_S, _MEMORY_MB{detail})"
            error = IngestError(file.partition_key, file.shown, "parse", reason, file.sha256)
            outcomes.append(ParseOutcome(file, None, error, 0.0))
        else:
            outcomes.append(_outcome(file, result))
    return outcomes


def parsed_key(parser: Parser) -> Hashable:
    """Where parse results made ahead wait: per parser settings."""
    return ("parsed", parser.settings)


def _risky(uploads: UploadStore, file: InboxFile) -> bool:
    try:
        kind = detect_kind(file.shown, uploads.head(file.path))
    except (DocumentError, OSError):
        return False  # fails at once in `parse_upload`, with its reason
    return kind in (Kind.PDF, Kind.HTML)


def _as_parsed(row: DocumentRow) -> ParsedDocument:
    return ParsedDocument(row.markdown, row.parser, row.mime, row.pages, row.page_starts)
