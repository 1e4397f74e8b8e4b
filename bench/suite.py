"""All measurements in order, each printed as a JSON line the moment it is known.

Work happens in a fresh temporary directory (kept with BENCH_KEEP=1): the corpus, the
benchmark's own embedded Postgres (bare loop, bookkeeping) and one fresh `tvdb` home per
CLI measurement, each with its own embedded Postgres started by the CLI itself.
BENCH_BIG_MB sizes the single large file (default 50). Every record carries the 1-minute
load average when it was taken: other work on the machine shows up in the numbers.
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import pgserver

from bench import bare, corpus, hostile, ingest, pathological, tpm
from bench.procs import MIB
from bench.report import Record, emit, log, table
from tvdb_assets import dagster_env
from tvdb_assets.lib import database

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 1024 * MIB
BIG_FILE_BYTES = int(float(os.environ.get("BENCH_BIG_MB", "50")) * MIB)
HEADLINES = {
    "corpus": "files",
    "bare_limit": "docs_per_s",
    "dagster_bookkeeping": "ms_per_doc",
    "first_ingest_cli": "docs_per_s",
    "unchanged_reingest_cli": "seconds_per_500_docs",
    "single_large_file": "peak_rss_mib",
    "openai_tpm": "achieved_share",
    "pathological_lines": "result",
    "hostile_documents": "result",
}
# (partitions or None for the corpus size, performance env, per-partition metadata)
BOOKKEEPING = ((1000, True, True), (None, True, True), (1000, True, False), (200, False, True))


def environment() -> Record:
    return {
        "measurement": "environment",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "dagster": version("dagster"),
        "platform": platform.platform(terse=True),
    }


def corpus_record(built: corpus.Corpus) -> Record:
    return {
        "measurement": "corpus",
        "files": built.files,
        "by_type": built.by_type,
        "generated_pdfs": built.generated_pdfs,
        "mb": round(built.megabytes, 2),
        "manifest_sha256": built.manifest_sha256[:16],
        "sources": list(corpus.ROOTS),
    }


def bookkeeping(root_uri: str, work: Path, partitions: int, perf: bool, meta: bool) -> Record:
    """One measurement in a fresh process, on a fresh Dagster storage database."""
    name = f"bk_{partitions}_{'perf' if perf else 'plain'}_{'meta' if meta else 'bare'}"
    env = os.environ.copy()
    for variable in dagster_env.PERFORMANCE_ENV:
        env.pop(variable, None)  # prepare() sets them; the flag below takes them out again
    storage = database.with_database(root_uri, name, scheme="postgresql+psycopg2")
    env.update(
        TVDB_DATABASE_URL=root_uri,
        TVDB_DAGSTER_PG_URL=storage,
        DAGSTER_HOME=str(work / name),
        TVDB_HOME=str(work / name / "tvdb_home"),
    )
    command = [sys.executable, "-m", "bench.bookkeeping", str(partitions)]
    command += [] if perf else ["--without-performance-env"]
    command += [] if meta else ["--without-metadata"]
    (work / name).mkdir(parents=True)
    with (work / f"{name}.log").open("w") as err:
        out = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    if out.returncode:
        raise RuntimeError(f"bookkeeping {name} failed; see {work / f'{name}.log'}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def first_ingest(run: ingest.Ingest, built: corpus.Corpus, bare_rate: float) -> Record:
    s, p = run.summary, run.run
    docs_per_s = s["files"] / p.seconds
    share = docs_per_s / bare_rate
    return {
        "measurement": "first_ingest_cli",
        "docs": s["files"],
        "docs_ingested": s["ingested"],
        "docs_failed": run.failed,
        "chunks": s["chunks"],
        "tokens": s["tokens"],
        "seconds": round(p.seconds, 2),
        "ingest_seconds": s["seconds"],
        "startup_and_exit_seconds": round(p.seconds - s["seconds"], 2),
        "docs_per_s": round(docs_per_s, 1),
        "chunks_per_s": round(s["chunks"] / p.seconds, 1),
        "mb_per_s": round(built.megabytes / p.seconds, 2),
        "runs": s["runs"],
        "peak_rss_mib": p.peak_tree_mib,
        "max_process_rss_mib": p.peak_single_mib,
        "max_processes": p.max_processes,
        "postgres_peak_rss_mib": p.peak_postgres_mib,
        "bare_docs_per_s": bare_rate,
        "share_of_bare": round(share, 2),
        "target": ">= 50% of bare docs/s; peak RSS < 1 GiB",
        "met": share >= 0.5 and p.peak_tree_rss < GIB,
        "exit_code": p.returncode,
    }


def reingest(run: ingest.Ingest, before: dict[str, int], after: dict[str, int]) -> Record:
    s, p = run.summary, run.run
    per_500 = s["seconds"] * 500 / s["files"]
    runs = after["dagster_runs"] - before["dagster_runs"]
    new_cache_rows = after["embedding_cache"] - before["embedding_cache"]
    # No run means no asset ran, so no embedder was even built.
    calls = 0 if runs == 0 and s["runs"] == 0 else None
    return {
        "measurement": "unchanged_reingest_cli",
        "docs": s["files"],
        "unchanged": s["unchanged"],
        "seconds": round(p.seconds, 2),
        "ingest_seconds": s["seconds"],
        "seconds_per_500_docs": round(per_500, 3),
        "wall_seconds_per_500_docs": round(p.seconds * 500 / s["files"], 2),
        "runs_launched": s["runs"],
        "dagster_runs_before_after": [before["dagster_runs"], after["dagster_runs"]],
        "embedding_cache_rows_before_after": [before["embedding_cache"], after["embedding_cache"]],
        "embedding_calls": calls,
        "peak_rss_mib": p.peak_tree_mib,
        "target": "<= 1 s per 500 docs (ingest seconds), 0 runs, 0 embedding calls",
        "met": per_500 <= 1.0 and runs == 0 and s["runs"] == 0 and new_cache_rows == 0,
    }


def big_file(run: ingest.Ingest, size: int) -> Record:
    s, p = run.summary, run.run
    return {
        "measurement": "single_large_file",
        "mb": round(size / 1e6, 1),
        "docs_ingested": s["ingested"],
        "chunks": s["chunks"],
        "tokens": s["tokens"],
        "seconds": round(p.seconds, 2),
        "ingest_seconds": s["seconds"],
        "mb_per_s": round(size / 1e6 / p.seconds, 2),
        "peak_rss_mib": p.peak_tree_mib,
        "max_process_rss_mib": p.peak_single_mib,
        "postgres_peak_rss_mib": p.peak_postgres_mib,
        "target": "peak RSS < 1 GiB",
        "met": p.peak_tree_rss < GIB and s["ingested"] == 1,
        "exit_code": p.returncode,
    }


def _emit(record: Record) -> Record:
    return emit({**record, "load_avg_1m": round(os.getloadavg()[0], 2)})


def measure(work: Path) -> list[Record]:
    records = [_emit(environment())]
    log("building the corpus")
    built = corpus.build(work / "corpus")
    records.append(_emit(corpus_record(built)))

    server = pgserver.get_server(work / "pg", cleanup_mode="delete")
    try:
        root_uri = str(server.get_uri("postgres"))
        log("bare limit: parse -> chunk -> mock-embed -> COPY, no Dagster")
        bare_url = database.with_database(root_uri, "bare")
        database.ensure_database(bare_url)
        records.append(_emit(bare.run(built.root, bare_url)))
        bare_rate = records[-1]["docs_per_s"]
        for partitions, perf, meta in BOOKKEEPING:
            n = partitions or built.files
            log(f"bookkeeping: {n} partitions, performance env {perf}, metadata {meta}")
            records.append(_emit(bookkeeping(root_uri, work / "bookkeeping", n, perf, meta)))
    finally:
        server.cleanup()

    home = work / "cli"
    log(f"first ingest: tvdb ingest {built.root} (fresh home, embedded Postgres)")
    first = ingest.ingest([built.root], home, "first")
    before = ingest.counts(home)
    records.append(_emit(first_ingest(first, built, bare_rate)))
    log("unchanged re-ingest")
    again = ingest.ingest([built.root], home, "again")
    records.append(_emit(reingest(again, before, ingest.counts(home))))

    log(f"single {BIG_FILE_BYTES / MIB:g} MiB file: generating, then tvdb ingest (fresh home)")
    path = work / "big" / "handbook.md"
    size = corpus.write_big_markdown(path, built.root / "md", BIG_FILE_BYTES)
    records.append(_emit(big_file(ingest.ingest([path], work / "cli-big", "big"), size)))

    log("pathological lines through parsing and chunking")
    records.append(_emit(pathological.run()))
    log("hostile documents, one at a time: bombs, nested HTML, NULs, a 101 MB line")
    records.append(_emit(hostile.run()))

    log(f"real mode under a TPM limit: {tpm.TPM_LIMIT:,} tokens/min against a loopback OpenAI")
    records.append(_emit(tpm.run()))
    return records


def main() -> int:
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tvdb-bench-"))
    keep = os.environ.get("BENCH_KEEP") == "1"
    try:
        records = measure(work)
    finally:
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    minutes = (time.perf_counter() - started) / 60
    markdown = (
        f"# tvdb-assets benchmark\n\n{time.strftime('%Y-%m-%d %H:%M %Z')}, "
        f"{os.cpu_count()} CPUs, {minutes:.1f} min in all. Raw JSON lines: `make bench`.\n\n"
        + table(records, HEADLINES)
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(markdown)
    print(markdown, file=sys.stderr)
    return 0
