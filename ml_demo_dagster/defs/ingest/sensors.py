"""The sensor that turns each complete batch in `staging/` into one retraining run.

Cursor-based (core/watch.py): each tick lists only keys after the cursor. One run per
complete batch, run key = T (so a batch is never run twice, even after a cursor reset),
partition key = T (added to the `batches` dynamic partitions in the same tick). Runs for
a burst of batches queue up behind each other; none is dropped.
"""

import dagster as dg

from ml_demo_dagster.config import default_config
from ml_demo_dagster.core.watch import StagingCursor, scan
from ml_demo_dagster.defs.partitions import batches
from ml_demo_dagster.defs.resources import StoreResource

# Every asset of the graph, for one batch, in one process (one Spark session per run).
batch_job = dg.define_asset_job(
    "batch_job",
    selection=dg.AssetSelection.all(),
    partitions_def=batches,
    executor_def=dg.in_process_executor,
    description="Retrain on one batch: ingest, features, dataset, tuning, live precision, deployment.",
    tags={"ml-demo/pipeline": "retrain"},
)


def evaluate_staging(context: dg.SensorEvaluationContext, store: StoreResource) -> dg.SensorResult:
    """One sensor tick: the run requests for complete batches that landed since the cursor."""
    result = scan(store.open(), StagingCursor.from_json(context.cursor))
    if result.ignored:
        context.log.warning(f"ignoring keys that are not batch files: {result.ignored[:5]}")
    if not result.complete:
        return dg.SensorResult(skip_reason=result.waiting_reason(), cursor=result.cursor.to_json())
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=b, partition_key=b, tags={"ml-demo/batch": b}) for b in result.complete],
        # Adding a partition that exists already is a no-op, so a replayed tick is harmless.
        dynamic_partitions_requests=[batches.build_add_request(result.complete)],
        cursor=result.cursor.to_json(),
    )


@dg.sensor(
    name="staging_sensor",
    job=batch_job,
    minimum_interval_seconds=default_config().dagster.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts one retraining run per complete batch landing in staging/.",
)
def staging_sensor(context: dg.SensorEvaluationContext, store: StoreResource) -> dg.SensorResult:
    return evaluate_staging(context, store)
