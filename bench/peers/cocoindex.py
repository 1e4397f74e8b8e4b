"""CocoIndex peer: CORPUS_DIR -> chunks + pgvector rows in DATABASE_URL, incrementally.

    bench/.peers/cocoindex/bin/python bench/peers/cocoindex.py CORPUS_DIR DATABASE_URL

Written against the CocoIndex 1.x API (an App whose main function mounts one memoized
component per file), not the 0.x flow builder most tutorials show. The files come from
CocoIndex's own `localfs.walk_dir`; each file's bytes are decoded as `plain.read_text`
decodes them, and HTML goes through `plain.html_to_text` in a `@coco.fn`, so every system
embeds the same text. CocoIndex's `RecursiveSplitter` cuts at `plain.CHUNK_CHARS` with
`plain.OVERLAP_CHARS` overlap (it counts bytes: the same as characters for ASCII text).
`plain.embed` runs as a batched CocoIndex function, so the engine gathers the chunks of
files in flight into one call. Rows go to a `postgres` table target (asyncpg; CocoIndex
creates the table and its `vector(1536)` column).

CocoIndex 1.x keeps its own state (memos, which rows it wrote) in LMDB, not in Postgres:
no setting puts it in DATABASE_URL. It lives under this venv, in a folder named after the
URL, and is wiped when the export table is missing, so a fresh database at a reused URL
starts from nothing. A second run is CocoIndex's own re-ingest: a file whose mtime (or,
failing that, content hash) is unchanged is a memo hit, not read, split or embedded.

DATABASE_URL goes to asyncpg as given: asyncpg reads a unix-socket `?host=/dir` itself, and
CocoIndex's Rust engine never connects to Postgres in 1.x, so nothing is converted.
CocoIndex's defaults stand (1024 components in flight, no batch size limit, pgvector values
sent as text literals), except its usage tracking, an HTTP call per run, which is off.
"""

import asyncio
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated

# This file is cocoindex.py: its folder, first on sys.path, would shadow the package.
sys.path.remove(os.path.dirname(os.path.realpath(__file__)))
os.environ["COCOINDEX_DISABLE_USAGE_TRACKING"] = "1"  # no usage-report HTTP calls in the timing

import asyncpg
import cocoindex as coco
import numpy as np
from cocoindex.connectors import localfs, postgres
from cocoindex.ops.text import RecursiveSplitter
from cocoindex.resources.file import FileLike
from cocoindex.resources.schema import VectorSchema
from numpy.typing import NDArray

_spec = importlib.util.spec_from_file_location("plain", Path(__file__).parent.parent / "plain.py")
plain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plain)

TABLE = "cocoindex_chunks"
PG = coco.ContextKey[asyncpg.Pool]("bench_pg")
SPLITTER = RecursiveSplitter()


class TextFiles:
    """The walk's file filter: every folder, files with a `plain.TEXT_SUFFIXES` suffix."""

    def is_dir_included(self, path: PurePath) -> bool:
        return True

    def is_file_included(self, path: PurePath) -> bool:
        return path.suffix.lower() in plain.TEXT_SUFFIXES


@dataclass
class ChunkRow:
    filename: str
    location: int
    text: str
    embedding: Annotated[NDArray[np.float32], VectorSchema(np.dtype(np.float32), plain.DIMS)]


@coco.fn
def html_to_text(html: str) -> str:
    return plain.html_to_text(html)


@coco.fn.as_async(batching=True)
def embed(texts: list[str]) -> list[NDArray[np.float32]]:
    return list(plain.embed(texts))


@coco.fn(memo=True)
async def index_file(file: FileLike, table: postgres.TableTarget[ChunkRow]) -> None:
    text = (await file.read()).decode("utf-8", errors="replace").replace("\x00", "")
    if file.file_path.suffix.lower() in (".html", ".htm"):
        text = html_to_text(text)
    chunks = SPLITTER.split(text, plain.CHUNK_CHARS, chunk_overlap=plain.OVERLAP_CHARS)
    vectors = await coco.map(embed, [chunk.text for chunk in chunks])
    name = file.file_path.path.as_posix()
    for chunk, vector in zip(chunks, vectors, strict=True):
        table.declare_row(row=ChunkRow(name, chunk.start.char_offset, chunk.text, vector))


@coco.fn
async def app_main(corpus: Path) -> None:
    schema = await postgres.TableSchema.from_class(ChunkRow, primary_key=["filename", "location"])
    table = await postgres.mount_table_target(PG, TABLE, schema)
    files = localfs.walk_dir(corpus, recursive=True, path_matcher=TextFiles())
    await coco.mount_each(index_file, files.items(), table)


async def run(corpus: Path, database_url: str) -> dict:
    state = Path(sys.prefix) / "state" / hashlib.sha256(database_url.encode()).hexdigest()[:16]
    async with asyncpg.create_pool(database_url, min_size=1) as pool:
        await pool.execute("CREATE EXTENSION IF NOT EXISTS vector")
        if await pool.fetchval("SELECT to_regclass($1)", TABLE) is None:
            shutil.rmtree(state, ignore_errors=True)  # state for a table that is gone

        @coco.lifespan
        def _environment(builder: coco.EnvironmentBuilder):
            builder.settings.db_path = state
            builder.provide(PG, pool)
            yield

        app = coco.App(coco.AppConfig(name="bench"), app_main, corpus)
        async with coco.runtime():
            started = time.perf_counter()
            update = app.update()
            await update.result()
            seconds = time.perf_counter() - started
        files = update.stats().by_component.get("index_file", coco.ComponentStats(0, 0, 0, 0, 0, 0))
        chunks = await pool.fetchval(f"SELECT count(*) FROM {TABLE}")
    return {
        "system": "cocoindex",
        "version": coco.__version__,
        "docs": files.num_finished - files.num_deletes,  # deletes: files gone since last run
        "docs_failed": files.num_errors,
        "chunks": chunks,
        "seconds": round(seconds, 2),
        "how": "localfs.walk_dir -> memoized component per file (plain decode, html_to_text) "
        f"-> RecursiveSplitter {plain.CHUNK_CHARS}/{plain.OVERLAP_CHARS} -> batched "
        "plain.embed -> postgres table target (asyncpg); engine state in LMDB",
    }


def main() -> int:
    corpus, database_url = sys.argv[1:]
    print(json.dumps(asyncio.run(run(Path(corpus).resolve(), database_url))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
