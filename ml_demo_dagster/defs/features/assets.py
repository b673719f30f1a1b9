"""Features: the glue/ Spark job turns one batch into 605 features per deal (DESIGN §4.2).

Locally the job runs on Spark started by dagster-pyspark; on aws the same transform runs
as a Glue job. The asset only calls the feature-job resource and reads back what it wrote.
"""

import dagster as dg

from ml_demo_dagster.core.layout import features_prefix, read_features
from ml_demo_dagster.defs.features import checks
from ml_demo_dagster.defs.ingest.assets import raw_deals, raw_ticks
from ml_demo_dagster.defs.partitions import batches
from ml_demo_dagster.defs.resources import FeatureJobResource, ProjectConfigResource, StoreResource


@dg.asset(partitions_def=batches, group_name="features", kinds={"spark", "parquet"},
          deps=[raw_ticks, raw_deals], check_specs=checks.FEATURE_CHECKS)  # fmt: skip
def batch_features(
    context: dg.AssetExecutionContext,
    store: StoreResource,
    feature_job: FeatureJobResource,
    project: ProjectConfigResource,
) -> dg.MaterializeResult:
    """Per-deal features of one batch: tick values and 600 per-second mean mids, minus the deal's mid."""
    batch_id, s, cfg = context.partition_key, store.open(), project.get()
    job = feature_job.run(context, s, batch_id, features_prefix(batch_id), cfg.features.history_seconds)
    counts = job.counts
    table = read_features(s, batch_id)
    X = checks.feature_matrix(table)
    labels = table.column("label").to_numpy()
    context.log.info(f"batch {batch_id}: {counts}")
    return dg.MaterializeResult(
        metadata={
            **{k: int(v) for k, v in counts.items()},
            "feature_dim": cfg.feature_dim,
            "profit_share": round(float(labels.mean()), 4) if len(labels) else 0.0,
            "longest_deal_seconds": round(float(table.column("duration_ms").to_numpy().max()) / 1000, 1)
            if table.num_rows
            else 0.0,
            "path": s.uri(features_prefix(batch_id)),
            **job.metadata,
        },
        check_results=[
            checks.features_have_no_nan(X, labels),
            checks.feature_width_is_605(X, cfg.feature_dim),
            checks.label_balance_is_reported(labels),
        ],
    )
