"""The inbox sensor, evaluated as the daemon would, with Dagster's test utilities."""

import hashlib
from datetime import timedelta

import dagster as dg
import psycopg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from tvdb_assets.definitions import defs
from tvdb_assets.defs import runs
from tvdb_assets.defs.partitions import DOCUMENTS, RANGE_END_TAG, RANGE_START_TAG
from tvdb_assets.defs.resources import PostgresResource, UploadsResource
from tvdb_assets.lib import store, sync
from tvdb_assets.lib.ids import partition_key_for
from tvdb_assets.lib.store import claims
from tvdb_assets_tests import events
from tvdb_assets_tests.conftest import Project

RESOURCES = {"upload_store": UploadsResource(), "database": PostgresResource()}


def tick(instance: dg.DagsterInstance, cursor: str | None):
    return events.tick(defs, instance, cursor, RESOURCES)


def test_new_files_become_partitions_and_batch_runs(project: Project, instance, monkeypatch):
    monkeypatch.setenv("TVDB_BATCH_SIZE", "2")
    paths = ["a.md", "b.md", "docs/c.md"]
    for path in paths:
        project.write(path, f"# {path}\n\nSome text about {path}.\n")
    keys = [partition_key_for(p) for p in paths]

    result = tick(instance, None)

    (added,) = result.dynamic_partitions_requests
    assert isinstance(added, dg.AddDynamicPartitionsRequest)
    assert list(added.partition_keys) == keys
    first, second = result.run_requests
    assert (first.tags[RANGE_START_TAG], first.tags[RANGE_END_TAG]) == (keys[0], keys[1])
    assert second.partition_key == keys[2]
    assert instance.get_dynamic_partitions(DOCUMENTS) == keys

    # `uploads` records each file: its data version is the content hash, which each parse
    # then records as the version of the upload it read.
    shas = {
        k: hashlib.sha256(project.inbox.joinpath(p).read_bytes()).hexdigest()
        for k, p in zip(keys, paths, strict=True)
    }
    for key, path in zip(keys, paths, strict=True):
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("uploads"), asset_partitions=[key]),
            limit=1,
        ).records
        seen = record.asset_materialization
        assert seen.metadata["path"].value == path and seen.tags[DATA_VERSION_TAG] == shas[key]
    launch(instance, result)
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("parsed_documents"), asset_partitions=[keys[2]]
        ),
        limit=1,
    ).records
    read = hashlib.sha256(shas[keys[2]].encode()).hexdigest()  # of the run's one partition
    assert record.asset_materialization.tags["dagster/input_data_version/uploads"] == read
    settled = tick(instance, result.cursor)  # the runs stored everything
    assert settled.run_requests == [] and settled.skip_message == "all stored"
    idle = tick(instance, settled.cursor)
    assert idle.run_requests == [] and "inbox unchanged" in (idle.skip_message or "")


def launch(instance: dg.DagsterInstance, result) -> None:
    """What the daemon does with the tick's run requests, in this process."""
    for run in result.run_requests:
        tags = dict(run.tags)
        if run.partition_key:
            tags["dagster/partition"] = run.partition_key
        defs.resolve_job_def("ingest").execute_in_process(instance=instance, tags=tags)


def test_documents_a_dead_run_left_undone_are_requested_again(project: Project, instance):
    for path in ["a.md", "b.md"]:
        project.write(path, f"# {path}\n\nText of {path}.\n")
    first = tick(instance, None)
    (request,) = first.run_requests
    # The run was launched; while it is in flight, ticks leave its documents alone.
    run = instance.create_run_for_job(
        defs.resolve_job_def("ingest"), tags=request.tags, status=dg.DagsterRunStatus.NOT_STARTED
    )
    waiting = tick(instance, first.cursor)
    assert waiting.run_requests == []
    assert waiting.skip_message == "2 document(s) in flight or waiting to retry"

    # The process running it died before storing anything (its owner is gone): the next
    # tick fails the run and asks for its documents again at once.
    with psycopg.connect(project.database_url, autocommit=True) as conn:
        claims.own_run(conn, 4242, run.run_id)
    again = tick(instance, waiting.cursor)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
    (retry,) = again.run_requests
    assert retry.tags == request.tags and retry.run_key != request.run_key
    launch(instance, again)
    assert project.scalar("SELECT count(*) FROM documents WHERE indexed_at IS NOT NULL") == 2
    assert tick(instance, again.cursor).skip_message == "all stored"


