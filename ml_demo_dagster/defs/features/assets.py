"""Features: the glue/ Spark job turns one batch into 605 features per deal (DESIGN §4.2).

Locally the job runs on Spark started by dagster-pyspark; on aws the same transform runs
as a Glue job. The asset calls the feature-job resource, reads back what it wrote and
checks it. Training windows read only batches whose features are complete and passed
(core/layout.batches_with_features: a `_SUCCESS` marker), so:
- a batch the job finds breaking the staging contract (BatchDataError: batch, file, line,
  field) is quarantined and the step fails with that one line, not retried;
- features that fail a blocking check are deleted (marker first) and the batch is
  quarantined with the check's name and numbers, so no later window can read them;
- any other failure of the job (storage, Spark: FeatureJobError, one line) fails the step
  with that line, and the step's retry policy runs it again.
"""

import dagster as dg

from glue.feature_job import BatchDataError, FeatureJobError
from ml_demo_dagster.core import batch_steps
from ml_demo_dagster.core.layout import features_prefix
from ml_demo_dagster.defs.features import checks
from ml_demo_dagster.defs.ingest.assets import as_failure, quarantine_failure
from ml_demo_dagster.defs.metadata import row_count
from ml_demo_dagster.defs.partitions import batches
from ml_demo_dagster.defs.resources import FeatureJobResource, ProjectConfigResource, StoreResource
from ml_demo_dagster.defs.retries import STORAGE_RETRY


@dg.asset(partitions_def=batches, group_name="features", kinds={"spark", "parquet"},
          deps=["raw_ticks", "raw_deals"], check_specs=checks.FEATURE_CHECKS, retry_policy=STORAGE_RETRY)  # fmt: skip
def batch_features(
    context: dg.AssetExecutionContext,
    store: StoreResource,
    feature_job: FeatureJobResource,
    project: ProjectConfigResource,
) -> dg.MaterializeResult:
    """Per-deal features of one batch: tick values and 600 per-second mean mids, minus the deal's mid."""
    batch_id, s, cfg = context.partition_key, store.open(), project.get()
    try:
        job = feature_job.run(context, s, batch_id, features_prefix(batch_id), cfg.features.history_seconds)
    except BatchDataError as e:
        problem = e.problems.get(batch_id) or next(iter(e.problems.values()))
        raise quarantine_failure(s, batch_id, problem, "features") from None
    except FeatureJobError as e:  # worth a retry: the policy decides
        raise dg.Failure(description=f"batch {batch_id}: the feature job failed: {e}", allow_retries=True) from None
    counts = job.counts
    context.log.info(f"batch {batch_id}: {counts}")
    try:
        checked = batch_steps.check_features(s, batch_id, cfg.feature_dim)
    except batch_steps.StepError as e:  # a blocking check failed: deleted and quarantined
        raise as_failure(e) from None
    table, labels = checked.table, checked.labels
    results = [checks.result(c, checks.BATCH_FEATURES) for c in checked.checks]
    return dg.MaterializeResult(
        metadata={
            **row_count(table.num_rows),
            **{k: int(v) for k, v in counts.items()},
            "feature_dim": cfg.feature_dim,
            "profit_share": round(float(labels.mean()), 4) if len(labels) else 0.0,
            "longest_deal_seconds": round(float(table.column("duration_ms").to_numpy().max()) / 1000, 1)
            if table.num_rows
            else 0.0,
            "path": s.uri(features_prefix(batch_id)),
            **job.metadata,
        },
        check_results=results,
    )
