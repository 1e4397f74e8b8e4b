"""The peers as `make bench` runs them: each script in a venv of its own, on a fresh database.

A venv is (re)made when its requirements file changes: `bench/.peers/<name>/`, ignored by
git, with a stamp holding the requirements' digest. Each peer ingests the same text corpus
twice, measured like `tvdb ingest` (wall time and peak RSS of its process tree); the
second run over unchanged files is its re-ingest.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.procs import run_measured
from bench.report import Record, log

HERE = Path(__file__).resolve().parent
VENVS = HERE.parent / ".peers"
PEERS = ("pgai", "cocoindex", "langchain")


def venv_python(name: str) -> Path:
    """The Python of the peer's venv, installed from `<name>.txt` if that changed."""
    requirements = HERE / f"{name}.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    venv = VENVS / name
    stamp = venv / ".requirements-sha256"
    python = venv / "bin" / "python"
    if not stamp.is_file() or stamp.read_text() != digest:
        log(f"{name}: installing its venv from {requirements.name}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        stamp.write_text(digest)
    return python


def _once(name: str, python: Path, corpus: Path, url: str, log_path: Path) -> tuple[dict, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TVDB_", "DAGSTER_"))}
    command = [str(python), str(HERE / f"{name}.py"), str(corpus), url]
    run = run_measured(command, env, log_path)
    if run.returncode:
        raise RuntimeError(f"peer {name} failed (exit {run.returncode}); see {log_path}")
    out = json.loads(run.stdout.strip().splitlines()[-1])
    measured = {"wall": run.seconds, "rss": run.peak_tree_mib}
    return out, measured


def run(name: str, corpus: Path, database_url: str, work: Path) -> Record:
    """First ingest and unchanged re-ingest of `corpus` by one peer."""
    python = venv_python(name)
    first, first_run = _once(name, python, corpus, database_url, work / f"{name}-first.log")
    again, again_run = _once(name, python, corpus, database_url, work / f"{name}-again.log")
    return {
        "measurement": "peer_first_ingest",
        "system": name,
        "version": first["version"],
        "docs": first["docs"],
        "docs_failed": first["docs_failed"],
        "chunks": first["chunks"],
        "seconds": round(first_run["wall"], 2),
        "ingest_seconds": round(first["seconds"], 2),
        "docs_per_s": round(first["docs"] / first_run["wall"], 1),
        "ingest_docs_per_s": round(first["docs"] / first["seconds"], 1),
        "chunks_per_s": round(first["chunks"] / first_run["wall"], 1),
        "peak_rss_mib": first_run["rss"],
        "reingest_seconds": round(again_run["wall"], 2),
        "reingest_ingest_seconds": round(again["seconds"], 2),
        "reingest_chunks": again["chunks"],
        "how": first["how"],
    }
