"""Dagster's bookkeeping per document: the pipeline's batch-run shape with no-op assets.

`python -m bench.bookkeeping N [--without-performance-env] [--without-metadata]` runs in a
fresh process against the storage its environment names (TVDB_DAGSTER_PG_URL, DAGSTER_HOME),
adds N dynamic partitions and times one in-process run over the whole key range. Like the
real assets, each no-op asset runs inside `batch_bookkeeping`, adds metadata to every
partition (unless told not to, which isolates what that metadata costs) and its batch's
figures once. Prints one JSON object.
"""

import argparse
import json
import os
import time

import dagster as dg

from tvdb_assets import dagster_env
from tvdb_assets.defs.assets.batch import batch_bookkeeping
from tvdb_assets.defs.partitions import range_tags
from tvdb_assets.lib.ids import partition_key_for

PARTITIONS = "documents"
DOCUMENTS = dg.DynamicPartitionsDefinition(name=PARTITIONS)
TARGET_MS_PER_DOC = 5.0


def _noop(
    name: str, upstream: dg.AssetSpec | dg.AssetsDefinition, metadata: bool
) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        partitions_def=DOCUMENTS,
        deps=[upstream],
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        with batch_bookkeeping(context):
            for key in context.partition_keys if metadata else ():
                values = {"status": "ok", "bytes": 1234, "characters": 5678, "seconds": 0.01}
                context.add_asset_metadata(
                    {**values, "preview": dg.MetadataValue.md(f"# {key}\n\n" + "text " * 80)},
                    partition_key=key,
                )
            # The batch's figures, once (`report_batch`).
            batch = {"documents": len(context.partition_keys)}
            context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=batch))
        return dg.MaterializeResult()

    return _asset


def definitions(metadata: bool = True) -> dg.Definitions:
    uploads = dg.AssetSpec("uploads", partitions_def=DOCUMENTS)
    parsed = _noop("parsed_documents", uploads, metadata)
    chunks = _noop("chunks", parsed, metadata)
    embeddings = _noop("embeddings", chunks, metadata)
    job = dg.define_asset_job("noop", selection=[parsed, chunks, embeddings])
    return dg.Definitions(
        assets=[uploads, parsed, chunks, embeddings],
        jobs=[job],
        executor=dg.in_process_executor,
    )


def measure(partitions: int, performance_env: bool, metadata: bool) -> dict[str, object]:
    dagster_env.prepare()
    if not performance_env:
        for name in dagster_env.PERFORMANCE_ENV:
            os.environ.pop(name, None)
    keys = [partition_key_for(f"corpus/doc-{i:05d}.md") for i in range(partitions)]
    job = definitions(metadata).resolve_job_def("noop")
    with dg.DagsterInstance.get() as instance:
        started = time.perf_counter()
        instance.add_dynamic_partitions(PARTITIONS, keys)
        added = time.perf_counter() - started
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, tags=range_tags(keys))
        seconds = time.perf_counter() - started
        materialized = len(result.get_asset_materialization_events())
    ms_per_doc = 1000 * seconds / partitions
    comparable = performance_env and metadata  # the shape the real assets have
    return {
        "measurement": "dagster_bookkeeping",
        "partitions": partitions,
        "performance_env": performance_env,
        "per_partition_metadata": metadata,
        "seconds": round(seconds, 2),
        "ms_per_doc": round(ms_per_doc, 2),
        "add_partitions_seconds": round(added, 2),
        "materializations": materialized,
        "success": result.success and materialized == 3 * partitions,
        "target": f"<= {TARGET_MS_PER_DOC:g} ms/doc" if comparable else None,
        "met": ms_per_doc <= TARGET_MS_PER_DOC if comparable else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("partitions", type=int)
    parser.add_argument("--without-performance-env", action="store_true")
    parser.add_argument("--without-metadata", action="store_true")
    args = parser.parse_args()
    record = measure(args.partitions, not args.without_performance_env, not args.without_metadata)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
