"""The sensor that turns each complete, valid batch in `staging/` into one retraining run.

Cursor-based (core/watch.py): each tick lists only keys after the cursor. Each complete
batch is read with the staging contract's strict reader first (core/watch.intake): a bad
one is moved to `quarantine/<T>/` with its reason and no run is started for it; a lone file
is reported as waiting and quarantined after `ingest.lone_file_timeout_seconds`. Every
good batch gets one run, run key = T (a batch is never run twice by the sensor, even after
a cursor reset), partition key = T (added to the `batches` dynamic partitions in the same
tick). Runs for a burst of batches queue up behind each other; none is dropped. Nothing
here stops the sensor: a batch that cannot be read now is looked at again next tick.
"""

import dagster as dg

from ml_demo_dagster.config import default_config
from ml_demo_dagster.core.quarantine import one_line
from ml_demo_dagster.core.watch import StagingCursor, intake
from ml_demo_dagster.defs.partitions import batches
from ml_demo_dagster.defs.resources import ProjectConfigResource, StoreResource

# Every asset of the graph, for one batch, in one process (one Spark session per run).
batch_job = dg.define_asset_job(
    "batch_job",
    selection=dg.AssetSelection.all(),
    partitions_def=batches,
    executor_def=dg.in_process_executor,
    description="Retrain on one batch: ingest, features, dataset, tuning, live precision, deployment.",
    tags={"ml-demo/pipeline": "retrain"},
)


def evaluate_staging(
    context: dg.SensorEvaluationContext, store: StoreResource, project: ProjectConfigResource
) -> dg.SensorResult:
    """One sensor tick: the run requests for valid complete batches that landed since the cursor."""
    timeout_ms = project.get().ingest.lone_file_timeout_seconds * 1000
    result = intake(store.open(), StagingCursor.from_json(context.cursor), lone_timeout_ms=timeout_ms)
    if result.ignored:
        context.log.warning(f"ignoring keys that are not batch files: {result.ignored[:5]}")
    for record in result.quarantined:
        context.log.warning(f"batch {record['batch']} quarantined: {one_line(record)}")
    for error in result.errors:
        context.log.warning(f"{error} (looked at again next tick)")
    for batch, notes in result.notes.items():
        context.log.info(f"batch {batch}: {'; '.join(notes)}")
    if not result.ready:
        reason = result.waiting_reason()
        if result.quarantined:
            reason = f"quarantined {', '.join(r['batch'] for r in result.quarantined)}; {reason}"
        return dg.SensorResult(skip_reason=reason, cursor=result.cursor.to_json())
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=b, partition_key=b, tags={"ml-demo/batch": b}) for b in result.ready],
        # Adding a partition that exists already is a no-op, so a replayed tick is harmless.
        dynamic_partitions_requests=[batches.build_add_request(result.ready)],
        cursor=result.cursor.to_json(),
    )


@dg.sensor(
    name="staging_sensor",
    job=batch_job,
    minimum_interval_seconds=default_config().dagster.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts one retraining run per complete, valid batch landing in staging/; quarantines bad ones.",
)
def staging_sensor(
    context: dg.SensorEvaluationContext, store: StoreResource, project: ProjectConfigResource
) -> dg.SensorResult:
    return evaluate_staging(context, store, project)
