"""The limit: a bare loop that shares no code with the project.

Text: read each file, HTML to text with the stdlib, fixed-size windows, the plain mock
embedding, and one binary COPY of every chunk and vector into a pgvector table. PDFs: every
page's text through PDFium and one binary COPY of the pages. One process, no bookkeeping,
no recovery, no checks: what a machine does at the least to store the same corpus.
"""

import time
from pathlib import Path

import psycopg
import pypdfium2 as pdfium
from pgvector.psycopg import register_vector

from bench import plain
from bench.report import Record

_TEXT_TABLE = """
CREATE EXTENSION IF NOT EXISTS vector;
DROP TABLE IF EXISTS bare_chunks;
CREATE TABLE bare_chunks (path text, ord int, body text, embedding vector(1536))
"""
_PDF_TABLE = """
DROP TABLE IF EXISTS bare_pages;
CREATE TABLE bare_pages (path text, page int, body text)
"""


def _files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def text(corpus: Path, database_url: str) -> Record:
    files = _files(corpus, plain.TEXT_SUFFIXES)
    with psycopg.connect(database_url) as conn:
        conn.execute(_TEXT_TABLE)
        conn.commit()
        register_vector(conn)
        started = time.perf_counter()
        rows: list[tuple[str, int, str]] = []
        for file in files:
            name = str(file)
            rows += [(name, n, c) for n, c in enumerate(plain.split(plain.read_text(name)))]
        vectors = plain.embed([body for _, _, body in rows])
        copy_sql = "COPY bare_chunks (path, ord, body, embedding) FROM STDIN (FORMAT BINARY)"
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.set_types(["text", "int4", "text", "vector"])
            for (name, ord_, body), vector in zip(rows, vectors, strict=True):
                copy.write_row((name, ord_, body.replace("\x00", ""), vector))
        conn.commit()
        seconds = time.perf_counter() - started
    return {
        "measurement": "bare_limit",
        "docs": len(files),
        "chunks": len(rows),
        "seconds": round(seconds, 2),
        "docs_per_s": round(len(files) / seconds, 1),
        "chunks_per_s": round(len(rows) / seconds, 1),
        "how": f"read, stdlib HTML->text, fixed {plain.CHUNK_CHARS}/{plain.OVERLAP_CHARS}-char "
        "windows, plain mock embedding, one binary COPY; one process (bench/bare.py, plain.py)",
    }


def pdf(corpus: Path, database_url: str) -> Record:
    files = _files(corpus, (".pdf",))
    with psycopg.connect(database_url) as conn:
        conn.execute(_PDF_TABLE)
        conn.commit()
        started = time.perf_counter()
        pages: list[tuple[str, int, str]] = []
        failed = 0
        for path in files:
            try:
                document = pdfium.PdfDocument(path.read_bytes())
            except pdfium.PdfiumError:
                failed += 1
                continue
            for number in range(len(document)):
                textpage = document[number].get_textpage()
                pages.append((str(path), number, textpage.get_text_range().replace("\x00", "")))
            document.close()
        with conn.cursor() as cur, cur.copy("COPY bare_pages FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "int4", "text"])
            for row in pages:
                copy.write_row(row)
        conn.commit()
        seconds = time.perf_counter() - started
    return {
        "measurement": "bare_pdf_limit",
        "docs": len(files),
        "docs_failed": failed,
        "pages": len(pages),
        "seconds": round(seconds, 3),
        "pages_per_s": round(len(pages) / seconds, 1),
        "how": "PDFium text of every page, one binary COPY; one process",
    }
