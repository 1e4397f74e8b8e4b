"""A backfill as the UI launches one: partitions selected on the asset page and
materialized, through the GraphQL API, then driven by the backfill daemon's own loop."""

import logging
import sys
from pathlib import Path

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import (
    InProcessTestWorkspaceLoadTarget,
    create_test_daemon_workspace_context,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon.backfill import execute_backfill_iteration
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION
from dagster_graphql.test.utils import execute_dagster_graphql

from tvdb_assets.cli import main
from tvdb_assets.defs.partitions import DOCUMENTS, RANGE_END_TAG, RANGE_START_TAG
from tvdb_assets_tests.conftest import Project

# The project's storage, with runs launched in this process as soon as they are submitted
# (what the queue and the run workers would do, minus the processes).
INSTANCE = """
storage:
  postgres:
    postgres_url:
      env: TVDB_DAGSTER_PG_URL
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
run_launcher:
  module: dagster._core.launcher.sync_in_memory_run_launcher
  class: SyncInMemoryRunLauncher
"""


def write_notes(root: Path, count: int) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"note{i}.md").write_text(f"# Note {i}\n\nTide table {i}, read at dawn.\n")
    return root


def chunk_fingerprint(project: Project) -> object:
    return project.scalar(
        "SELECT md5(string_agg(c.id::text || c.text_sha256 || e.embedding::text, ',' "
        "ORDER BY c.id)) FROM chunks c JOIN embeddings e ON e.chunk_id = c.id"
    )


def test_a_ui_backfill_of_selected_partitions_is_one_ranged_run(project: Project, tmp_path):
    assert main(["ingest", str(write_notes(tmp_path / "notes", 6))]) == 0
    before = chunk_fingerprint(project)
    home = tmp_path / "backfill_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE)
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name="tvdb_assets.definitions",
            attribute="defs",
        ),
        location_name="tvdb_assets",
    )
    with (
        dg.DagsterInstance.from_config(str(home)) as instance,
        create_test_daemon_workspace_context(
            InProcessTestWorkspaceLoadTarget(origin), instance
        ) as workspace,
    ):
        keys = instance.get_dynamic_partitions(DOCUMENTS)
        selected = keys[1:5]
        result = execute_dagster_graphql(
            workspace.create_request_context(),
            LAUNCH_PARTITION_BACKFILL_MUTATION,
            {
                "backfillParams": {
                    "partitionNames": selected,
                    "assetSelection": [
                        {"path": [name]} for name in ("parsed_documents", "chunks", "embeddings")
                    ],
                }
            },
        )
        launched = result.data["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        logger = logging.getLogger("backfill_test")
        for _ in range(10):
            list(execute_backfill_iteration(workspace, logger))
            backfill = instance.get_backfill(backfill_id)
            if backfill is not None and backfill.status != BulkActionStatus.REQUESTED:
                break
        assert backfill is not None and backfill.status == BulkActionStatus.COMPLETED_SUCCESS

        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert len(runs) == 1  # one run for the four documents and three assets
        (run,) = runs
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) == (selected[0], selected[-1])
        latest = instance.get_latest_materialization_events(
            [dg.AssetKey("embeddings")]
        )  # sanity: the asset was materialized by the backfill's run
        assert latest[dg.AssetKey("embeddings")].run_id == run.run_id
        by_partition = {
            key: instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("embeddings"), asset_partitions=[key]),
                limit=1,
            )
            .records[0]
            .run_id
            for key in keys
        }
    assert {k for k, run_id in by_partition.items() if run_id == run.run_id} == set(selected)
    assert chunk_fingerprint(project) == before  # materialized again: the same rows
