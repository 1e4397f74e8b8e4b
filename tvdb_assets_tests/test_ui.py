"""`tvdb dev` as a user starts it: samples flow through the sensor and show in the UI.

Drives the real `dagster dev` (webserver + daemon) over GraphQL and reads the rendered
asset page in headless Chromium.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tvdb_assets.cli import SAMPLES
from tvdb_assets_tests.conftest import Project

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STATS_QUERY = """{ assetNodes { assetKey { path }
    partitionStats { numMaterialized numPartitions numFailed } } }"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


def partition_stats(port: int) -> dict[str, dict]:
    nodes = graphql(port, STATS_QUERY)["assetNodes"]
    return {"/".join(n["assetKey"]["path"]): n["partitionStats"] for n in nodes}


@pytest.fixture
def dev_server(project: Project, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = (tmp_path / "dev.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("tvdb")), "dev", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=os.environ.copy(),
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


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except OSError as error:  # the webserver is still starting
            last_error = error
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error})")


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

    dom = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={project.home.parent / 'chromium'}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            f"http://127.0.0.1:{dev_server}/assets/embeddings?view=partitions",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f"Materialized ({len(samples)})" in dom
    assert "Failed (0)" in dom
    assert "samples-brewing-guide.md-" in dom
