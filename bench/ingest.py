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


def ingest(sources: list[Path], home: Path, name: str, server: "Server | None" = None) -> Ingest:
    """`tvdb ingest` on a fresh home: its own embedded Postgres, or databases on `server`."""
    env = cli_env(home)
    pgdata: Path | None = Path(env["TVDB_HOME"]) / "pgdata"
    if server is not None:
        env.update(server.env())
        pgdata = None
    run = run_measured([TVDB, "ingest", *map(str, sources)], env, home / f"{name}.log", pgdata)
    match = _SUMMARY.search(run.stdout)
    if match is None:
        raise RuntimeError(f"tvdb ingest printed no summary (exit {run.returncode}): {run.log}")
    found = match.groupdict(default="0")
    summary = {k: float(v) if k == "seconds" else int(v) for k, v in found.items()}
    failed = sum(1 for line in run.stdout.splitlines() if line.startswith("failed: "))
    return Ingest(run, summary, failed)


@dataclass(frozen=True)
class Server:
    """A pipeline database and a Dagster storage database on a server already running."""

    root_uri: str
    name: str

    @property
    def pipeline_url(self) -> str:
        return database.with_database(self.root_uri, self.name)

    @property
    def dagster_url(self) -> str:
        return database.with_database(self.root_uri, f"{self.name}_dagster")

    def env(self) -> dict[str, str]:
        for url in (self.pipeline_url, self.dagster_url):
            database.ensure_database(url)
        return {
            "TVDB_DATABASE_URL": self.pipeline_url,
            "TVDB_DAGSTER_PG_URL": database.with_database(
                self.root_uri, f"{self.name}_dagster", scheme="postgresql+psycopg2"
            ),
        }


def counts(home: Path, server: Server | None = None) -> dict[str, int]:
    """Row counts in a CLI home's databases (attaching to, so starting, its own server)."""
    if server is not None:
        return _counts(server.pipeline_url, server.dagster_url)
    embedded = pgserver.get_server(home / "tvdb_home" / "pgdata", cleanup_mode="stop")
    try:
        root = str(embedded.get_uri("postgres"))
        return _counts(
            database.with_database(root, database.PIPELINE_DATABASE),
            database.with_database(root, database.DAGSTER_DATABASE),
        )
    finally:
        embedded.cleanup()  # the last handle: the server stops, as after a CLI run


def _counts(pipeline_url: str, dagster_url: str) -> dict[str, int]:
    tables = ("documents", "chunks", "embeddings", "embedding_cache")
    with psycopg.connect(pipeline_url) as conn:
        found = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in tables}
    with psycopg.connect(dagster_url) as conn:
        found["dagster_runs"] = conn.execute("SELECT count(*) FROM runs").fetchone()
    return {table: int(row[0]) if row else 0 for table, row in found.items()}
