"""Run a command and sample its memory: the process tree, and the embedded Postgres apart.

Every `interval` seconds the RSS of the command and all its descendants is summed (Postgres
processes excluded), next to the largest single process. The embedded server's processes
(`postmaster.pid` under `pgdata`, plus initdb/pg_ctl/postgres children of the command) are
summed separately; their RSS counts shared buffers once per process, so it over-states.
"""

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

MIB = 1024 * 1024
_POSTGRES_NAMES = {"postgres", "postmaster", "pg_ctl", "initdb"}


@dataclass
class MeasuredRun:
    returncode: int
    seconds: float
    stdout: str
    log: Path
    peak_tree_rss: int = 0  # bytes: the command and its children, Postgres excluded
    peak_single_rss: int = 0  # bytes: the largest one of those processes
    peak_postgres_rss: int = 0  # bytes: all Postgres processes of `pgdata`
    max_processes: int = 0  # the command's tree at its widest, Postgres excluded

    @property
    def peak_tree_mib(self) -> float:
        return round(self.peak_tree_rss / MIB, 1)

    @property
    def peak_single_mib(self) -> float:
        return round(self.peak_single_rss / MIB, 1)

    @property
    def peak_postgres_mib(self) -> float:
        return round(self.peak_postgres_rss / MIB, 1)


def _descendants(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _postmaster(pgdata: Path | None) -> list[psutil.Process]:
    if pgdata is None:
        return []
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        return _descendants(psutil.Process(pid))
    except (OSError, ValueError, psutil.Error):
        return []


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return 0


def _name(process: psutil.Process) -> str:
    try:
        return str(process.name())
    except psutil.Error:
        return ""


def run_measured(
    command: Sequence[str],
    env: dict[str, str],
    log: Path,
    pgdata: Path | None = None,
    interval: float = 0.05,
) -> MeasuredRun:
    """Run `command` to completion; stderr goes to `log` (the CLI logs every Dagster event)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out_path = log.with_suffix(".stdout")
    with out_path.open("w") as out, log.open("w") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        root = psutil.Process(child.pid)
        run = MeasuredRun(0, 0.0, "", log)
        while child.poll() is None:
            ours, postgres = [], {p.pid: p for p in _postmaster(pgdata)}
            for process in _descendants(root):
                if _name(process) in _POSTGRES_NAMES:
                    postgres.setdefault(process.pid, process)
                else:
                    ours.append(process)
            sizes = [_rss(p) for p in ours]
            run.peak_tree_rss = max(run.peak_tree_rss, sum(sizes))
            run.peak_single_rss = max(run.peak_single_rss, max(sizes, default=0))
            run.peak_postgres_rss = max(
                run.peak_postgres_rss, sum(_rss(p) for p in postgres.values())
            )
            run.max_processes = max(run.max_processes, len(ours))
            time.sleep(interval)
        run.seconds = time.perf_counter() - started
        run.returncode = child.returncode
    run.stdout = out_path.read_text()
    return run


def cli_env(home: Path) -> dict[str, str]:
    """The environment of a `tvdb` run on its own embedded database under `home`."""
    env = os.environ.copy()
    for name in ("TVDB_DATABASE_URL", "TVDB_DAGSTER_PG_URL", "TVDB_BATCH_SIZE", "TVDB_WORKERS"):
        env.pop(name, None)
    env.update(
        TVDB_HOME=str(home / "tvdb_home"),
        DAGSTER_HOME=str(home / "dagster_home"),
        TVDB_UPLOADS_DIR=str(home / "inbox"),
    )
    return env
