"""`tvdb ingest`: materialize what the intake found, in batches, through Dagster.

Runs go through the same Dagster instance the UI shows (in this process), one run per
contiguous range of partition keys, exactly as the sensor would request them.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg

from tvdb_assets.defs.partitions import DOCUMENTS, range_tags
from tvdb_assets.lib import settings, sync
from tvdb_assets.lib.intake import IngestSummary, Intake, summarize, take_in

Progress = Callable[[int, int], None]


def ingest(
    sources: Sequence[Path],
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    batch_size: int | None = None,
    progress: Progress | None = None,
    run_config: dict | None = None,
) -> IngestSummary:
    return run(take_in(sources), instance, defs, batch_size, progress, run_config)


def run(
    intake: Intake,
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    batch_size: int | None = None,
    progress: Progress | None = None,
    run_config: dict | None = None,
) -> IngestSummary:
    plan = sync.plan_partitions(
        instance.get_dynamic_partitions(DOCUMENTS),
        intake.changes,
        batch_size or settings.batch_size(),
    )
    for key in plan.retire_keys + plan.move_keys:
        instance.delete_dynamic_partition(DOCUMENTS, key)
    if plan.move_keys or plan.new_keys:
        instance.add_dynamic_partitions(DOCUMENTS, plan.move_keys + plan.new_keys)

    job = defs.resolve_job_def("ingest")
    total = sum(len(b) for b in plan.batches)
    done = 0
    runs: list[str] = []
    failed_runs: list[str] = []
    keys: list[str] = []
    if progress and total:
        progress(0, total)
    for batch in plan.batches:
        result = job.execute_in_process(
            run_config=run_config, instance=instance, tags=range_tags(batch), raise_on_error=False
        )
        runs.append(result.run_id)
        if result.success:
            keys.extend(batch)
        else:
            failed_runs.append(result.run_id)
        done += len(batch)
        if progress:
            progress(done, total)
    return summarize(intake, runs, failed_runs, keys)
