"""Serving: how the serving model does on each new batch, and the champion/challenger gate.

`live_precision` scores a new batch with the model already serving, before it retrains
(labels arrive with the batch): the honest, out-of-sample view of the endpoint. Then
`deployed_model` scores the new model (challenger) and the serving one (champion) on the
same rows, the newest test split, and deploys the challenger only if it is better.
"""

import json

import dagster as dg

from ml_demo_dagster.core.dataset import read_dataset
from ml_demo_dagster.core.layout import LIVE_PREFIX, dataset_prefix, live_key, read_features
from ml_demo_dagster.core.metrics import evaluate
from ml_demo_dagster.core.plots import png_markdown, series_plot
from ml_demo_dagster.core.registry import ModelRegistry, decide
from ml_demo_dagster.defs.features.assets import batch_features
from ml_demo_dagster.defs.features.checks import feature_matrix
from ml_demo_dagster.defs.metadata import value
from ml_demo_dagster.defs.partitions import batches
from ml_demo_dagster.defs.resources import DeployerResource, ProjectConfigResource, StoreResource
from ml_demo_dagster.defs.retries import STORAGE_RETRY
from ml_demo_dagster.defs.training.assets import tuned_model

# Each model scored at its own threshold (set on its validation split for the target
# recall), on the same rows: what it would do if it served. A threshold re-chosen on the
# scored rows would flatter any model.
GATE_METRIC = "precision_at_threshold"


def _live_history(s) -> list[dict]:
    records = [json.loads(s.get_text(k)) for k in s.list_keys(LIVE_PREFIX)]
    return sorted((r for r in records if r.get("live_precision") is not None), key=lambda r: int(r["batch"]))


@dg.asset(
    partitions_def=batches, group_name="serving", kinds={"python"}, deps=[batch_features], retry_policy=STORAGE_RETRY
)
def live_precision(
    context: dg.AssetExecutionContext, store: StoreResource, project: ProjectConfigResource
) -> dg.MaterializeResult:
    """Precision of the serving model on this batch's deals, scored before retraining."""
    batch_id, s, cfg = context.partition_key, store.open(), project.get()
    champion = ModelRegistry(s).champion()
    record: dict = {"batch": batch_id, "serving_version": None, "live_precision": None}
    if champion is not None:
        table = read_features(s, batch_id)
        y = table.column("label").to_numpy()
        scores = evaluate(champion.model, feature_matrix(table), y, cfg.tuning.static.target_recall)
        record.update(
            serving_version=champion.version,
            live_precision=scores["precision_at_threshold"],
            live_recall=scores["recall_at_threshold"],
            live_roc_auc=scores["roc_auc"],
            base_rate=scores["base_rate"],
            rows=scores["rows"],
        )
    s.put_text(live_key(batch_id), json.dumps(record, indent=2))
    history = _live_history(s)
    metadata = {k: value(v) for k, v in record.items() if k != "batch"}
    if history:
        plot = series_plot(
            [r["batch"] for r in history], [r["live_precision"] for r in history],
            title="Live precision of the serving model", ylabel="precision",
            reference=[r.get("base_rate") for r in history], reference_label="base rate",
        )  # fmt: skip
        metadata["live_precision_over_time"] = dg.MetadataValue.md(png_markdown(plot))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=batches,
    group_name="serving",
    kinds={"python"},
    deps=[tuned_model, live_precision],
    retry_policy=STORAGE_RETRY,
)
def deployed_model(
    context: dg.AssetExecutionContext, store: StoreResource, project: ProjectConfigResource, deployer: DeployerResource
) -> dg.MaterializeResult:
    """The model serving the endpoint: the challenger if it beats the champion on the newest test split."""
    batch_id, s, cfg = context.partition_key, store.open(), project.get()
    target_recall = cfg.tuning.static.target_recall
    registry = ModelRegistry(s)
    test = read_dataset(s, dataset_prefix(batch_id)).test
    challenger = evaluate(registry.load(batch_id), test.X, test.y, target_recall)
    champion = registry.champion()
    defending = evaluate(champion.model, test.X, test.y, target_recall) if champion else None
    decision = decide(
        challenger[GATE_METRIC],
        defending[GATE_METRIC] if defending else None,
        challenger["base_rate"],
    )
    record = {
        "batch": batch_id,
        "challenger": batch_id,
        "champion": champion.version if champion else None,
        "score": GATE_METRIC,
        "challenger_score": challenger[GATE_METRIC],
        "champion_score": defending[GATE_METRIC] if defending else None,
        "challenger_roc_auc": challenger["roc_auc"],
        "champion_roc_auc": defending["roc_auc"] if defending else None,
        "base_rate": challenger["base_rate"],
        "test_rows": challenger["rows"],
        "deployed": decision.deploy,
        "reason": decision.reason,
    }
    registry.record_decision(batch_id, record)
    serving = batch_id if decision.deploy else (champion.version if champion else None)
    endpoint = deployer.deploy(s, batch_id, record) if decision.deploy else None
    context.log.info(f"batch {batch_id}: {'deployed' if decision.deploy else 'kept champion'}: {decision.reason}")
    return dg.MaterializeResult(
        metadata={
            "decision": "deployed" if decision.deploy else "kept champion",
            "reason": decision.reason,
            "serving_version": value(serving),
            "challenger_score": record["challenger_score"],
            "champion_score": value(record["champion_score"]),
            "challenger_roc_auc": record["challenger_roc_auc"],
            "champion_roc_auc": value(record["champion_roc_auc"]),
            "base_rate": record["base_rate"],
            "test_rows": record["test_rows"],
            "endpoint": value(endpoint),
        }
    )
