"""`tvdb dev` as a user starts it: samples flow through the sensor and show in the UI, and
the UI tells the truth about failed documents and hybrid fallbacks.

Drives the real `dagster dev` (webserver + daemon) over GraphQL and reads the rendered
pages in headless Chromium, saving screenshots under .test-artifacts/ui.
"""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tvdb_assets.cli import SAMPLES
from tvdb_assets.lib.ids import partition_key_for
from tvdb_assets_tests.browser import CHROMIUM, SCREENSHOTS, Browser
from tvdb_assets_tests.conftest import Project
from tvdb_assets_tests.webserver import free_port, graphql, location, partition_stats, wait_for

ARTIFACTS = SCREENSHOTS / "ui"
CHECK_QUERY = """{ assetNodeOrError(assetKey: {path: ["embeddings"]}) { ... on AssetNode {
    assetChecksOrError { ... on AssetChecks { checks { name
      partitionStatuses { ... on AssetCheckDefaultPartitionStatuses { failedPartitions } }
    } } } } } }"""
LAUNCH_MUTATION = """mutation($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) { __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } } } }"""


@pytest.fixture
def dev_server(project: Project, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = (tmp_path / "dev.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("tvdb")), "dev", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # No key: hybrid runs fall back, as a newcomer's would.
        env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
    )
    try:
        yield port
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it)")
def test_dev_server_materializes_samples_and_shows_them(project: Project, dev_server: int):
    samples = sorted(p for p in SAMPLES.iterdir() if p.is_file())
    assert len(samples) >= 8

    def all_materialized() -> bool:
        stats = partition_stats(dev_server)
        return all(
            stats[a]["numMaterialized"] == len(samples)
            for a in ("parsed_documents", "chunks", "embeddings")
        )

    wait_for(all_materialized, 180, "the sensor's run over the sample documents")
    assert partition_stats(dev_server)["embeddings"]["numFailed"] == 0
    assert project.scalar("SELECT count(DISTINCT partition_key) FROM embeddings") == len(samples)

    with Browser(project.home.parent / "chromium") as browser:
        browser.open(f"http://127.0.0.1:{dev_server}/assets/embeddings?view=partitions")
        browser.wait_for(f"Materialized ({len(samples)})", "Failed (0)")
        browser.wait_for("samples-brewing-guide.md-")
        browser.screenshot(ARTIFACTS / "samples-partitions.png")

        # The Launchpad's defaults are mock mode's: no model it would not use, and the IO
        # manager says what it is.
        browser.open(
            f"http://127.0.0.1:{dev_server}/locations/{location(dev_server)}/jobs/ingest/playground"
        )
        shown = browser.wait_for("mode: mock", "nothing is pickled")
        assert "text-embedding-3-small" not in shown
        browser.screenshot(ARTIFACTS / "launchpad.png")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it)")
def test_the_ui_shows_failed_documents_failed_and_fallbacks_as_fallbacks(
    project: Project, dev_server: int
):
    # Dropped into a running `tvdb dev`, as a user would: text renamed to .pdf, a PDF cut short.
    project.write("drop/notes.pdf", "just some text, not a PDF\n")
    good = (SAMPLES / "annual-report-2024.pdf").read_bytes()
    project.write("drop/cut-short.pdf", good[: len(good) // 3])
    bad = {
        partition_key_for("drop/notes.pdf"): "corrupt PDF (no %PDF- header)",
        partition_key_for("drop/cut-short.pdf"): "corrupt PDF",
    }
    wait_for(lambda: failed_check_partitions(dev_server) == set(bad), 180, "the failed checks")

    with Browser(project.home.parent / "chromium") as browser:
        # The document check: red for exactly the failed documents, with the reason.
        page = f"http://127.0.0.1:{dev_server}/assets/embeddings?view=checks"
        browser.open(f"{page}&checkDetail=document_ingested")
        browser.wait_for("document_ingested", "Latest execution")
        browser.click("Partitions", -1)  # the check's tab, not the asset's
        # A batch run reports its failed documents only; the others have no result.
        shown = browser.wait_for("Failed (2)")
        assert f"Missing ({len(list(SAMPLES.iterdir()))})" in shown
        browser.screenshot(ARTIFACTS / "document-check-partitions.png")
        notes = next(k for k in bad if k.startswith("drop-notes"))
        browser.click_text(notes[-10:])
        browser.wait_for("corrupt PDF (no %PDF- header)", "parse")
        browser.screenshot(ARTIFACTS / "document-check-failed-partition.png")

        # The batch check lists both, with stage and reason.
        browser.open(f"{page}&checkDetail=batch_documents_ingested")
        shown = browser.wait_for(
            "2 document(s) not ingested", "drop/notes.pdf", "drop/cut-short.pdf"
        )
        assert "corrupt PDF (no %PDF- header)" in shown
        browser.screenshot(ARTIFACTS / "batch-check.png")

        # The document's own partition: status and error first.
        browser.open(
            f"http://127.0.0.1:{dev_server}/assets/parsed_documents?view=partitions&partition={notes}"
        )
        shown = browser.wait_for("Metadata", "corrupt PDF (no %PDF- header)")
        metadata = shown[shown.index("Metadata") :]
        assert metadata.split()[1:3] == ["status", "failed"], metadata[:200]

        # Hybrid mode without a key: the run says it fell back, and why.
        run_id = launch(dev_server, partition_key_for("samples/faq.txt"), embedder_mode="hybrid")
        browser.open(f"http://127.0.0.1:{dev_server}/runs/{run_id}")
        shown = browser.wait_for("hybrid fallback", seconds=120)
        assert "no key (OPENAI_API_KEY is not set)" in shown
        browser.show("hybrid fallback")
        browser.screenshot(ARTIFACTS / "hybrid-fallback-run.png")


def failed_check_partitions(port: int) -> set[str]:
    data = graphql(port, CHECK_QUERY)
    checks = data["assetNodeOrError"]["assetChecksOrError"]["checks"]
    [check] = [c for c in checks if c["name"] == "document_ingested"]
    return set(check["partitionStatuses"]["failedPartitions"])


def launch(port: int, partition_key: str, embedder_mode: str) -> str:
    params = {
        "selector": {
            "repositoryLocationName": location(port),
            "repositoryName": "__repository__",
            "jobName": "ingest",
        },
        "runConfigData": {"resources": {"embedder": {"config": {"mode": embedder_mode}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition_key}]},
    }
    launched = graphql(port, LAUNCH_MUTATION, {"params": params})["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return str(launched["run"]["runId"])
