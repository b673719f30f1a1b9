"""Training: the dataset over the newest batches, then the tuned model.

The dataset spans a window of the newest batches (config.training.window_batches, up to
and including this one), split in time order with a purge gap as long as the longest
deal. The tuner (local Bayesian search, or SageMaker on aws) is driven by config.tuning:
it chooses trials on the configured validation objective and returns the best model's
predictions, from which every score is computed here with its 95% interval (a block
bootstrap over time, blocks no shorter than the purge gap). Test scores are reported,
never used to choose.
"""

import dagster as dg

from ml_demo_dagster.core import batch_steps
from ml_demo_dagster.core.batch_steps import StepSettings
from ml_demo_dagster.core.dataset import read_dataset
from ml_demo_dagster.core.layout import dataset_prefix
from ml_demo_dagster.core.plots import objective_plot, png_markdown, pr_curve_plot
from ml_demo_dagster.core.tuner import trials_table
from ml_demo_dagster.defs.features.assets import batch_features
from ml_demo_dagster.defs.metadata import interval, interval_values, row_count, score, scores_table, table, value
from ml_demo_dagster.defs.partitions import batches
from ml_demo_dagster.defs.resources import ProjectConfigResource, StoreResource, TunerResource
from ml_demo_dagster.defs.retries import STORAGE_RETRY

TUNED_MODEL = dg.AssetKey("tuned_model")
MODEL_CHECKS = [
    dg.AssetCheckSpec("model_beats_chance_on_test", asset=TUNED_MODEL,
                      description="The 95% interval of test ROC AUC lies above 0.5 (warns: on a pure random walk "
                                  "it should not)."),
]  # fmt: skip
TRIAL_COLUMNS = {
    "trial": int, "state": str, "objective": float, "objective_low": float, "objective_high": float,
    "validation_roc_auc": float, "best_epoch": int, "l1": float, "learning_rate": float, "wd": float,
    "mini_batch_size": int, "seconds": float, "error": str,
}  # fmt: skip


@dg.asset(
    partitions_def=batches,
    group_name="training",
    kinds={"parquet", "csv"},
    deps=[batch_features],
    retry_policy=STORAGE_RETRY,
)
def training_dataset(
    context: dg.AssetExecutionContext, store: StoreResource, project: ProjectConfigResource
) -> dg.MaterializeResult:
    """Train/validation/test channels over the newest batches, split in time order with a purge gap."""
    batch_id, s, cfg = context.partition_key, store.open(), project.get()
    try:
        window, dataset, keys = batch_steps.training_dataset(s, batch_id, StepSettings.from_config(cfg))
    except batch_steps.StepError as e:  # the window's data cannot make a dataset: no retry will change that
        raise dg.Failure(description=str(e), allow_retries=e.retry) from None
    summary = dataset.summary()
    return dg.MaterializeResult(
        metadata={
            **row_count(sum(len(split.y) for split in dataset.splits().values())),
            "batches": dg.MetadataValue.json(window),
            "rows_train": len(dataset.train.y),
            "rows_validation": len(dataset.validation.y),
            "rows_test": len(dataset.test.y),
            "gap_seconds": round(dataset.gap_ms / 1000, 1),
            "purged_rows": sum(dataset.purged.values()),
            "validation_chunks": dataset.validation_chunks,
            "summary": dg.MetadataValue.json(summary),
            "channels": dg.MetadataValue.json(keys),
        }
    )


@dg.asset(partitions_def=batches, group_name="training", kinds={"python"}, deps=[training_dataset],
          check_specs=MODEL_CHECKS, retry_policy=STORAGE_RETRY)  # fmt: skip
def tuned_model(
    context: dg.AssetExecutionContext, store: StoreResource, project: ProjectConfigResource, tuner: TunerResource
) -> dg.MaterializeResult:
    """The best linear-learner model of a Bayesian hyperparameter search on this dataset."""
    batch_id, s, cfg = context.partition_key, store.open(), project.get()
    dataset = read_dataset(s, dataset_prefix(batch_id))
    result = tuner.tune(s, batch_id, dataset, cfg, context.log.info)
    target_recall = cfg.tuning.static.target_recall
    tuned_names = set(cfg.tuning.ranges)
    reports, _ = batch_steps.record_tuned_model(
        s, batch_id, dataset, StepSettings.from_config(cfg), artifact=result.artifact,
        hyperparameters=result.best.hyperparameters, objective_metric=result.objective_metric,
        objective=result.best.objective, trials=len(result.trials),
        validation_predictions=result.validation_predictions, test_predictions=result.test_predictions,
    )  # fmt: skip
    test, validation = reports["test"], reports["validation"]
    auc = test.scores["roc_auc"]
    return dg.MaterializeResult(
        metadata={
            "objective_metric": result.objective_metric,
            **interval_values("validation_objective", result.best.objective, result.best.objective_low,
                              result.best.objective_high),
            **interval("validation_roc_auc", validation.scores["roc_auc"]),
            **interval("test_roc_auc", auc),
            **interval("test_precision", test.scores["precision"]),
            **interval("test_recall", test.scores["recall"]),
            "test_base_rate": score(test.base_rate),
            "scores": scores_table(reports),
            "trials": len(result.trials),
            "best_trial": result.best.number,
            "best_hyperparameters": dg.MetadataValue.json(
                {k: v for k, v in result.best.hyperparameters.items() if k in tuned_names}
            ),
            "trials_table": table(trials_table(result.trials), TRIAL_COLUMNS),
            "objective_over_trials": dg.MetadataValue.md(png_markdown(objective_plot(
                result.trials, title=f"Tuning: {result.objective_metric} per trial", ylabel=result.objective_metric,
                minimize=result.objective_type == "Minimize",
            ))),
            "pr_curve": dg.MetadataValue.md(png_markdown(pr_curve_plot(result.pr_curve, target_recall, test.base_rate))),
            "target_recall": target_recall,
            "artifact": dg.MetadataValue.json(result.artifact),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="model_beats_chance_on_test", asset_key=TUNED_MODEL, passed=auc.above(0.5),
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"test_roc_auc": value(auc.value), "ci_low": value(auc.low), "ci_high": value(auc.high),
                          "blocks": auc.blocks},
            )
        ],
    )  # fmt: skip
