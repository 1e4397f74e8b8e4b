"""LangChain peer: the indexing API, `index()`, into PGVector with a SQL record manager.

    bench/.peers/langchain/bin/python bench/peers/langchain.py CORPUS_DIR DATABASE_URL

Why these pieces:
- `langchain_core.indexing.index()` is LangChain's own incremental ingest. It hashes every chunk
  (text + metadata), asks the record manager which hashes it has and writes only the new ones, so
  a second run over unchanged files is LangChain's re-ingest (added 0). Batch sizes are left at
  their defaults (100 chunks per write, 1000 per cleanup), and so is the hash (SHA-1, which makes
  LangChain warn once on stderr).
- `cleanup="full"`, not "incremental": every run hands `index()` the whole corpus, which is what
  "full" asks for, and it then deletes, after the last batch, every chunk this run did not see
  (changed files' old chunks and deleted files' chunks alike). "incremental" cleans up inside
  each batch, by the batch's sources, so a file of more than one batch of chunks has its later
  chunks deleted and re-embedded on every re-run (documented in `index()`; langchain#32612): on
  493 files it re-added 2377 of 6066 unchanged chunks, and it never drops a deleted file's chunks.
- `SQLRecordManager` lives in langchain-classic since LangChain 1.0 (langchain-community's copy
  depends on langchain-classic anyway); it keeps its `upsertion_record` table in the same database.
- `PGVector` (langchain-postgres) creates the vector extension if it is missing and its tables
  `langchain_pg_collection` and `langchain_pg_embedding` (vector(1536), JSONB metadata); it
  upserts and deletes by id, which is all `index()` needs.
- `RecursiveCharacterTextSplitter` with the plain sizes (CHUNK_CHARS, OVERLAP_CHARS), and the
  plain read and mock embedding of bench/plain.py, so every peer embeds the same text the same way.
  Each chunk's metadata is {"source": path relative to CORPUS_DIR}, the record manager's group.

DATABASE_URL is a libpq URI, perhaps with a unix-socket host in its query string
(`postgresql://postgres:@/postgres?host=/tmp/pg`). SQLAlchemy parses it as is; only the driver
name changes, to `postgresql+psycopg` (psycopg 3), whose dialect hands the query parameters,
`host` included, to libpq. One engine serves both the store and the record manager.

Tables, extension and collection are made before the clock starts; the clock then covers
reading, HTML-to-text, splitting, embedding and writing, file by file as `index()` pulls them.
`docs_failed` is always 0: `index()` has no per-file failure, so an unreadable file stops the
run with an error and a non-zero exit.
"""

import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

from langchain_classic.indexes import SQLRecordManager
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.indexing import index
from langchain_postgres import PGVector
from langchain_text_splitters import RecursiveCharacterTextSplitter
from sqlalchemy import create_engine, make_url, text

_spec = importlib.util.spec_from_file_location("plain", Path(__file__).parents[1] / "plain.py")
plain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plain)

COLLECTION = "bench"


class PlainEmbeddings(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return plain.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def chunks(root: Path, files: list[Path]) -> Iterator[Document]:
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=plain.CHUNK_CHARS, chunk_overlap=plain.OVERLAP_CHARS
    )
    for path in files:
        source = str(path.relative_to(root))
        doc = Document(page_content=plain.read_text(str(path)), metadata={"source": source})
        yield from splitter.split_documents([doc])


def main(corpus: str, database_url: str) -> None:
    root = Path(corpus)
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(plain.TEXT_SUFFIXES)
    )
    engine = create_engine(make_url(database_url).set(drivername="postgresql+psycopg"))
    store = PGVector(
        embeddings=PlainEmbeddings(),
        connection=engine,
        collection_name=COLLECTION,
        embedding_length=plain.DIMS,
        use_jsonb=True,
        create_extension=True,
    )
    records = SQLRecordManager(f"pgvector/{COLLECTION}", engine=engine)
    records.create_schema()

    started = time.perf_counter()
    result = index(chunks(root, files), records, store, cleanup="full", source_id_key="source")
    seconds = time.perf_counter() - started

    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM langchain_pg_embedding")).scalar_one()
    engine.dispose()
    counts = ", ".join(f"{k.removeprefix('num_')} {v}" for k, v in result.items())
    print(
        json.dumps(
            {
                "system": "langchain",
                "version": version("langchain-core"),
                "docs": len(files),
                "docs_failed": 0,
                "chunks": rows,
                "seconds": round(seconds, 2),
                "how": "langchain_core.indexing.index(cleanup='full', "
                "source_id_key='source') into langchain-postgres PGVector (psycopg 3, JSONB) "
                "with langchain-classic SQLRecordManager; RecursiveCharacterTextSplitter("
                f"{plain.CHUNK_CHARS}, {plain.OVERLAP_CHARS}); plain.embed; {counts}",
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} CORPUS_DIR DATABASE_URL")
    main(sys.argv[1], sys.argv[2])
