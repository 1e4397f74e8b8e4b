"""TVDB_LOG_FORMAT=json, and secrets masked in every log line, text or JSON."""

import json
import logging
from pathlib import Path

import dagster as dg
import pytest

from tvdb_assets import runner
from tvdb_assets.cli import main
from tvdb_assets.definitions import build_defs
from tvdb_assets.defs.assets.batch import CORRELATION_TAG, call_context
from tvdb_assets.lib import services
from tvdb_assets_tests.conftest import Project
from tvdb_assets_tests.fakes.faults import Fault
from tvdb_assets_tests.fakes.openai_fake import FakeOpenAI

# Shaped like a LlamaCloud key: a service that echoes it in an error body gets it past the
# first line of defence (`errors.redact` knows the configured keys and OpenAI's shape).
ECHOED_KEY = "llx-" + "7f3a9c" * 6
RETRY_LOGGER = "tvdb_assets.lib.embedding.openai_embedder"


@pytest.fixture
def openai_real(project: Project, fake_openai: FakeOpenAI, monkeypatch) -> FakeOpenAI:
    """Real mode against the loopback OpenAI, whose first answer is a 500 that echoes a key:
    the embedder logs a retry (a project logger, inside the run) that quotes it."""
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("TVDB_EMBEDDER_MODE", "real")
    fake_openai.script([Fault(status=500, message=f"upstream refused key {ECHOED_KEY}")])
    services.reset()
    yield fake_openai
    services.reset()


def write_docs(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "tides.md").write_text("# Tides\n\nThe moon pulls the sea into two bulges.\n")
    (root / "waves.md").write_text("# Waves\n\nWind over open water raises swell.\n")
    return root


