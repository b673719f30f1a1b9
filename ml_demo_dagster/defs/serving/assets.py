"""Serving: how the serving model does on each new batch, and the champion/challenger gate.

`live_precision` scores a new batch with the model already serving, before it retrains
(labels arrive with the batch): the honest, out-of-sample view of the endpoint. Then
`deployed_model` scores the serving model (champion) on the rows the new model
(challenger) was tested on, and deploys the challenger only when its paired improvement
on those rows is significant (core/evaluation.decide; the first model only when it beats
chance). Every score carries its 95% interval (block bootstrap over time).
"""

import json
from dataclasses import replace

import dagster as dg
import numpy as np

from ml_demo_dagster.core.dataset import read_dataset
from ml_demo_dagster.core.evaluation import decide, report
from ml_demo_dagster.core.layout import LIVE_PREFIX, dataset_prefix, live_key, read_features
from ml_demo_dagster.core.plots import png_markdown, series_plot
from ml_demo_dagster.core.registry import ModelRegistry
from ml_demo_dagster.defs.features.assets import batch_features
from ml_demo_dagster.defs.features.checks import feature_matrix
from ml_demo_dagster.defs.metadata import interval, score, value
from ml_demo_dagster.defs.partitions import batches
from ml_demo_dagster.defs.resources import DeployerResource, ProjectConfigResource, ScorerResource, StoreResource
from ml_demo_dagster.defs.retries import STORAGE_RETRY
from ml_demo_dagster.defs.training.assets import settings_for, tuned_model

LIVE_SCORES = ("precision", "recall", "roc_auc")


def _live_history(s) -> list[dict]:
    records = [json.loads(s.get_text(k)) for k in s.list_keys(LIVE_PREFIX)]
    return sorted((r for r in records if r.get("live_precision")), key=lambda r: int(r["batch"]))


def _live_plot(history: list[dict]) -> str:
    def part(r: dict, name: str, field: str):
        score = r.get(name)
        if isinstance(score, (int, float)):  # a record from before intervals: the value alone
            return score if field == "value" else None
        return (score or {}).get(field)

    plot = series_plot(
        [r["batch"] for r in history], [part(r, "live_precision", "value") for r in history],
        title="Live precision of the serving model (95% interval)", ylabel="precision",
        reference=[r.get("base_rate") for r in history], reference_label="base rate",
        lows=[part(r, "live_precision", "low") for r in history],
        highs=[part(r, "live_precision", "high") for r in history],
    )  # fmt: skip
    return png_markdown(plot)


@dg.asset(
    partitions_def=batches, group_name="serving", kinds={"python"}, deps=[batch_features], retry_policy=STORAGE_RETRY
)
def live_precision(
    context: dg.AssetExecutionContext, store: StoreResource, project: ProjectConfigResource, scorer: ScorerResource
) -> dg.MaterializeResult:
    """Precision of the serving model on this batch's deals, scored before retraining."""
    batch_id, s, cfg = context.partition_key, store.open(), project.get()
    pointer = ModelRegistry(s).champion_pointer()
    record: dict = {"batch": batch_id, "serving_version": None, "live_precision": None}
    metadata: dict = {"serving_version": dg.MetadataValue.null(), "live_precision": dg.MetadataValue.null()}
    if pointer is not None:
        table = read_features(s, batch_id)
        y = table.column("label").to_numpy()
        timestamp = table.column("timestamp").to_numpy()
        # Blocks as long as this batch's longest deal: rows in different blocks share no outcome.
        block_ms = float(table.column("duration_ms").to_numpy().max()) if table.num_rows else 0.0
        predictions = scorer.predict(s, pointer["version"], feature_matrix(table))
        live = report(y, timestamp, predictions, block_ms, cfg.tuning.static.target_recall,
                      settings_for(cfg, batch_id), scores=LIVE_SCORES)  # fmt: skip
        record.update(
            serving_version=pointer["version"],
            base_rate=live.base_rate,
            rows=live.rows,
            **{f"live_{name}": live.scores[name].to_dict() for name in LIVE_SCORES},
        )
        metadata = {
            "serving_version": pointer["version"],
            **interval("live_precision", live.scores["precision"]),
            **interval("live_recall", live.scores["recall"]),
            **interval("live_roc_auc", live.scores["roc_auc"]),
            "base_rate": score(live.base_rate),
            "rows": live.rows,
        }
    s.put_text(live_key(batch_id), json.dumps(record, indent=2))
    history = _live_history(s)
    if history:
        metadata["live_precision_over_time"] = dg.MetadataValue.md(_live_plot(history))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=batches,
    group_name="serving",
    kinds={"python"},
    deps=[tuned_model, live_precision],
    retry_policy=STORAGE_RETRY,
)
def deployed_model(
    context: dg.AssetExecutionContext,
    store: StoreResource,
    project: ProjectConfigResource,
    scorer: ScorerResource,
    deployer: DeployerResource,
) -> dg.MaterializeResult:
    """The model serving the endpoint: the challenger if its improvement on the newest test split is significant."""
    batch_id, s, cfg = context.partition_key, store.open(), project.get()
    deployer.reconcile(s, context.log.info)  # a deployment an earlier run left half-done: settled first
    registry = ModelRegistry(s)
    # The challenger's predictions on its test split were kept when it was tuned; the
    # champion is scored on the same rows.
    timestamp, y, challenger = registry.load_predictions(batch_id, "test")
    gap_ms = registry.load_record(batch_id).get("gap_ms") or 0
    pointer = registry.champion_pointer()
    champion_version = pointer["version"] if pointer else None
    champion = None
    if champion_version is not None:
        test = read_dataset(s, dataset_prefix(batch_id)).test
        if not np.array_equal(test.timestamp, timestamp):
            raise dg.Failure(f"batch {batch_id}: the test split changed since the model was tuned; re-run tuned_model")
        champion = scorer.predict(s, champion_version, test.X)
    settings = replace(settings_for(cfg, batch_id), confidence=cfg.gate.confidence)
    decision = decide(y, timestamp, challenger, champion, gap_ms, metric=cfg.gate.metric, settings=settings)
    record = {
        "batch": batch_id,
        "challenger": batch_id,
        "champion": champion_version,
        "test_rows": int(len(y)),
        "base_rate": float(y.mean()) if len(y) else None,
        "deployed": decision.deploy,
        "reason": decision.reason,
        **decision.to_dict(),
    }
    registry.record_decision(batch_id, record)
    serving = batch_id if decision.deploy else champion_version
    endpoint = deployer.deploy(s, batch_id, record) if decision.deploy else None
    verdict = "deployed" if decision.deploy else "kept champion" if champion_version else "not deployed"
    context.log.info(f"batch {batch_id}: {verdict}: {decision.reason}")
    return dg.MaterializeResult(
        metadata={
            "decision": verdict,
            "reason": decision.reason,
            "gate_metric": decision.metric,
            "compared_with": decision.reference,
            **interval("challenger_score", decision.challenger),
            **(interval("champion_score", decision.champion) if decision.champion else
               {"champion_score": dg.MetadataValue.null()}),
            **interval("difference", decision.difference),
            "serving_version": value(serving),
            "base_rate": score(record["base_rate"]),
            "test_rows": record["test_rows"],
            "endpoint": value(endpoint),
        }
    )  # fmt: skip
