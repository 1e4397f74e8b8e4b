"""The healing schedules, each tick evaluated on a real instance as the daemon would, and
the runs it requests executed."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from tvdb_assets.cli import main
from tvdb_assets.definitions import build_defs
from tvdb_assets.defs.partitions import DOCUMENTS, RANGE_END_TAG, RANGE_START_TAG
from tvdb_assets.defs.resources import PostgresResource, UploadsResource
from tvdb_assets.defs.schedules import (
    heal_fallbacks,
    reconcile_nightly,
    reembed_on_model_change,
    retry_failed,
)
from tvdb_assets.lib.ids import partition_key_for
from tvdb_assets_tests.conftest import Project
from tvdb_assets_tests.fakes.openai_fake import FakeOpenAI
from tvdb_assets_tests.guards import close_circuit, open_circuit

RESOURCES = {"upload_store": UploadsResource(), "database": PostgresResource()}
MODEL = "text-embedding-3-small"


def tick(instance: dg.DagsterInstance, schedule: dg.ScheduleDefinition):
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime.now(UTC), resources=RESOURCES
    )
    return schedule.evaluate_tick(context)


def launch(instance: dg.DagsterInstance, result) -> list[dg.DagsterRun]:
    """What the daemon does with the tick's run requests, in this process."""
    job = build_defs().resolve_job_def("ingest")
    runs = []
    for request in result.run_requests:
        done = job.execute_in_process(
            run_config=request.run_config,
            instance=instance,
            tags=request.tags,
            raise_on_error=False,
        )
        runs.append(instance.get_run_by_id(done.run_id))
    return runs