def json_lines(text: str) -> list[dict]:
    """Every line of `text` as a JSON object (each must be one)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def json_among(text: str) -> list[dict]:
    """The JSON lines among others: a run's console prints Dagster's own lines as text."""
    return json_lines("\n".join(line for line in text.splitlines() if line.startswith("{")))


def document_keys(project: Project) -> list[str]:
    with project.connect() as conn:
        return sorted(k for (k,) in conn.execute("SELECT partition_key FROM documents").fetchall())


def test_a_project_logger_in_a_run_prints_json_with_the_runs_ids(
    project: Project, instance: dg.DagsterInstance, openai_real, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TVDB_LOG_FORMAT", "json")
    summary = runner.ingest([write_docs(tmp_path / "sea")], instance, build_defs())
    assert summary.errors == [] and summary.ingested == 2  # the retry succeeded

    lines = json_among(capsys.readouterr().err)
    (retry,) = [line for line in lines if line["logger"] == RETRY_LOGGER]
    (run_id,) = summary.runs
    run = instance.get_run_by_id(run_id)
    assert run is not None
    assert retry["run_id"] == run_id
    assert retry["correlation_id"] == run.tags[CORRELATION_TAG]
    assert sorted(retry["partition_keys"]) == document_keys(project)
    assert retry["level"] == "WARNING" and retry["time"].startswith("20")
    assert "attempt 1 failed" in retry["message"]
    assert "[redacted]" in retry["message"] and ECHOED_KEY not in retry["message"]
    # The line is in the run's event log too (the instance manages `tvdb_assets`), masked.
    logged = [e.user_message for e in instance.all_logs(run_id) if "attempt 1 failed" in e.message]
    assert logged and all(ECHOED_KEY not in m and "[redacted]" in m for m in logged)


def test_text_stays_the_default_and_is_masked_in_the_run_log(
    project: Project, instance: dg.DagsterInstance, openai_real, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("TVDB_LOG_FORMAT", raising=False)
    summary = runner.ingest([write_docs(tmp_path / "sea")], instance, build_defs())
    assert summary.errors == []

    terminal = capsys.readouterr().err
    assert not any(line.startswith("{") for line in terminal.splitlines())
    (run_id,) = summary.runs
    logged = [e.user_message for e in instance.all_logs(run_id) if "attempt 1 failed" in e.message]
    assert logged and all(ECHOED_KEY not in m and "[redacted]" in m for m in logged)
    assert ECHOED_KEY not in terminal


def test_tvdb_in_json_writes_json_lines_only_on_stderr_and_in_its_log(
    project: Project, openai_real, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TVDB_LOG_FORMAT", "json")
    assert main(["ingest", str(write_docs(tmp_path / "sea"))]) == 0
    out = capsys.readouterr()

    assert "2 files: 2 new" in out.out  # the summary is the command's output, as ever
    lines = json_lines(out.err)  # every line on stderr is one JSON object
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    progress = [line for line in lines if line["logger"] == "tvdb_assets.cli"]
    assert progress[-1]["message"].endswith("2/2 documents")
    assert all("run_id" not in line for line in progress)  # logged after the run's steps
    (retry,) = [line for line in lines if line["logger"] == RETRY_LOGGER]
    assert retry["run_id"] and retry["correlation_id"]
    assert sorted(retry["partition_keys"]) == document_keys(project)
    assert ECHOED_KEY not in out.err and "[redacted]" in retry["message"]

    logged = json_lines((project.home.parent / "tvdb_home" / "logs" / "tvdb.log").read_text())
    assert any(line["logger"] == RETRY_LOGGER for line in logged)


def test_tvdb_masks_keys_in_its_text_log(project: Project, openai_real, tmp_path, capsys):
    assert main(["ingest", str(write_docs(tmp_path / "sea"))]) == 0
    err = capsys.readouterr().err
    assert "2/2 documents" in err and not err.lstrip().startswith("{")  # the progress bar

    log = (project.home.parent / "tvdb_home" / "logs" / "tvdb.log").read_text()
    (retry,) = [line for line in log.splitlines() if RETRY_LOGGER in line]
    assert " WARNING " in retry and "attempt 1 failed" in retry
    assert "[redacted]" in retry and ECHOED_KEY not in log


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_keys_logged_on_purpose_come_out_masked(
    instance: dg.DagsterInstance, monkeypatch, capsys, log_format
):
    """Whatever a line quotes: a configured secret, or a credential by its shape."""
    monkeypatch.setenv("TVDB_LOG_FORMAT", log_format)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-configured-" + "a1" * 12)
    monkeypatch.setenv("TVDB_WEBHOOK_SECRET", "whsec-" + "b2" * 12)
    leaks = [
        "sk-configured-" + "a1" * 12,
        "whsec-" + "b2" * 12,
        "sk-proj-" + "c3" * 12,
        ECHOED_KEY,
        "eyJhbGciOiJIUzI1NiJ9.payload",
        "s3cr3t-pw",
    ]
    line = (
        f"keys {leaks[0]} {leaks[1]} {leaks[2]} {leaks[3]}, Authorization: Bearer {leaks[4]}, "
        f"postgresql://tvdb:{leaks[5]}@db:5432/tvdb"
    )

    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["a", "b"]))
    def chatty(context: dg.AssetExecutionContext) -> None:
        call_context(context)  # as every batch asset does
        logging.getLogger("tvdb_assets.tests").warning(line)

    result = dg.materialize([chatty], instance=instance, partition_key="b")
    stored = [e.user_message for e in instance.all_logs(result.run_id)]
    err = capsys.readouterr().err
    (message,) = [m for m in stored if "postgresql://" in m]
    line_masked = (
        "keys [redacted] [redacted] [redacted] [redacted], Authorization: Bearer [redacted], "
        "postgresql://tvdb:[redacted]@db:5432/tvdb"
    )
    assert message.endswith(line_masked)
    assert not any(leak in err for leak in leaks)
    if log_format == "json":
        (printed,) = [p for p in json_among(err) if p["logger"] == "tvdb_assets.tests"]
        assert printed["message"] == line_masked
        assert printed["run_id"] == result.run_id and printed["partition_keys"] == ["b"]
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and printed["correlation_id"] == run.tags[CORRELATION_TAG]
