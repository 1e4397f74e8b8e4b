"""The deployment docker-compose.yml describes, run as plain processes on this machine.

The same commands, environment, `dagster.yaml` and `workspace.yaml` as the compose
services, with the embedded Postgres standing in for the pgvector image: `init` once, the
code location as a gRPC server (`dagster code-server start`), `dagster-webserver` and
`dagster-daemon`. The daemon's sensor turns dropped files into runs; a backfill launched
through the webserver's GraphQL API runs its batches side by side, each with the
multiprocess executor; and the UI shows it all in headless Chromium (screenshots under
.test-artifacts/deployment).
"""

import math
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tvdb_assets import dagster_env
from tvdb_assets.cli import SAMPLES
from tvdb_assets.lib import database
from tvdb_assets_tests.browser import CHROMIUM, SCREENSHOTS, Browser
from tvdb_assets_tests.compose import (
    SERVICES,
    command,
    environment,
    image_environment,
    image_paths,
)
from tvdb_assets_tests.webserver import free_port, graphql, partition_stats, wait_for

pytestmark = pytest.mark.slow

ARTIFACTS = SCREENSHOTS / "deployment"
ASSETS = ("parsed_documents", "chunks", "embeddings")
BATCH = 4  # documents per run: 16 documents make four runs, the run queue's limit
NOTES = 6  # generated documents beside the samples
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}

# What a team puts in .env for this deployment: a process per step, small batches.
DOTENV = {
    "POSTGRES_PASSWORD": "unused-here",
    "TVDB_EXECUTOR": "multiprocess",
    "TVDB_BATCH_SIZE": str(BATCH),
    "TVDB_WORKERS": "1",
}

RUNS_QUERY = """query($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs {
    results { runId status startTime endTime tags { key value } } } } }"""
BACKFILL_MUTATION = """mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) { __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message } } }"""
BACKFILL_QUERY = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status } } }"""
MATERIALIZATIONS_QUERY = """query($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode {
    assetMaterializations(limit: 1000) { partition runId } } } }"""
RUN_LOGS_QUERY = """query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection {
    events { ... on MessageEvent { message } } } } }"""


@dataclass
class Deployment:
    port: int  # the webserver's
    inbox: Path
    database_url: str
    documents: int


@pytest.fixture(scope="module")
def deployment(pg_root: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deployment")
    # Databases as the compose Postgres starts them: the pipeline's empty (POSTGRES_DB),
    # Dagster's not there at all. `init` makes both ready.
    with psycopg.connect(pg_root, autocommit=True) as conn:
        conn.execute("CREATE DATABASE deployed")
    database_url = database.with_database(pg_root, "deployed")
    dagster_url = database.with_database(pg_root, "deployed_dagster", scheme="postgresql+psycopg2")
    # The image: the instance template copied into DAGSTER_HOME, as the Dockerfile does.
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(dagster_env.INSTANCE_TEMPLATE, home / "dagster.yaml")
    inbox = root / "inbox"
    documents = drop_documents(inbox)

    code_server_port, webserver_port = free_port(), free_port()
    # Values the compose file sets for its own network and volumes, here on loopback.
    own = {
        "TVDB_DATABASE_URL": database_url,
        "TVDB_DAGSTER_PG_URL": dagster_url,
        "TVDB_UPLOADS_DIR": str(inbox),
        "TVDB_CODE_SERVER_HOST": "127.0.0.1",
        "TVDB_CODE_SERVER_PORT": str(code_server_port),
    }
    outside = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TVDB_", "DAGSTER_", "OPENAI_", "LLAMA_CLOUD_"))
    }
    image = image_environment() | {"DAGSTER_HOME": str(home)}
    image["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

    def env(service: str) -> dict[str, str]:
        service_env = environment(service, DOTENV)
        service_env |= {k: v for k, v in own.items() if k in service_env}
        return outside | image | service_env

    def argv(service: str) -> list[str]:
        """The service's command, listening on loopback and reading the repo's files."""
        files = {path: str(local) for path, local in image_paths().items()}
        ports = {"code-server": code_server_port, "webserver": webserver_port}
        args = command(service)
        for i, arg in enumerate(args[:-1]):
            if arg in ("-h", "--host"):
                args[i + 1] = "127.0.0.1"
            elif arg in ("-p", "--port"):
                args[i + 1] = str(ports[service])
        return [files.get(arg, arg) for arg in args]

    init = subprocess.run(
        command("init"), env=env("init"), cwd=root, capture_output=True, text=True, timeout=300
    )
    assert init.returncode == 0, init.stdout + init.stderr

    processes: list[subprocess.Popen[bytes]] = []

    def start(service: str) -> None:
        log = (root / f"{service}.log").open("wb")
        processes.append(
            subprocess.Popen(
                argv(service),
                env=env(service),
                cwd=root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its run workers too are stopped with it
            )
        )
        log.close()

    try:
        start("code-server")
        health = [str(code_server_port) if a == "4000" else a for a in health_check()]
        wait_for(lambda: healthy(health, env("code-server")), 180, "the code server")
        start("webserver")
        start("daemon")
        wait_for(lambda: partition_stats(webserver_port), 120, "the webserver")
        yield Deployment(webserver_port, inbox, database_url, documents)
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        logs = sorted(root.glob("*.log"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for log in logs:  # what each service printed, beside the screenshots
            shutil.copyfile(log, ARTIFACTS / log.name)


def drop_documents(inbox: Path) -> int:
    """The sample documents and a few notes, dropped before the daemon starts: its first
    tick sees them all."""
    shutil.copytree(SAMPLES, inbox / "samples")
    for n in range(NOTES):
        note = inbox / "notes" / f"note-{n}.md"
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(f"# Note {n}\n\n" + f"Meeting {n} decided item {n}. " * 40)
    return sum(1 for path in inbox.rglob("*") if path.is_file())


def healthy(check: list[str], env: dict[str, str]) -> bool:
    return subprocess.run(check, env=env, capture_output=True).returncode == 0


def health_check() -> list[str]:
    test = SERVICES["code-server"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return [str(part) for part in test[1:]]


def runs(port: int, tag: str, value: str) -> list[dict[str, Any]]:
    variables = {"filter": {"tags": [{"key": tag, "value": value}]}}
    return list(graphql(port, RUNS_QUERY, variables)["runsOrError"]["results"])


def ingested(deployment: Deployment) -> bool:
    """Every dropped document materialized, and the sensor's runs over."""
    stats = partition_stats(deployment.port)
    if any(stats[a]["numMaterialized"] < deployment.documents for a in ASSETS):
        return False
    launched = runs(deployment.port, "dagster/sensor_name", "inbox_sensor")
    return all(r["status"] in FINISHED for r in launched)


