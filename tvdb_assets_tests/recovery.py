"""Helpers for crash tests: `tvdb` as a child process, a stopped run, and the stored rows.

A child is stopped at a precise point by a real Postgres lock: a test holds a SHARE lock
on one table, so the child's first write to it waits, visibly, in `pg_stat_activity`.
Reads go on; nothing in the project's code knows it is being tested.
"""

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tvdb_assets.lib.store import inbox_files

TVDB = str(Path(sys.executable).with_name("tvdb"))

# Where a run is stopped: the first write of each asset.
STOP_POINTS = {
    "parse": "documents",  # parsed_documents, before its rows are committed
    "between assets": "chunks",  # documents committed, chunks not yet
    "vectors COPY": "embeddings",  # chunks committed, the vectors' DELETE + COPY waits
}


def write_corpus(root: Path, count: int, topic: str = "tides") -> Path:
    """`count` small markdown documents with headings and a few paragraphs each."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        paragraphs = "\n\n".join(
            f"Paragraph {p} of note {i} on {topic}: the {topic} rise and fall with the moon, "
            f"and observation {i * 7 + p} records how far."
            for p in range(24)
        )
        (root / f"note-{i:03d}.md").write_text(
            f"# {topic.title()} {i}\n\n## Part A\n\n{paragraphs}\n"
        )
    return root


@dataclass
class Child:
    process: subprocess.Popen
    out: Path
    err: Path

    def wait(self, timeout: float = 180) -> int:
        return self.process.wait(timeout=timeout)

    def signal(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def start(args: list[str], logs: Path, env: dict[str, str] | None = None) -> Child:
    """`tvdb ARGS` in its own process group, as a user would start it."""
    logs.mkdir(parents=True, exist_ok=True)
    n = len(list(logs.glob("*.out")))
    out, err = logs / f"{n}.out", logs / f"{n}.err"
    process = subprocess.Popen(
        [TVDB, *args],
        stdout=out.open("w"),
        stderr=err.open("w"),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env or os.environ.copy(),
    )
    return Child(process, out, err)


def run(args: list[str], logs: Path, env: dict[str, str] | None = None) -> Child:
    child = start(args, logs, env)
    child.wait()
    return child


@contextmanager
def held(database_url: str, table: str) -> Iterator[None]:
    """Writers of `table` wait while the block runs; readers do not."""
    conn = psycopg.connect(database_url)
    try:
        conn.execute(f"LOCK TABLE {table} IN SHARE MODE")
        yield
    finally:
        with contextlib.suppress(psycopg.OperationalError):  # the test may stop the server
            conn.rollback()
        conn.close()


def wait_until_blocked(database_url: str, table: str, child: Child, timeout: float = 120) -> None:
    """Until a session of the child waits for the lock on `table`."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE NOT l.granted AND c.relname = %s",
                (table,),
            ).fetchone()
            if row and row[0]:
                return
            if child.process.poll() is not None:
                raise AssertionError(f"tvdb exited first:\n{child.stdout}\n{child.stderr}")
            time.sleep(0.05)
    raise AssertionError(f"no writer of {table} waited within {timeout} s")


def snapshot(database_url: str, prefixes: Sequence[str] = ("",)) -> dict[str, list[tuple]]:
    """The stored rows that matter to a user, without run ids and timestamps.

    Only documents whose partition key starts with one of `prefixes` (the source folders).
    """
    queries = {  # name: (columns, table, condition)
        "documents": (
            "partition_key, path, sha256, md5(markdown), indexed_at IS NOT NULL",
            "documents",
            "true",
        ),
        "chunks": ("id::text, partition_key, ord, text_sha256, tokens", "chunks", "true"),
        "embeddings": (
            "chunk_id::text, partition_key, model, dims, md5(embedding::text), fallback",
            "embeddings",
            "true",
        ),
        "open_errors": ("partition_key, stage", "ingest_errors", "resolved_at IS NULL"),
        "claims": ("partition_key", "claims", "true"),
    }
    patterns = [f"{prefix}%" for prefix in prefixes]
    rows = {}
    with psycopg.connect(database_url) as conn:
        for name, (columns, table, condition) in queries.items():
            query = (
                f"SELECT {columns} FROM {table} WHERE {condition} AND partition_key LIKE ANY(%s)"
            )
            rows[name] = sorted(conn.execute(query, (patterns,)).fetchall())
    return rows


def has_table(database_url: str, table: str) -> bool:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def unfinished(database_url: str) -> int:
    """Inbox files whose content is not stored (the same test the pipeline uses)."""
    with psycopg.connect(database_url) as conn:
        return len(inbox_files.unfinished(conn))


def embedded_url(tvdb_home: Path, database: str = "tvdb") -> str:
    """The embedded server's URL, read from its pid file (without becoming one of its users)."""
    lines = (tvdb_home / "pgdata" / "postmaster.pid").read_text().splitlines()
    return f"postgresql://postgres@/{database}?host={lines[4]}"


@contextmanager
def embedded_server(tvdb_home: Path) -> Iterator[str]:
    """Start (or join) a stopped embedded server to look at it; stop it after."""
    import pgserver

    server = pgserver.get_server(tvdb_home / "pgdata", cleanup_mode="stop")
    try:
        yield str(server.get_uri("tvdb"))
    finally:
        server.cleanup()


def embedded_server_pid(tvdb_home: Path, ready: bool = True) -> int | None:
    """The embedded server's pid once it is up and ready (or just alive), else None.

    Postgres writes `postmaster.pid` line by line while it starts; its socket directory and
    its `ready` status come last, so a URL read earlier points nowhere.
    """
    pidfile = tvdb_home / "pgdata" / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
    except FileNotFoundError:
        return None
    if not lines or (ready and (len(lines) < 8 or lines[7].strip() != "ready")):
        return None
    pid = int(lines[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, child: Child | None = None
) -> None:
    """Until `condition()` holds; fails at once, with its output, if `child` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except psycopg.Error:
            pass  # the server, or the schema, is still being set up
        if child is not None and child.process.poll() is not None:
            raise AssertionError(f"tvdb exited first:\n{child.stdout}\n{child.stderr}")
        time.sleep(0.2)
    said = f"\nits output so far:\n{child.stdout}\n{child.stderr[-3000:]}" if child else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{said}")


def orphans(database_url: str) -> dict[str, int]:
    """Rows that belong to nothing: chunks of no document, documents of no upload."""
    with psycopg.connect(database_url) as conn:
        chunks = conn.execute(
            "SELECT count(*) FROM chunks c WHERE NOT EXISTS "
            "(SELECT 1 FROM documents d WHERE d.partition_key = c.partition_key)"
        ).fetchone()
        docs = conn.execute(
            "SELECT count(*) FROM documents d WHERE NOT EXISTS "
            "(SELECT 1 FROM inbox_files i WHERE i.partition_key = d.partition_key)"
        ).fetchone()
    return {"chunks": chunks[0] if chunks else 0, "documents": docs[0] if docs else 0}
