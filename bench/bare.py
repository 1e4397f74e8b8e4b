"""The bare limit: the pipeline's own stages on the corpus, without Dagster.

read -> parse -> chunk -> mock-embed -> COPY, in batches of the pipeline's batch size and
through `lib.stages`, so parsing and chunking use the same process pool the assets use.
"""

import time
from pathlib import Path

from bench.report import Record
from tvdb_assets.lib import settings, stages, store, workers
from tvdb_assets.lib.embedding import MockEmbedder
from tvdb_assets.lib.ids import partition_key_for
from tvdb_assets.lib.parsing import LocalParser
from tvdb_assets.lib.store import chunks as chunk_store
from tvdb_assets.lib.store import documents
from tvdb_assets.lib.store.registry import InboxFile
from tvdb_assets.lib.uploads import LocalInbox


def run(corpus: Path, database_url: str) -> Record:
    uploads = LocalInbox(corpus)
    listing = sorted(uploads.list(), key=lambda info: info.path)
    parser, embedder, chunking = LocalParser(), MockEmbedder(), stages.ChunkSettings()
    batch_size = settings.batch_size()
    seconds = {"parse": 0.0, "chunk": 0.0, "embed": 0.0}
    ok = failed = chunks = tokens = 0
    with store.connect(database_url) as conn:  # schema migrated before the clock starts
        started = time.perf_counter()
        for start in range(0, len(listing), batch_size):
            batch = listing[start : start + batch_size]
            t = time.perf_counter()
            files = [
                InboxFile(partition_key_for(i.path), i.path, i.bytes, i.mtime_ns, "") for i in batch
            ]
            outcomes = stages.parse_batch(uploads, parser, files)
            docs = [o.document for o in outcomes if o.document is not None]
            with conn.transaction():
                documents.replace(conn, docs, None)
            seconds["parse"] += time.perf_counter() - t
            t = time.perf_counter()
            rows = [row for doc_rows in stages.chunk_batch(chunking, docs) for row in doc_rows]
            with conn.transaction():
                chunk_store.replace(conn, [d.partition_key for d in docs], rows)
            seconds["chunk"] += time.perf_counter() - t
            t = time.perf_counter()
            with conn.transaction():
                stages.embed_batch(conn, embedder, [d.partition_key for d in docs])
            seconds["embed"] += time.perf_counter() - t
            ok, failed = ok + len(docs), failed + len(outcomes) - len(docs)
            chunks, tokens = chunks + len(rows), tokens + sum(r.tokens for r in rows)
        elapsed = time.perf_counter() - started
    megabytes = sum(i.bytes for i in listing) / 1e6
    return {
        "measurement": "bare_limit",
        "docs": len(listing),
        "docs_ok": ok,
        "docs_failed": failed,
        "chunks": chunks,
        "tokens": tokens,
        "seconds": round(elapsed, 2),
        "docs_per_s": round(len(listing) / elapsed, 1),
        "chunks_per_s": round(chunks / elapsed, 1),
        "mb_per_s": round(megabytes / elapsed, 2),
        "stage_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "batch_size": batch_size,
        "workers": workers.worker_count(),
        "process_pool": f"parse+chunk over {workers.worker_count()} spawned processes per batch "
        f"of >= {2 * workers.MIN_ITEMS_FOR_POOL} docs (lib.workers)",
        "embedder": f"{embedder.model} ({embedder.dims} dims), {embedder.calls} calls",
    }
