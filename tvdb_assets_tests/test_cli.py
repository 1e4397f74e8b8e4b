"""The `tvdb` console script, run as a user would."""

import json
import os
import re
import subprocess
import sys

from tvdb_assets.cli import main
from tvdb_assets_tests.conftest import Project


def test_ingest_search_and_status(project: Project, tmp_path, capsys):
    source = tmp_path / "handbook"
    source.mkdir()
    (source / "bees.md").write_text(
        "# Beekeeping\n\n## Hives\n\nA hive holds one queen and many worker bees.\n"
    )
    (source / "ships.txt").write_text("Clipper ships carried tea across the ocean.\n")
    (source / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not really a pdf")

    code = main(["ingest", str(source)])
    out = capsys.readouterr()

    assert code == 1  # one document failed
    assert "3 files: 3 new" in out.out and "2 ingested" in out.out
    assert "failed: handbook/broken.pdf: corrupt PDF" in out.out
    assert "3/3 documents" in out.err  # the progress bar

    assert main(["search", "queen worker bees hive", "-k", "2"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(hits) == 2
    assert hits[0]["document"] == "handbook/bees.md"
    assert hits[0]["heading_path"] == ["Beekeeping", "Hives"]
    assert hits[0]["score"] >= hits[1]["score"]

    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert "documents" in status and "handbook/broken.pdf" in status

    assert main(["ingest", str(source)]) == 1  # the bad file is still failing
    out = capsys.readouterr().out
    assert "0 new, 0 changed, 3 unchanged" in out and "0 run(s)" in out

    # A mistyped path is one line and exit 2, for an ingest and a dry run alike.
    for extra in ([], ["--dry-run"]):
        assert main(["ingest", *extra, str(tmp_path / "handbok")]) == 2
        err = capsys.readouterr().err
        assert err.strip().endswith("handbok: no such file or directory"), err
        assert "Traceback" not in err


def test_dry_run_estimates_cost_without_calling_anything(
    project: Project, fake_openai, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    source = tmp_path / "plan"
    source.mkdir()
    (source / "a.md").write_text("# A\n\n" + "words about tidal energy " * 200 + "\n")
    (source / "b.txt").write_text("Short note on wave power.\n")

    assert main(["ingest", "--dry-run", "--embedder-mode", "real", str(source)]) == 0
    out = capsys.readouterr().out

    assert "plan/a.md" in out and "plan/b.txt" in out
    totals = dict(
        line.split(": ", 1) for line in out.splitlines() if ": " in line and "/" not in line
    )
    assert int(totals["to_ingest"]) == 2
    assert int(totals["tokens_to_embed"]) > 500
    assert 0 < float(totals["estimated_usd"]) < 0.001
    assert float(totals["budget_left_usd"]) == 5.0 and totals["fits_budget"] == "yes"
    assert fake_openai.requests == []  # no API was called ...
    assert project.scalar("SELECT count(*) FROM documents") == 0  # ... and nothing changed
    assert not (project.inbox / "plan").exists()


def test_status_shows_spend_and_budget(project: Project, capsys):
    with project.connect() as conn:
        conn.execute(
            "INSERT INTO cost_ledger (service, model, unit, units, usd, status, correlation_id) "
            "VALUES ('openai', 'text-embedding-3-small', 'tokens', 50000, 0.001, 'billed', 'c1')"
        )
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"spent_usd\s+0\.001000", out)
    assert re.search(r"budget_left_usd\s+4\.999000", out)
    assert re.search(r"openai/text-embedding-3-small\s+tokens / usd\s+50000 / 0\.001000", out)


def test_mock_mode_imports_no_service_sdk(project: Project, tmp_path):
    # The OpenAI and LlamaParse SDKs take seconds to import; an ingest that never calls
    # them (mock mode, the default) must not pay for them, nor must its workers.
    source = tmp_path / "notes"
    source.mkdir()
    (source / "tides.md").write_text("# Tides\n\nThe moon pulls the sea twice a day.\n")
    (source / "page.html").write_text("<h1>Kelp</h1><p>Kelp forests shelter fish.</p>")
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tvdb_assets.cli", "ingest", str(source)],
        env={**os.environ, "TVDB_WORKERS": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "2 ingested" in done.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert {"tvdb_assets.definitions", "html_to_markdown", "tiktoken"} <= imported
    assert not {"openai", "llama_cloud_services", "llama_cloud"} & imported


def test_search_and_status_load_no_dagster(project: Project, tmp_path):
    # They build their clients from `lib`, not from Dagster resources: a query or a look
    # at the spend does not wait for Dagster to import.
    source = tmp_path / "notes"
    source.mkdir()
    (source / "tides.md").write_text("# Tides\n\nThe moon pulls the sea twice a day.\n")
    assert main(["ingest", str(source)]) == 0
    shown = {}
    for command in (["search", "moon and sea"], ["status"]):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "tvdb_assets.cli", *command],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        imported = {
            line.rsplit("|", 1)[-1].strip()
            for line in done.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "dagster" not in imported, command
        shown[command[0]] = done.stdout
    assert "tides.md" in shown["search"]
    assert "budget" in shown["status"]
