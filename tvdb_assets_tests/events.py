"""What the tests read back from Dagster's event log: a partition's metadata, a check's
result in a run."""

import dagster as dg


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
