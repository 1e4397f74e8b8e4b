"""Throughput at 2,000 and 20,000 small documents, and the inbox sensor's tick at 20,000.

Nothing the pipeline does per document should cost more as documents accumulate: not the
sensor's comparison of the inbox with what is stored, not Dagster's partition bookkeeping,
not the store. So `tvdb ingest` (a subprocess on a fresh home each, as in bench/ingest.py)
takes 2,000 and then 20,000 generated markdown documents of 1-3 KB, and docs/s at 20,000
must stay within 20% of docs/s at 2,000 (compared on the CLI's own ingest seconds, which
leave out interpreter and Postgres start-up).

Then, on the 20,000-document home, `python -m bench.scale tick HOME` evaluates the inbox
sensor in a fresh process as the daemon's sensor process would (the project's Definitions,
its Dagster instance, its embedded Postgres): a tick with all of the inbox stored (it must
request nothing), an idle tick on the cursor that one settled on, and a tick after 100 new
files appear (it must request runs for exactly those). Each tick is timed in-process; the
target is under 10 s. `tvdb ingest DIR` copies DIR into the inbox the sensor watches
(TVDB_UPLOADS_DIR/DIR-name/...), so the sensor sees the very files the CLI stored.
"""

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pgserver

from bench import ingest
from bench.procs import cli_env, run_measured
from bench.report import Record, log
from tvdb_assets.defs.partitions import DOCUMENTS, RANGE_END_TAG, RANGE_START_TAG, apply_requests
from tvdb_assets.lib.ids import partition_key_for

SIZES = (2000, 20000)
FOLDER_FILES = 1000  # files per generated subdirectory
NEW_FILES = 100  # added to the inbox before the last tick
TARGET_RATIO = 0.8
TARGET_TICK_SECONDS = 10.0
_WORDS = """
    account address agent archive backup balance batch branch buffer cache certificate
    channel cluster column commit config container contract credential cursor dashboard
    database deadline deploy device digest domain driver endpoint engine event export field
    filter firewall format gateway graph handler header host index invoice journal kernel
    key ledger library limit listener locale log manifest metric migration module monitor
    namespace network node notice offset owner package packet page partition patch payload
    pipeline policy pool port process profile protocol proxy query queue quota record region
    registry release replica report request resource response retry revision role route
    runtime sample schema scope secret segment sensor server service session shard signal
    snapshot socket source stage status storage stream subnet summary switch table tenant
    thread ticket timeout token topic trace tunnel upload user value vault vector version
    volume window worker workflow zone the a of to and in for with on by from is are was be
    each every new old first last small large quickly slowly again never always then
"""
VOCABULARY = tuple(_WORDS.split())


def _sentence(rng: random.Random) -> str:
    words = rng.choices(VOCABULARY, k=rng.randint(6, 16))
    return " ".join(words).capitalize() + "."


def _document(rng: random.Random, number: int) -> str:
    """A heading and paragraphs until about 1-3 KB; the number keeps every text unique."""
    size = rng.randint(1000, 2500)
    title = " ".join(rng.choices(VOCABULARY, k=4)).title()
    parts = [f"# Document {number}: {title}\n"]
    while sum(len(p) + 1 for p in parts) < size:
        parts.append(" ".join(_sentence(rng) for _ in range(rng.randint(3, 7))) + "\n")
    return "\n".join(parts)


def generate(directory: Path, count: int, seed: int) -> int:
    """`count` distinct markdown documents, the same on every run; returns total bytes."""
    rng = random.Random(seed)
    total = 0
    for number in range(count):
        folder = directory / f"part-{number // FOLDER_FILES:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        data = _document(rng, number).encode()
        (folder / f"doc-{number:05d}.md").write_bytes(data)
        total += len(data)
    return total


def _ingest_record(docs: int, mb: float, run: ingest.Ingest) -> Record:
    s, p = run.summary, run.run
    return {
        "measurement": "scale_ingest",
        "docs": docs,
        "mb": round(mb, 2),
        "docs_ingested": s["ingested"],
        "chunks": s["chunks"],
        "seconds": round(p.seconds, 2),
        "ingest_seconds": s["seconds"],
        "docs_per_s": round(docs / p.seconds, 1),
        "ingest_docs_per_s": round(docs / s["seconds"], 1),
        "runs": s["runs"],
        "peak_rss_mib": p.peak_tree_mib,
        "exit_code": p.returncode,
    }


def _measure_ingest(work: Path, docs: int) -> Record:
    home = work / f"scale-{docs}"
    log(f"scale: generating {docs:,} documents")
    size = generate(home / "docs", docs, seed=docs)
    log(f"scale: tvdb ingest of {docs:,} documents (fresh home)")
    return _ingest_record(docs, size / 1e6, ingest.ingest([home / "docs"], home, "first"))


def _measure_ticks(home: Path) -> dict[str, Any]:
    """The ticks, in a subprocess on the home's environment; it stops Postgres as it exits."""
    log(f"scale: sensor ticks on {home}")
    command = [sys.executable, "-m", "bench.scale", "tick", str(home)]
    env = cli_env(home)
    pgdata = Path(env["TVDB_HOME"]) / "pgdata"
    run = run_measured(command, env, home / "tick.log", pgdata)
    if run.returncode or (pgdata / "postmaster.pid").exists():
        raise RuntimeError(f"sensor ticks failed or left Postgres running: see {run.log}")
    ticks: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return {**ticks, "tick_process_seconds": round(run.seconds, 2)}


