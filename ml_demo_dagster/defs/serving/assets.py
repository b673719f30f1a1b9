"""Serving: how the serving model does on each new batch, and the champion/challenger gate.

`live_precision` scores a new batch with the model already serving, before it retrains
(labels arrive with the batch): the honest, out-of-sample view of the endpoint. Then
`deployed_model` scores the serving model (champion) on the rows the new model
(challenger) was tested on, and deploys the challenger only when its paired improvement
on those rows is significant (core/evaluation.decide; the first model only when it beats
chance). Every score carries its 95% interval (block bootstrap over time).
"""

import json

import dagster as dg

from ml_demo_dagster.core import batch_steps
from ml_demo_dagster.core.batch_steps import StepSettings
from ml_demo_dagster.core.layout import LIVE_PREFIX
from ml_demo_dagster.core.plots import png_markdown, series_plot
from ml_demo_dagster.defs.features.assets import batch_features
from ml_demo_dagster.defs.metadata import interval, score, value
from ml_demo_dagster.defs.partitions import batches
from ml_demo_dagster.defs.resources import DeployerResource, ProjectConfigResource, ScorerResource, StoreResource
from ml_demo_dagster.defs.retries import STORAGE_RETRY
from ml_demo_dagster.defs.training.assets import tuned_model


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
    rows = batch_steps.live_rows(s, batch_id)
    predictions = scorer.predict(s, rows.pointer["version"], rows.X) if rows.pointer is not None else None
    _, live = batch_steps.live_precision(s, batch_id, StepSettings.from_config(cfg), rows, predictions)
    metadata: dict = {"serving_version": dg.MetadataValue.null(), "live_precision": dg.MetadataValue.null()}
    if live is not None:
        metadata = {
            "serving_version": rows.pointer["version"],
            **interval("live_precision", live.scores["precision"]),
            **interval("live_recall", live.scores["recall"]),
            **interval("live_roc_auc", live.scores["roc_auc"]),
            "base_rate": score(live.base_rate),
            "rows": live.rows,
        }
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
    # The challenger's predictions on its test split were kept when it was tuned; the
    # champion is scored on the same rows.
    try:
        rows = batch_steps.gate_rows(s, batch_id)
    except batch_steps.StepError as e:
        raise dg.Failure(str(e)) from None
    champion_version = rows.champion_version
    champion = scorer.predict(s, champion_version, rows.X) if champion_version is not None else None
    decision, record = batch_steps.gate(s, batch_id, StepSettings.from_config(cfg), rows, champion)
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
