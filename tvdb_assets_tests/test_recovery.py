"""Nothing lost: a `tvdb ingest` killed or interrupted anywhere is finished by the next one.

Each case stops a real `tvdb ingest` process at a point held by a Postgres lock, kills or
interrupts it there, and runs the same command again. The rows must then be exactly those
of a clean ingest of the same files: same documents, chunks and vectors, nothing twice,
nothing orphaned, and no run left STARTED in Dagster's storage.
"""

import json
import os
import signal
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from tvdb_assets import dagster_env
from tvdb_assets.lib import database
from tvdb_assets_tests import recovery
from tvdb_assets_tests.conftest import Project, _create
from tvdb_assets_tests.recovery import STOP_POINTS
from tvdb_assets_tests.test_ui import free_port

DOCUMENTS = 30
BATCH = "10"  # three runs, so a kill lands in the middle of an ingest
FOLDERS = {"tides": DOCUMENTS, "waves": 10, "currents": 10}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("src")
    return {name: recovery.write_corpus(root / name, n, name) for name, n in FOLDERS.items()}


@pytest.fixture(scope="module")
def corpus(sources: dict[str, Path]) -> Path:
    return sources["tides"]


@pytest.fixture(scope="module")
def clean_rows(
    pg_root: str,
    templates: tuple[str, str],
    sources: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """A database holding one clean, uninterrupted `tvdb ingest` of every source folder."""
    return clean_ingest(pg_root, templates, "reference", list(sources.values()), tmp_path_factory)


# The chunker settings a backfill moves the corpus to.
SMALL_CHUNKS = {"TVDB_CHUNK_MAX_TOKENS": "128", "TVDB_CHUNK_OVERLAP_TOKENS": "16"}


@pytest.fixture(scope="module")
def small_chunk_rows(
    pg_root: str,
    templates: tuple[str, str],
    corpus: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, list[tuple]]:
    """The rows of a clean ingest of the corpus cut with SMALL_CHUNKS."""
    url = clean_ingest(pg_root, templates, "small", [corpus], tmp_path_factory, SMALL_CHUNKS)
    return recovery.snapshot(url, ["tides-"])


def clean_ingest(
    pg_root: str,
    templates: tuple[str, str],
    name: str,
    folders: list[Path],
    tmp_path_factory: pytest.TempPathFactory,
    settings: dict[str, str] | None = None,
) -> str:
    """The URL of a database holding one clean, uninterrupted `tvdb ingest` of `folders`."""
    home = tmp_path_factory.mktemp(name)
    pipeline = _create(pg_root, f"tvdb_{name}", templates[0])
    storage = database.with_database(
        _create(pg_root, f"dagster_{name}", templates[1]),
        f"dagster_{name}",
        scheme="postgresql+psycopg2",
    )
    env = {
        **os.environ,
        **dagster_env.PERFORMANCE_ENV,
        "TVDB_DATABASE_URL": pipeline,
        "TVDB_DAGSTER_PG_URL": storage,
        "DAGSTER_HOME": str(home / "dagster_home"),
        "TVDB_UPLOADS_DIR": str(home / "inbox"),
        "TVDB_HOME": str(home / "tvdb"),
        "TVDB_WORKERS": "1",
        "TVDB_BATCH_SIZE": BATCH,
        **(settings or {}),
    }
    clean = recovery.run(["ingest", *map(str, folders)], home / "logs", env)
    assert clean.process.returncode == 0, clean.stdout + clean.stderr
    return pipeline


def reference_for(clean_rows: str, *folders: str) -> dict[str, list[tuple]]:
    rows = recovery.snapshot(clean_rows, [f"{f}-" for f in folders])
    assert len(rows["documents"]) == sum(FOLDERS[f] for f in folders)
    assert all(indexed for *_, indexed in rows["documents"])
    assert len(rows["embeddings"]) == len(rows["chunks"]) > len(rows["documents"])
    return rows


@pytest.fixture(scope="module")
def reference(clean_rows: str) -> dict[str, list[tuple]]:
    """The rows of a clean ingest of the corpus (the `tides` folder)."""
    return reference_for(clean_rows, "tides")


@pytest.fixture
def batches(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setenv("TVDB_BATCH_SIZE", BATCH)
    return project


def runs_by_status(project: Project) -> dict[str, int]:
    with dg.DagsterInstance.get() as instance:
        statuses = [run.status.value for run in instance.get_runs()]
    return {status: statuses.count(status) for status in set(statuses)}


IN_FLIGHT = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED"}


def assert_converged(project: Project, reference: dict[str, list[tuple]]) -> None:
    assert recovery.snapshot(project.database_url) == reference
    assert recovery.orphans(project.database_url) == {"chunks": 0, "documents": 0}
    assert not IN_FLIGHT & set(runs_by_status(project)), runs_by_status(project)


@pytest.mark.slow
@pytest.mark.parametrize("point", list(STOP_POINTS))
def test_sigkill_anywhere_then_the_same_command_finishes_the_job(
    batches: Project, corpus: Path, reference, tmp_path: Path, point: str
):
    project = batches
    table = STOP_POINTS[point]
    with recovery.held(project.database_url, table):
        child = recovery.start(["ingest", str(corpus)], tmp_path / "logs")
        recovery.wait_until_blocked(project.database_url, table, child)
        child.signal(signal.SIGKILL)
        child.wait()
    assert runs_by_status(project) == {"STARTED": 1}  # what Dagster stored of the dead run

    again = recovery.run(["ingest", str(corpus)], tmp_path / "logs")

    assert again.process.returncode == 0, again.stdout + again.stderr
    # Told against what is stored: killed in the first batch's parse step, nothing is;
    # after it, that batch's documents are parsed but without their vectors.
    told = (
        "30 new, 0 changed, 0 unchanged" if point == "parse" else "20 new, 0 changed, 10 unfinished"
    )
    assert told in again.stdout
    assert f"{DOCUMENTS} ingested" in again.stdout
    assert_converged(project, reference)
    assert runs_by_status(project) == {"FAILURE": 1, "SUCCESS": 3}

    unchanged = recovery.run(["ingest", str(corpus)], tmp_path / "logs")
    assert unchanged.process.returncode == 0
    assert f"{DOCUMENTS} unchanged" in unchanged.stdout and "0 run(s)" in unchanged.stdout


@pytest.mark.slow
def test_a_backfill_killed_between_its_chunks_and_vectors_is_finished_by_the_next(
    batches: Project,
    corpus: Path,
    small_chunk_rows,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    project = batches
    first = recovery.run(["ingest", str(corpus)], tmp_path / "logs")
    assert first.process.returncode == 0, first.stdout + first.stderr
    for name, value in SMALL_CHUNKS.items():
        monkeypatch.setenv(name, value)
    with recovery.held(project.database_url, "embeddings"):
        child = recovery.start(["backfill", "--stale"], tmp_path / "logs")
        recovery.wait_until_blocked(project.database_url, "embeddings", child)
        child.signal(signal.SIGKILL)
        child.wait()
    # The first batch is cut anew; its old chunks, with their vectors, still serve.
    superseded = "SELECT count(*) FROM chunks c JOIN embeddings e ON e.chunk_id = c.id "
    assert project.scalar(superseded + "WHERE c.superseded") > 0

    again = recovery.run(["backfill", "--stale"], tmp_path / "logs")

    assert again.process.returncode == 0, again.stdout + again.stderr
    assert f"{DOCUMENTS} document(s) run again: {DOCUMENTS} stored" in again.stdout
    assert_converged(project, small_chunk_rows)


@pytest.mark.slow
def test_ctrl_c_stops_after_failing_the_run_and_says_what_is_left(
    batches: Project, corpus: Path, reference, tmp_path: Path
):
    project = batches
    table = STOP_POINTS["between assets"]
    with recovery.held(project.database_url, table):
        child = recovery.start(["ingest", str(corpus)], tmp_path / "logs")
        recovery.wait_until_blocked(project.database_url, table, child)
        child.signal(signal.SIGINT)
        code = child.wait(timeout=60)

    assert code == 130, child.stdout + child.stderr
    assert "interrupted" in child.stdout
    assert f"not ingested: {DOCUMENTS} document(s)" in child.stdout
    assert "Traceback" not in child.stderr + child.stdout
    assert runs_by_status(project) == {"FAILURE": 1}  # the run it was in, and no other

    again = recovery.run(["ingest", str(corpus)], tmp_path / "logs")
    assert again.process.returncode == 0, again.stdout + again.stderr
    assert_converged(project, reference)


@pytest.fixture
def embedded(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A brand-new TVDB_HOME with no database named: `tvdb` starts the embedded server."""
    home = tmp_path / "tvdb_home"
    for name in ("TVDB_DATABASE_URL", "TVDB_DAGSTER_PG_URL", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TVDB_HOME", str(home))
    monkeypatch.setenv("TVDB_BATCH_SIZE", BATCH)
    return home


def server_running(home: Path) -> bool:
    return recovery.embedded_server_pid(home, ready=False) is not None


def embedded_runs(home: Path) -> dict[str, int]:
    with psycopg.connect(recovery.embedded_url(home, "dagster")) as conn:
        rows = conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
    return dict(rows)


@pytest.mark.slow
def test_the_database_dying_mid_run_is_one_line_and_the_rerun_finishes(
    embedded: Path, corpus: Path, reference, tmp_path: Path
):
    logs = tmp_path / "logs"
    child = recovery.start(["ingest", str(corpus)], logs)
    recovery.wait_for(lambda: recovery.embedded_server_pid(embedded), 120, "the server", child)
    url = recovery.embedded_url(embedded)
    recovery.wait_for(lambda: recovery.has_table(url, "chunks"), 120, "the schema", child)
    with recovery.held(url, "chunks"):
        recovery.wait_until_blocked(url, "chunks", child)
        postmaster = recovery.embedded_server_pid(embedded)
        assert postmaster is not None
        os.kill(postmaster, signal.SIGQUIT)  # Postgres' immediate shutdown: a crash
        code = child.wait(timeout=120)

    assert code != 0
    (line,) = [line for line in child.stdout.splitlines() if "went away" in line]
    assert line.startswith(f"the database at {embedded}/pgdata/tvdb went away during run ")
    assert "re-run `tvdb ingest` to resume" in line
    assert "Traceback" not in child.stdout + child.stderr
    assert "INSERT" not in child.stdout + child.stderr  # no SQL, no parameters
    assert "Paragraph" not in child.stdout + child.stderr  # no document text
    assert "Traceback" in (embedded / "logs" / "tvdb.log").read_text()  # the detail is kept

    again = recovery.run(["ingest", str(corpus)], logs)  # starts the server again
    assert again.process.returncode == 0, again.stdout + again.stderr
    assert not server_running(embedded)  # its last user stopped it
    with recovery.embedded_server(embedded) as url:
        assert recovery.snapshot(url) == reference
        runs = embedded_runs(embedded)
    assert not IN_FLIGHT & set(runs), runs
    assert runs.get("FAILURE") == 1


@pytest.mark.slow
def test_a_killed_tvdb_does_not_leak_the_embedded_server(
    embedded: Path, corpus: Path, tmp_path: Path
):
    logs = tmp_path / "logs"
    child = recovery.start(["ingest", str(corpus)], logs)
    handles = embedded / "pgdata" / ".handle_pids.json"

    def joined() -> bool:
        return handles.exists() and child.process.pid in json.loads(handles.read_text() or "[]")

    recovery.wait_for(joined, 120, "tvdb to become a user of the embedded server", child)
    child.signal(signal.SIGKILL)
    child.wait()
    assert recovery.embedded_server_pid(embedded) is not None  # left running by the dead one

    status = recovery.run(["status"], logs)

    assert status.process.returncode == 0, status.stdout + status.stderr
    recovery.wait_for(
        lambda: recovery.embedded_server_pid(embedded, ready=False) is None,
        30,
        "the server to stop",
    )


@pytest.mark.slow
def test_four_concurrent_first_ingests_beside_the_sensor_store_each_document_once(
    embedded: Path, project: Project, sources: dict[str, Path], clean_rows: str, tmp_path: Path
):
    logs = tmp_path / "logs"
    dev = recovery.start(["dev", "--port", str(free_port())], logs)  # the sensor, running
    try:
        asks = [["tides"], ["tides", "waves"], ["waves", "currents"], ["tides", "currents"]]
        ingests = [
            recovery.start(["ingest", *(str(sources[name]) for name in ask)], logs) for ask in asks
        ]
        for ask, child in zip(asks, ingests, strict=True):
            code = child.wait(timeout=600)
            files = sum(FOLDERS[name] for name in ask)
            assert code == 0, child.stdout + child.stderr
            assert child.stdout.startswith(f"{files} files: ")
            assert "not ingested" not in child.stdout and "Traceback" not in child.stderr

        url = recovery.embedded_url(embedded)
        recovery.wait_for(
            lambda: recovery.unfinished(url) == 0 and not IN_FLIGHT & set(embedded_runs(embedded)),
            300,
            "the sensor to finish the samples",
        )
        assert recovery.snapshot(url, [f"{name}-" for name in FOLDERS]) == reference_for(
            clean_rows, *FOLDERS
        )
        assert recovery.orphans(url) == {"chunks": 0, "documents": 0}
        assert recovery.snapshot(url)["claims"] == []
    finally:
        dev.signal(signal.SIGINT)
        dev.wait(timeout=120)
    recovery.wait_for(
        lambda: recovery.embedded_server_pid(embedded, ready=False) is None,
        60,
        "the server to stop",
    )