def _flat_record(small: Record, large: Record, ticks: dict[str, Any]) -> Record:
    ratio = large["ingest_docs_per_s"] / small["ingest_docs_per_s"]
    slowest = max(ticks["all_stored_seconds"], ticks["new_files_seconds"])
    correct = ticks["all_stored_run_requests"] == 0 and ticks["new_files_requested_exactly"]
    every_doc = all(r["docs_ingested"] == r["docs"] for r in (small, large))
    return {
        "measurement": "scale_flat",
        f"docs_per_s_{small['docs']}": small["ingest_docs_per_s"],
        f"docs_per_s_{large['docs']}": large["ingest_docs_per_s"],
        "ratio": round(ratio, 3),
        "wall_ratio": round(large["docs_per_s"] / small["docs_per_s"], 3),
        "partitions": ticks["partitions"],
        "sensor_tick_seconds": ticks["all_stored_seconds"],
        **{k: v for k, v in ticks.items() if k not in ("partitions", "all_stored_seconds")},
        "target": "docs/s at 20,000 within 20% of 2,000's; sensor tick < 10 s",
        "met": ratio >= TARGET_RATIO and slowest < TARGET_TICK_SECONDS and correct and every_doc,
    }


def run(work: Path, sizes: tuple[int, int] = SIZES) -> list[Record]:
    records = [_measure_ingest(work, docs) for docs in sizes]
    ticks = _measure_ticks(work / f"scale-{sizes[-1]}")
    return [*records, _flat_record(records[0], records[-1], ticks)]


# --- `python -m bench.scale tick HOME`: in the home's environment (bench.procs.cli_env) ---


def _tick(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None
) -> tuple[Any, float]:
    """One evaluation of the inbox sensor as the daemon's code server does it: the sensor's
    resources from the Definitions, the instance opened from its ref for the tick."""
    repository = defs.get_repository_def()
    sensor = repository.get_sensor_def("inbox_sensor")
    resources = repository.get_top_level_resources()
    started = time.perf_counter()
    with dg.build_sensor_context(
        instance_ref=instance.get_ref(),
        cursor=cursor,
        repository_def=repository,
        sensor_name=sensor.name,
        resources={k: v for k, v in resources.items() if k in sensor.required_resource_keys},
    ) as context:
        result = sensor.evaluate_tick(context)
    return result, round(time.perf_counter() - started, 3)


def _apply(instance: dg.DagsterInstance, result: Any) -> float:
    """What the daemon does with a tick's partition requests, timed."""
    started = time.perf_counter()
    apply_requests(instance, result.dynamic_partitions_requests)
    return round(time.perf_counter() - started, 3)


def _covered(instance: dg.DagsterInstance, result: Any) -> set[str]:
    """The documents a tick's run requests cover, in the partition order after it."""
    order = list(instance.get_dynamic_partitions(DOCUMENTS))
    position = {key: i for i, key in enumerate(order)}
    keys: set[str] = set()
    for request in result.run_requests or []:
        if request.partition_key:
            keys.add(request.partition_key)
        else:
            start, end = request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]
            keys.update(order[position[start] : position[end] + 1])
    return keys


def _ticks(defs: dg.Definitions, instance: dg.DagsterInstance, inbox: Path) -> dict[str, Any]:
    partitions = len(instance.get_dynamic_partitions(DOCUMENTS))
    stored, stored_seconds = _tick(defs, instance, None)  # a daemon's first look
    again, again_seconds = _tick(defs, instance, None)  # the same, warm
    idle, idle_seconds = _tick(defs, instance, again.cursor)  # nothing moved since
    generate(inbox / "new", NEW_FILES, seed=NEW_FILES)
    new, new_seconds = _tick(defs, instance, again.cursor)
    apply_seconds = _apply(instance, new)
    expected = {partition_key_for(p.relative_to(inbox).as_posix()) for p in inbox.glob("new/*/*")}
    covered = _covered(instance, new)
    return {
        "partitions": partitions,
        "all_stored_seconds": stored_seconds,
        "all_stored_warm_seconds": again_seconds,
        "all_stored_run_requests": len(stored.run_requests or []),
        "all_stored_skip": stored.skip_message,
        "idle_tick_seconds": idle_seconds,
        "idle_skip": idle.skip_message,
        "new_files_seconds": new_seconds,
        "new_files_run_requests": len(new.run_requests or []),
        "new_files_requested": len(covered & expected),
        "new_files_requested_exactly": covered == expected,
        "new_partitions_apply_seconds": apply_seconds,
    }


def tick_main(home: Path) -> None:
    """Evaluate the inbox sensor on `home`'s instance and database; print one JSON line."""
    env = cli_env(home)
    os.environ.clear()
    os.environ.update(env)
    from tvdb_assets import dagster_env

    dagster_env.prepare()  # attaches to (starts) the home's embedded Postgres
    from tvdb_assets.definitions import defs
    from tvdb_assets.lib import settings

    with dagster_env.instance() as instance:
        ticks = _ticks(defs, instance, settings.uploads_dir())
    # The last pgserver handle in this process: the server stops, as after a CLI run.
    pgserver.get_server(settings.home_dir() / "pgdata").cleanup()
    print(json.dumps(ticks), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] != ["tick"] or len(sys.argv) != 3:
        sys.exit("usage: python -m bench.scale tick HOME")
    tick_main(Path(sys.argv[2]))
