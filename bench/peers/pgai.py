"""pgai peer: pgai 0.12.1 in library mode, its own trigger queue and vectorizer worker.

`pgai.install` puts the `ai` schema into the database; a vectorizer on `pgai_peer.documents`
loads the text column (`ai.loading_column`, `ai.parsing_none`: the text is already plain,
read by `plain.read_text` like every other peer), cuts it with pgai's default chunker, the
recursive character splitter, at `plain.CHUNK_CHARS`/`plain.OVERLAP_CHARS` (the plain
`\\n\\n` character splitter leaves paragraphs longer than a chunk whole, up to 89k characters
on a test corpus), and writes to a table of its own. Incremental indexing is pgai's: the
upsert only touches rows whose text changed, the source table's trigger queues just those,
and one `Worker(once=True)` run drains the queue; deleted files are deleted rows, whose
chunks the trigger drops.

pgai has no mock or in-process embedder (the worker accepts only its OpenAI, Ollama,
VoyageAI and LiteLLM configs), so the vectorizer is an ordinary `ai.embedding_openai` one
and the OpenAI client in this process is pointed (OPENAI_BASE_URL) at a loopback HTTP server
in a thread here that answers /v1/embeddings from `plain.embed`. pgai's real OpenAI path
stays in the measurement: tiktoken length checks, a per-character token estimate, the JSON
response parsed number by number through ijson, binary COPY. So does the stand-in server's
own work (`plain.embed`, then about 1.8 s of JSON encoding per 5,000 chunks), which a real
provider would do elsewhere. pgai's tiktoken files are the ones it ships (TIKTOKEN_CACHE_DIR;
otherwise tiktoken downloads them), and its lazily imported modules are loaded before the
clock. The worker runs with pgai's defaults: 50 rows a batch, concurrency 1.
"""

import asyncio
import importlib.util
import json
import logging
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import structlog

# This file is pgai.py: its directory, first on sys.path, would shadow the pgai package.
sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]
import pgai  # noqa: E402
from pgai.vectorizer import Worker  # noqa: E402
from pgai.vectorizer.vectorizer import TIKTOKEN_CACHE_DIR  # noqa: E402

_spec = importlib.util.spec_from_file_location("plain", Path(__file__).parents[1] / "plain.py")
plain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plain)

MODEL = "text-embedding-3-small"
KEY_NAME = "PGAI_PEER_LOOPBACK_KEY"
SOURCE = """
create schema if not exists pgai_peer;
create table if not exists pgai_peer.documents (path text primary key, contents text not null)
"""
VECTORIZER = f"""
select ai.create_vectorizer(
    'pgai_peer.documents'::regclass,
    name => 'pgai_peer',
    if_not_exists => true,
    loading => ai.loading_column('contents'),
    parsing => ai.parsing_none(),
    chunking => ai.chunking_recursive_character_text_splitter({plain.CHUNK_CHARS},
                                                              {plain.OVERLAP_CHARS}),
    embedding => ai.embedding_openai('{MODEL}', {plain.DIMS},
                                     api_key_name => '{KEY_NAME}'),
    destination => ai.destination_table(target_schema => 'pgai_peer',
                                        target_table => 'chunks', view_name => 'chunks_view'),
    indexing => ai.indexing_none()
);
"""
HOW = (
    "pgai library mode: upsert of changed rows, trigger queue, one Worker(once=True) run at"
    " pgai's defaults (50 rows a batch, concurrency 1), recursive character splitter;"
    " ai.embedding_openai pointed at an in-process loopback /v1/embeddings serving plain.embed"
)
UPSERT = """
insert into pgai_peer.documents as d (path, contents) values (%s, %s)
on conflict (path) do update set contents = excluded.contents
where d.contents is distinct from excluded.contents
"""


class Embeddings(BaseHTTPRequestHandler):
    """POST /v1/embeddings in OpenAI's JSON format, vectors from `plain.embed`."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        vectors = plain.embed(request["input"]).tolist()
        body = json.dumps(
            {
                "object": "list",
                "model": request["model"],
                "data": [
                    {"object": "embedding", "index": i, "embedding": v}
                    for i, v in enumerate(vectors)
                ],
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(corpus: str, database_url: str) -> None:
    structlog.configure(  # pgai logs through structlog; keep stdout for the JSON line
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), Embeddings)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    os.environ[KEY_NAME] = "unused"
    os.environ["TIKTOKEN_CACHE_DIR"] = TIKTOKEN_CACHE_DIR
    # Loaded before the clock, as a running worker (or a peer importing them at the top) has.
    importlib.import_module("tiktoken").encoding_for_model(MODEL)
    importlib.import_module("openai")
    importlib.import_module("langchain_text_splitters")

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("create extension if not exists vector")
        pgai.install(database_url)  # idempotent; setup is before the clock, as in bare.py
        conn.execute(SOURCE)
        vectorizer_id = conn.execute(VECTORIZER).fetchone()[0]
        root = Path(corpus)
        paths = sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.suffix.lower() in plain.TEXT_SUFFIXES and p.is_file()
        )
        started = time.perf_counter()
        with conn.transaction():
            rows = ((p, plain.read_text(str(root / p))) for p in paths)
            conn.cursor().executemany(UPSERT, rows)
            conn.execute("delete from pgai_peer.documents where path <> all(%s)", [paths])
        error = asyncio.run(Worker(database_url, once=True, vectorizer_ids=[vectorizer_id]).run())
        if error is not None:
            raise error
        seconds = time.perf_counter() - started
        chunks = conn.execute("select count(*) from pgai_peer.chunks").fetchone()[0]
        failed = conn.execute(  # text the worker left without chunks: queued, retrying, failed
            "select count(*) from pgai_peer.documents d where contents <> '' and not exists"
            " (select from pgai_peer.chunks c where c.path = d.path)"
        ).fetchone()[0]
    server.shutdown()
    print(
        json.dumps(
            {
                "system": "pgai",
                "version": pgai.__version__,
                "docs": len(paths),
                "docs_failed": failed,
                "chunks": chunks,
                "seconds": round(seconds, 2),
                "how": HOW,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
