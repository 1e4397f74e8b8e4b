"""Work done early, ahead of the stages that need it: chunks and mock vectors of what was
just parsed, and the next run's files parsed too, on the worker pool while this process
stores a batch (`lib.ahead` holds the results until the stages take them)."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg

from tvdb_assets.lib import ahead, clients, workers
from tvdb_assets.lib.chunking.rows import ChunkFields, prepare
from tvdb_assets.lib.parsing import Parser
from tvdb_assets.lib.stages.chunk import ChunkSettings, cut
from tvdb_assets.lib.stages.parse import parse_here, parsed_key
from tvdb_assets.lib.store import inbox_files
from tvdb_assets.lib.store.chunks import ChunkRow
from tvdb_assets.lib.store.documents import DocumentRow
from tvdb_assets.lib.store.inbox_files import InboxFile
from tvdb_assets.lib.uploads import UploadStore

PrepareResult = tuple[str, list[ChunkFields], np.ndarray | None]

# Markdown characters whose mock vectors one job ahead makes (~16 MB of text, about 10,000
# chunks, 60 MB of vectors): the vectors wait in memory until `embeddings` takes them.
AHEAD_EMBED_CHARS = 16_000_000
# Upload bytes of the next run's batch that one job ahead parses: its text waits in memory,
# beside the batch being stored, until that run takes it.
AHEAD_PARSE_BYTES = 32 * 1024 * 1024


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
        parse = set(job.claim(parsed_key(following.parser), [f.partition_key for f in files]))
        files = [f for f in files if f.partition_key in parse]
    chunk_next = set(job.claim(prepared, [f.partition_key for f in files]))

    def work() -> None:
        _prepare(job, settings, mock_dims, now_docs)
        if not files or following is None:
            return
        outcomes = parse_here(following.uploads, following.parser, files)
        job.publish(parsed_key(following.parser), {o.file.partition_key: o for o in outcomes})
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
    results = workers.map_all(
        prepare,
        [(cut(settings, d), dims) for d, dims in items],
        [len(d.markdown) for d, _ in items],
    )
    job.publish(
        ("prepared", settings),
        {d.partition_key: _prepared(d, r) for d, r in zip(documents, results, strict=True)},
    )


def _prepared(
    document: DocumentRow, result: PrepareResult | workers.Exceeded
) -> tuple[tuple[str, str], list[ChunkRow], np.ndarray | None] | workers.Exceeded:
    """A worker's plain values as what `chunk_batch` takes: the content they were cut
    from, the rows, the vectors."""
    if isinstance(result, workers.Exceeded):
        return result  # never taken (`ahead.take`): the stage chunks it itself
    markdown_sha, fields, vectors = result
    return (document.partition_key, markdown_sha), [ChunkRow(*f) for f in fields], vectors


def after_parse(
    conn: psycopg.Connection,
    documents: Sequence[DocumentRow],
    uploads: UploadStore,
    parser: Parser,
    settings: ChunkSettings,
    mock_dims: int | None,
) -> None:
    """`work_ahead` on the documents a run just stored and on the run after it, which its
    runner named (`ahead.set_next_batch`)."""
    coming = ahead.next_batch()
    found = inbox_files.load(conn, coming) if coming else {}
    files = [found[k] for k in coming if k in found]
    work_ahead(documents, settings, mock_dims, NextBatch(uploads, parser, files))