def most_at_once(launched: list[dict[str, Any]]) -> int:
    """The most of these runs that were running at the same moment."""
    edges = sorted([(r["startTime"], 1) for r in launched] + [(r["endTime"], -1) for r in launched])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def row_counts(deployment: Deployment) -> tuple[int, int, int, int]:
    with psycopg.connect(deployment.database_url) as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM documents),
                      (SELECT count(*) FROM chunks),
                      (SELECT count(DISTINCT (partition_key, ord)) FROM chunks),
                      (SELECT count(*) FROM embeddings e JOIN chunks c ON c.id = e.chunk_id)"""
        ).fetchone()
    assert row is not None
    return row


def test_the_daemons_sensor_launches_runs_that_ingest_dropped_files(deployment: Deployment):
    wait_for(lambda: ingested(deployment), 300, "the sensor's runs over the dropped files")
    launched = runs(deployment.port, "dagster/sensor_name", "inbox_sensor")
    assert len(launched) == math.ceil(deployment.documents / BATCH)
    assert {r["status"] for r in launched} == {"SUCCESS"}
    assert partition_stats(deployment.port)["embeddings"]["numFailed"] == 0

    documents, chunks, distinct_chunks, vectors = row_counts(deployment)
    assert documents == deployment.documents
    assert chunks == distinct_chunks == vectors > documents


def test_a_backfill_through_graphql_runs_batches_side_by_side_once_each(
    deployment: Deployment,
):
    wait_for(lambda: ingested(deployment), 300, "the sensor's runs")
    before = row_counts(deployment)
    keys = sorted(materializations(deployment, "embeddings"))
    assert len(keys) == deployment.documents

    params = {
        "assetSelection": [{"path": [asset]} for asset in ASSETS],
        "partitionNames": keys,
        "fromFailure": False,
        "title": "every document again",
    }
    launched = graphql(deployment.port, BACKFILL_MUTATION, {"params": params})
    launched = launched["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill = launched["backfillId"]

    def status() -> str:
        reply = graphql(deployment.port, BACKFILL_QUERY, {"id": backfill})
        state = str(reply["partitionBackfillOrError"]["status"])
        assert state not in ("FAILED", "COMPLETED_FAILED", "CANCELED"), state
        return state if state == "COMPLETED_SUCCESS" else ""

    wait_for(status, 420, "the backfill")

    # One run per batch, each executing its steps in processes of their own, side by side
    # up to the run queue's limit of four at once.
    batches = runs(deployment.port, "dagster/backfill", backfill)
    assert len(batches) == math.ceil(deployment.documents / BATCH)
    assert {r["status"] for r in batches} == {"SUCCESS"}
    for run in batches:
        messages = run_messages(deployment, run["runId"])
        assert any("multiprocess executor" in m for m in messages), messages[:20]
    # How many overlap depends on the machine's pace; never more than the queue allows.
    assert 2 <= most_at_once(batches) <= 4

    # Every partition of every asset materialized exactly once by the backfill.
    run_ids = {r["runId"] for r in batches}
    for asset in ASSETS:
        by_backfill = Counter(
            event["partition"]
            for event in materialization_events(deployment, asset)
            if event["runId"] in run_ids
        )
        assert by_backfill == dict.fromkeys(keys, 1), asset

    # The same rows as before: nothing duplicated, nothing lost.
    assert row_counts(deployment) == before


def materialization_events(deployment: Deployment, asset: str) -> list[dict[str, str]]:
    reply = graphql(deployment.port, MATERIALIZATIONS_QUERY, {"path": [asset]})
    return list(reply["assetNodeOrError"]["assetMaterializations"])


def materializations(deployment: Deployment, asset: str) -> set[str]:
    return {event["partition"] for event in materialization_events(deployment, asset)}


def run_messages(deployment: Deployment, run_id: str) -> list[str]:
    reply = graphql(deployment.port, RUN_LOGS_QUERY, {"id": run_id})
    return [e["message"] for e in reply["logsForRun"]["events"] if e.get("message")]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it)")
def test_the_ui_of_the_deployment_shows_the_graph_partitions_runs_and_checks(
    deployment: Deployment, tmp_path: Path
):
    wait_for(lambda: ingested(deployment), 300, "the sensor's runs")
    url = f"http://127.0.0.1:{deployment.port}"
    run = runs(deployment.port, "dagster/sensor_name", "inbox_sensor")[0]
    with Browser(tmp_path / "chromium") as browser:
        # The asset graph: the documents' way from the inbox to their vectors, every
        # materialized asset with all of its partitions.
        browser.open(f"{url}/assets/embeddings?view=lineage&lineageScope=upstream&lineageDepth=3")
        browser.wait_for("ingestion", "indexing", "uploads", *ASSETS)
        # (`uploads` counts as filled too: the sensor records each upload it sees.)
        filled = lambda: browser.text().count("100% filled") >= len(ASSETS)  # noqa: E731
        wait_for(filled, 60, "every partition of the assets filled")
        browser.screenshot(ARTIFACTS / "asset-graph.png")

        browser.open(f"{url}/assets/embeddings?view=partitions")
        browser.wait_for(f"Materialized ({deployment.documents})", "Failed (0)")
        browser.wait_for("notes-note-0.md-", "samples-faq.txt-")
        browser.screenshot(ARTIFACTS / "embeddings-partitions.png")

        # A run the sensor launched: its steps and what it wrote.
        browser.open(f"{url}/runs/{run['runId']}")
        shown = browser.wait_for("Success", "inbox_sensor", "3 assets", "vectors_written")
        assert "Errored (0)" in shown
        browser.screenshot(ARTIFACTS / "run.png")

        # The checks of `embeddings`: the run-level ones passed. (`document_ingested` is
        # evaluated for failed documents only in batch runs: none failed.)
        browser.open(f"{url}/assets/embeddings?view=checks")
        checks = [
            "batch_documents_ingested",
            "cost_within_budget",
            "every_chunk_has_one_vector",
            "services_healthy",
        ]
        shown = browser.wait_for(*checks, "document_ingested", "Passed")
        listed = shown[shown.index("Checks (5)") : shown.index("Execute", shown.index(checks[-1]))]
        for check in checks:
            assert f"{check}\n{check}\nSucceeded" in listed, listed
        assert "Failed" not in listed
        browser.screenshot(ARTIFACTS / "embeddings-checks.png")