def test_a_run_that_fails_by_itself_is_retried_after_a_pause_not_in_a_storm(
    project: Project, instance, monkeypatch
):
    project.write("a.md", "# a\n\nText.\n")
    first = tick(instance, None)
    (request,) = first.run_requests
    run = instance.create_run_for_job(
        defs.resolve_job_def("ingest"),
        tags={**request.tags, "dagster/partition": request.partition_key},
        status=dg.DagsterRunStatus.NOT_STARTED,
    )
    instance.report_run_failed(run)  # say, a missing key failed the whole run

    paused = tick(instance, first.cursor)
    assert paused.run_requests == []
    assert paused.skip_message == "1 document(s) in flight or waiting to retry"

    monkeypatch.setattr(runs, "RETRY_FAILED_AFTER", timedelta(0))  # the pause is over
    (retry,) = tick(instance, paused.cursor).run_requests
    assert retry.partition_key == request.partition_key


def test_changed_files_rerun_and_deleted_files_retire(project: Project, instance):
    for path in ["a.md", "b.md", "c.md"]:
        project.write(path, f"# {path}\n\nText of {path}.\n")
    first = tick(instance, None)
    launch(instance, first)
    assert project.scalar("SELECT count(*) FROM documents") == 3

    project.write("a.md", "# a.md\n\nNew text of a.\n")
    (project.inbox / "c.md").unlink()
    touched = project.write("b.md", "# b.md\n\nText of b.md.\n")  # same content, new mtime
    assert touched.exists()

    result = tick(instance, first.cursor)

    a, b, c = (partition_key_for(p) for p in ["a.md", "b.md", "c.md"])
    (deleted,) = result.dynamic_partitions_requests
    assert isinstance(deleted, dg.DeleteDynamicPartitionsRequest)
    assert list(deleted.partition_keys) == [c]
    (run,) = result.run_requests
    assert run.partition_key == a
    assert instance.get_dynamic_partitions(DOCUMENTS) == [b, a]  # a moved to the end
    assert project.scalar("SELECT count(*) FROM documents WHERE partition_key = %s", c) == 0
    assert project.scalar("SELECT count(*) FROM chunks WHERE partition_key = %s", c) == 0
    assert project.scalar("SELECT count(*) FROM inbox_files") == 2


def test_runs_of_a_dead_tvdb_ingest_are_failed_and_free_their_queue_slots(
    project: Project, instance
):
    """A `tvdb ingest` killed mid-run leaves its run STARTED; the next tick fails it."""
    project.write("a.md", "# a\n\nText.\n")
    job = defs.resolve_job_def("ingest")
    dead = [instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED) for _ in range(4)]
    with psycopg.connect(project.database_url, autocommit=True) as conn:
        # The owner lock is held by this connection only while it lives: one owner is alive.
        alive = claims.Owner(psycopg.connect(project.database_url, autocommit=True))
        for run in dead:
            claims.own_run(conn, 4242, run.run_id)  # an owner no process holds any more
        live_run = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
        claims.own_run(conn, alive.number, live_run.run_id)

        result = tick(instance, None)

        assert {instance.get_run_by_id(r.run_id).status for r in dead} == {  # type: ignore[union-attr]
            dg.DagsterRunStatus.FAILURE
        }
        assert instance.get_run_by_id(live_run.run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]
        assert len(result.run_requests) == 1  # and the new upload is requested as usual
        alive.close()


def test_a_file_registered_after_a_tick_listed_the_inbox_is_not_retired(project: Project):
    """`tvdb ingest` copies a file in and registers it while a tick is between its listing
    (taken before the inbox lock) and its comparison: the listing misses the file, which is
    there all the same and stays registered. Once it is really gone, it retires."""
    project.write("a.md", "# A\n\nAbout anchors.\n")
    uploads = UploadsResource().client()
    listed_by_the_tick = list(uploads.list())
    project.write("b.md", "# B\n\nAbout buoys.\n")
    with store.connect() as conn:
        sync.refresh(conn, uploads)  # as `tvdb ingest` registers what it copied in

        changes = sync.refresh(conn, uploads, listed_by_the_tick)

        assert changes.removed == []
        registered = conn.execute("SELECT path FROM inbox_files ORDER BY path").fetchall()
        assert registered == [("a.md",), ("b.md",)]
        (project.inbox / "b.md").unlink()
        gone = sync.refresh(conn, uploads, list(uploads.list()))
        assert [f.path for f in gone.removed] == ["b.md"]
