"""What the tests read back from Dagster's event log (a partition's metadata, a check's
result in a run, every line of every run), and one tick of the inbox sensor."""

from typing import Any

import dagster as dg

from tvdb_assets.defs.partitions import apply_requests
from tvdb_assets.defs.sensors import inbox_sensor


def latest_metadata(instance: dg.DagsterInstance, asset: str, key: str) -> dict:
    """The metadata of the asset's latest materialization of this partition."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1
    ).records
    assert records and records[0].asset_materialization is not None
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def check_evaluation(
    instance: dg.DagsterInstance, run_id: str, name: str
) -> tuple[bool, dict[str, object]]:
    """Whether the check passed in the run, and its metadata."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.asset_check_evaluation_data
        if evaluation.check_name == name:
            return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}
    raise AssertionError(f"{name} was not evaluated in run {run_id}")


def every_logged_line(instance: dg.DagsterInstance) -> list[str]:
    """Every event of every run, as text: where a leaked secret would show."""
    return [
        str(entry)
        for run in instance.get_run_records()
        for entry in instance.all_logs(run.dagster_run.run_id)
    ]


def tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cursor: str | None,
    resources: dict[str, Any],
) -> dg.SensorResult:
    """One tick of the inbox sensor. The daemon records its events and applies its
    partition requests; a test does it here."""
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources=resources,
        instance_ref=instance.get_ref(),
        definitions=defs,
    )
    result = inbox_sensor.evaluate_tick(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    apply_requests(instance, result.dynamic_partitions_requests)
    return result