def write_notes(root: Path, count: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        body = " ".join(f"estuary{i} sample{j} salinity" for j in range(300))
        (root / f"note{i}.md").write_text(f"# Note {i}\n\n{body}\n")
    return root


def one_ranged_request(result, reason: str) -> dg.RunRequest:
    (request,) = result.run_requests
    assert request.tags["tvdb/reason"] == reason
    assert RANGE_START_TAG in request.tags and RANGE_END_TAG in request.tags
    return request


def test_the_schedules_are_off_until_someone_turns_them_on() -> None:
    schedules = {s.name: s for s in build_defs().get_repository_def().schedule_defs}
    assert set(schedules) == {
        "retry_failed",
        "heal_fallbacks",
        "reembed_on_model_change",
        "reconcile_nightly",
    }
    assert {s.default_status for s in schedules.values()} == {dg.DefaultScheduleStatus.STOPPED}
    assert {s.job_name for s in schedules.values()} == {"ingest"}


def test_reembed_on_model_change_recuts_with_the_new_settings(
    project: Project, instance, tmp_path, monkeypatch
):
    assert main(["ingest", str(write_notes(tmp_path / "notes", 3))]) == 0
    assert "nothing to run" in (tick(instance, reembed_on_model_change).skip_message or "")

    monkeypatch.setenv("TVDB_CHUNK_MAX_TOKENS", "100")
    request = one_ranged_request(tick(instance, reembed_on_model_change), "reembed_on_model_change")
    assert request.run_config["ops"]["chunks"]["config"]["max_tokens"] == 100
    (run,) = launch(instance, tick(instance, reembed_on_model_change))
    assert run.status == dg.DagsterRunStatus.SUCCESS

    longest = project.scalar("SELECT max(tokens) FROM chunks")
    unvectored = project.scalar(
        "SELECT count(*) FROM chunks c LEFT JOIN embeddings e ON e.chunk_id = c.id "
        "WHERE e.chunk_id IS NULL"
    )
    assert longest <= 100 and unvectored == 0
    assert "nothing to run" in (tick(instance, reembed_on_model_change).skip_message or "")


def test_retry_failed_waits_longer_after_each_try_and_gives_up(
    project: Project, instance, openai_loopback: FakeOpenAI, tmp_path, monkeypatch
):
    monkeypatch.setenv("TVDB_EMBEDDER_MODE", "real")
    monkeypatch.setenv("TVDB_DAILY_BUDGET_USD", "0")  # spent: every paid call is refused
    assert main(["ingest", str(write_notes(tmp_path / "notes", 2))]) == 1

    def age_failures(minutes: int) -> None:
        with project.connect() as conn:
            conn.execute(f"UPDATE ingest_errors SET at = at - interval '{minutes} minutes'")

    assert "nothing to run" in (tick(instance, retry_failed).skip_message or "")  # not yet
    age_failures(11)
    (run,) = launch(instance, tick(instance, retry_failed))  # the budget is still spent
    assert run.tags["tvdb/reason"] == "retry_failed"
    attempts = "SELECT array_agg(attempt) FROM ingest_errors WHERE resolved_at IS NULL"
    assert project.scalar(attempts) == [2, 2]
    age_failures(11)
    assert "nothing to run" in (tick(instance, retry_failed).skip_message or "")  # 20 min now
    age_failures(10)
    assert len(tick(instance, retry_failed).run_requests) == 1

    open_circuit()
    assert "openai circuit open" in (tick(instance, retry_failed).skip_message or "")
    close_circuit()

    with project.connect() as conn:
        conn.execute("UPDATE ingest_errors SET attempt = 6")  # tried six times already
    assert "nothing to run" in (tick(instance, retry_failed).skip_message or "")  # given up
    with project.connect() as conn:
        conn.execute("UPDATE ingest_errors SET attempt = 2")

    monkeypatch.setenv("TVDB_DAILY_BUDGET_USD", "5")
    (run,) = launch(instance, tick(instance, retry_failed))
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert project.scalar("SELECT count(*) FROM ingest_errors WHERE resolved_at IS NULL") == 0
    assert project.scalar(
        "SELECT count(*) FROM embeddings WHERE model = %s AND NOT fallback", MODEL
    ) == project.scalar("SELECT count(*) FROM chunks")


def test_heal_fallbacks_waits_for_the_circuit_then_replaces_stand_ins(
    project: Project, instance, openai_loopback: FakeOpenAI, tmp_path, monkeypatch
):
    open_circuit()
    assert main(["ingest", "--embedder-mode", "hybrid", str(write_notes(tmp_path / "n", 2))]) == 0
    assert project.scalar("SELECT count(*) FROM embeddings WHERE fallback") > 0

    assert "mock modes" in (tick(instance, heal_fallbacks).skip_message or "")
    monkeypatch.setenv("TVDB_EMBEDDER_MODE", "hybrid")
    assert "openai circuit open" in (tick(instance, heal_fallbacks).skip_message or "")

    close_circuit()
    result = tick(instance, heal_fallbacks)
    request = one_ranged_request(result, "heal_fallbacks")
    assert request.run_config["resources"]["embedder"]["config"]["mode"] == "hybrid"
    (run,) = launch(instance, result)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert project.scalar("SELECT count(*) FROM embeddings WHERE fallback") == 0
    assert len(openai_loopback.successful_requests) >= 1
    assert "nothing to run" in (tick(instance, heal_fallbacks).skip_message or "")


def test_reconcile_nightly_runs_what_was_missed_and_retires_what_is_gone(
    project: Project, instance, tmp_path
):
    for name in ("kept", "unfinished", "deleted", "orphan"):
        project.write(f"{name}.md", f"# {name}\n\nThe {name} document, about harbours.\n")
    assert main(["ingest", str(project.inbox)]) == 0
    keys = {name: partition_key_for(f"{name}.md") for name in ("kept", "unfinished", "deleted")}
    keys["orphan"] = partition_key_for("orphan.md")
    keys["missed"] = partition_key_for("missed.md")

    # Since, with no sensor running: a crash before `embeddings` of one document; an
    # upload deleted; an upload forgotten by the registry but not its rows; a new upload.
    with project.connect() as conn:
        conn.execute(
            "UPDATE documents SET indexed_at = NULL WHERE partition_key = %s",
            (keys["unfinished"],),
        )
        conn.execute("DELETE FROM inbox_files WHERE partition_key = %s", (keys["orphan"],))
    (project.inbox / "deleted.md").unlink()
    (project.inbox / "orphan.md").unlink()
    project.write("missed.md", "# missed\n\nA document the sensor never saw.\n")

    result = tick(instance, reconcile_nightly)
    one_ranged_request(result, "reconcile_nightly")
    (run,) = launch(instance, result)
    assert run.status == dg.DagsterRunStatus.SUCCESS

    present = {keys["kept"], keys["unfinished"], keys["missed"]}
    assert set(instance.get_dynamic_partitions(DOCUMENTS)) == present
    with project.connect() as conn:
        stored = {
            row[0]
            for row in conn.execute(
                "SELECT partition_key FROM documents WHERE indexed_at IS NOT NULL"
            )
        }
        chunked = {row[0] for row in conn.execute("SELECT DISTINCT partition_key FROM chunks")}
    assert stored == chunked == present
    assert "nothing to run" in (tick(instance, reconcile_nightly).skip_message or "")
