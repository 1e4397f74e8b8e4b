"""`tvdb ingest` as a user runs it: a subprocess on a fresh home with its own embedded Postgres.

Wall time includes everything the user waits for (interpreter and Dagster imports, initdb and
Postgres start-up on a fresh home, storage migrations, and stopping Postgres at exit); the
CLI's summary line gives the time spent inside the ingest itself.
"""

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pgserver
import psycopg

from bench.procs import MeasuredRun, cli_env, run_measured
from tvdb_assets.lib import database

TVDB = str(Path(sys.executable).with_name("tvdb"))
_SUMMARY = re.compile(
    r"(?P<files>\d+) files: (?P<new>\d+) new, (?P<changed>\d+) changed, "
    r"(?:(?P<unfinished>\d+) unfinished, )?(?P<unchanged>\d+) "
    r"unchanged; (?P<ingested>\d+) ingested into (?P<chunks>\d+) chunks \((?P<tokens>\d+) "
    r"tokens\) in (?P<seconds>[\d.]+) s .*?, (?P<runs>\d+) run\(s\)"
)


@dataclass
class Ingest:
    run: MeasuredRun
    summary: dict[str, float]
    failed: int  # "failed: <path>: <reason>" lines


def ingest(sources: list[Path], home: Path, name: str) -> Ingest:
    env = cli_env(home)
    pgdata = Path(env["TVDB_HOME"]) / "pgdata"
    run = run_measured([TVDB, "ingest", *map(str, sources)], env, home / f"{name}.log", pgdata)
    match = _SUMMARY.search(run.stdout)
    if match is None:
        raise RuntimeError(f"tvdb ingest printed no summary (exit {run.returncode}): {run.log}")
    found = match.groupdict(default="0")
    summary = {k: float(v) if k == "seconds" else int(v) for k, v in found.items()}
    failed = sum(1 for line in run.stdout.splitlines() if line.startswith("failed: "))
    return Ingest(run, summary, failed)


def counts(home: Path) -> dict[str, int]:
    """Row counts in a CLI home's database, read by attaching to (starting) its server."""
    server = pgserver.get_server(home / "tvdb_home" / "pgdata", cleanup_mode="stop")
    try:
        root = str(server.get_uri("postgres"))
        tables = ("documents", "chunks", "embeddings", "embedding_cache")
        with psycopg.connect(database.with_database(root, database.PIPELINE_DATABASE)) as conn:
            found = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in tables}
        with psycopg.connect(database.with_database(root, database.DAGSTER_DATABASE)) as conn:
            found["dagster_runs"] = conn.execute("SELECT count(*) FROM runs").fetchone()
    finally:
        server.cleanup()  # the last handle: the server stops, as after a CLI run
    return {table: int(row[0]) if row else 0 for table, row in found.items()}
