"""One dynamic partition per uploaded document; see `lib.ids.partition_key_for`."""

import dagster as dg

DOCUMENTS = "documents"

documents_partitions = dg.DynamicPartitionsDefinition(name=DOCUMENTS)

# Dagster's documented run tags for a single run over a range of partitions.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def range_tags(keys: list[str]) -> dict[str, str]:
    """Tags that make one run cover a contiguous stretch of partition keys."""
    return {
        RANGE_START_TAG: keys[0],
        RANGE_END_TAG: keys[-1],
    }


def apply_requests(
    instance: dg.DagsterInstance,
    requests: "list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] | None",
) -> None:
    """What the daemon does with a sensor tick's partition requests; for evaluating the
    sensor outside it (tests, the benchmark)."""
    for request in requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
