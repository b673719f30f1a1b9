"""The state machine's steps job: the work of the assets that run in process under Dagster, as
an AWS Glue 5 job (DESIGN §4.7; ml_demo_dagster/stepfunctions.py puts its runs in the machine).

Glue runs this file as the job's script with `--steps a,b:prepare,... --batch T --attempt N
--store s3://bucket[/prefix] --settings <JSON>` (and, when tuned_model is among the
steps, `--tuning <JSON>`, the tuning job's result, and `--model_name`). Each step calls core/batch_steps.py, the functions the Dagster assets call,
so a batch goes through the same code either way. What the machine must decide on (score
with a serving model or not, deploy or not) each step writes to `steps/<T>/<step>.json`,
which the machine reads back with an S3 GetObject. Where a score comes from a SageMaker
model, the step before the transform job writes the rows (`scoring/<T>-<N>-<purpose>/`)
and the step after reads the scores.

  raw_ticks, raw_deals        the batch read strictly (a bad one is quarantined), raw parquet, checks
  batch_features              the feature job's output checked (quarantined on a blocking check)
  training_dataset            the window's channels under datasets/<T>/
  live_precision:prepare      the serving model, and this batch's rows for it to score
  live_precision              its scores -> monitoring/live/<T>.json
  tuned_model:prepare         the validation and test rows, for the best model to score
  tuned_model                 scores with intervals, test predictions, the registry record
  deployed_model:prepare      the champion, and the test rows for it to score
  deployed_model              the gate: decision recorded in the registry; deploy or not
  deployed_model:promote      once the endpoint serves the challenger: the champion pointer

A step that cannot go on raises: the run fails with that one line as its ErrorMessage, and
the machine ends in its failure path with it as the cause. What it imports is in the zip
next to this script (ml_demo_dagster/aws/glue_code.py) or is Glue's own; no config file, no
pydantic, no Dagster.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# The job's arguments (aws/requests.STEPS_JOB_ARGUMENTS), and those only some steps need.
ARGUMENTS = ("steps", "batch", "attempt", "store", "settings")
STEP_INPUTS = {"tuned_model": ("tuning", "model_name")}
# The assets whose transform jobs score rows, named for them (rows' folder, job name).
LIVE, BEST, CHAMPION = "live_precision", "tuned_model", "deployed_model"


def scoring_name(batch_id: str, attempt: str, asset: str) -> str:
    """The folder under scoring/ of the rows the machine's transform job for `asset` scores."""
    return f"{batch_id}-{attempt}-{asset}"


@dataclass
class Run:
    """One run's batch, attempt, settings, store and inputs."""

    batch: str
    attempt: str
    settings: Any  # core.batch_steps.StepSettings
    store: Any  # core.store.ObjectStore
    inputs: dict[str, str]
    log: Callable[[str], None] = print

    def result(self, step: str, doc: dict[str, Any]) -> dict[str, Any]:
        from ml_demo_dagster.core.layout import step_result_key

        self.store.put_text(step_result_key(self.batch, step), json.dumps({"step": step, **doc}, default=str))
        return doc

    def scoring(self, purpose: str) -> tuple[str, str]:
        from ml_demo_dagster.core.layout import scoring_keys

        return scoring_keys(scoring_name(self.batch, self.attempt, purpose))

    def write_rows(self, purpose: str, X) -> None:
        from ml_demo_dagster.aws.transform_io import rows_csv

        self.store.put_bytes(self.scoring(purpose)[0], rows_csv(X))

    def read_scores(self, purpose: str, rows: int):
        """The transform job's predictions for the rows written for `purpose`; both files go."""
        from ml_demo_dagster.aws.transform_io import parse_jsonlines
        from ml_demo_dagster.core.evaluation import Predictions

        input_key, output_key = self.scoring(purpose)
        predictions = Predictions(*parse_jsonlines(self.store.get_bytes(output_key), rows))
        for key in (input_key, output_key):
            self.store.delete(key)
        return predictions

    def sagemaker_model(self, version: str) -> str:
        """The SageMaker model of a registered version (a step scores SageMaker models only)."""
        from ml_demo_dagster.core.batch_steps import StepError
        from ml_demo_dagster.core.registry import ModelRegistry

        artifact = ModelRegistry(self.store).load_record(version).get("artifact") or {}
        if artifact.get("kind") != "sagemaker" or not artifact.get("model_name"):
            raise StepError(f"model version {version} was not trained by SageMaker (artifact {artifact or 'missing'}); "
                            "the state machine scores SageMaker models only")  # fmt: skip
        return artifact["model_name"]


def _checks(run: Run, step: str, checks: list) -> dict[str, Any]:
    from ml_demo_dagster.core.batch_steps import StepError

    for check in checks:
        run.log(f"batch {run.batch}: {check.line()}")
    failed = [c for c in checks if c.blocking and not c.passed]
    if failed:
        raise StepError(f"batch {run.batch}: {step}: blocking check failed: " + "; ".join(c.line() for c in failed))
    return {"checks": {c.name: c.passed for c in checks}}


def raw_ticks(run: Run) -> dict[str, Any]:
    from ml_demo_dagster.core import batch_steps

    loaded, checks = batch_steps.raw_ticks(run.store, run.batch)
    return {
        "rows": loaded.batch.prices.num_rows,
        "notes": list(loaded.batch.notes),
        **_checks(run, "raw_ticks", checks),
    }


def raw_deals(run: Run) -> dict[str, Any]:
    from ml_demo_dagster.core import batch_steps

    loaded, checks = batch_steps.raw_deals(run.store, run.batch, run.settings.point_value)
    return {"rows": loaded.batch.deals.num_rows, **_checks(run, "raw_deals", checks)}


def batch_features(run: Run) -> dict[str, Any]:
    from ml_demo_dagster.core import batch_steps

    checked = batch_steps.check_features(run.store, run.batch, run.settings.feature_dim)
    return {"rows": checked.table.num_rows, **_checks(run, "batch_features", checked.checks)}


def training_dataset(run: Run) -> dict[str, Any]:
    from ml_demo_dagster.core import batch_steps

    window, dataset, _ = batch_steps.training_dataset(run.store, run.batch, run.settings)
    rows = {name: len(split) for name, split in dataset.splits().items()}
    run.log(f"batch {run.batch}: dataset over {window}: {rows}")
    return {"batches": window, "rows": rows}


def live_precision_prepare(run: Run) -> dict[str, Any]:
    from ml_demo_dagster.core import batch_steps

    rows = batch_steps.live_rows(run.store, run.batch)
    if rows.pointer is None:
        return {"score": False, "version": None, "model_name": ""}
    version = rows.pointer["version"]
    model = run.sagemaker_model(version)
    run.write_rows(LIVE, rows.X)
    return {"score": True, "version": version, "model_name": model, "rows": rows.table.num_rows}


def live_precision(run: Run) -> dict[str, Any]:
    from ml_demo_dagster.core import batch_steps

    rows = batch_steps.live_rows(run.store, run.batch)
    predictions = run.read_scores(LIVE, rows.table.num_rows) if rows.pointer is not None else None
    record, _ = batch_steps.live_precision(run.store, run.batch, run.settings, rows, predictions)
    return {"serving_version": record["serving_version"]}


def tuned_model_prepare(run: Run) -> dict[str, Any]:
    import numpy as np

    from ml_demo_dagster.core.dataset import read_dataset
    from ml_demo_dagster.core.layout import dataset_prefix

    dataset = read_dataset(run.store, dataset_prefix(run.batch))
    run.write_rows(BEST, np.concatenate([dataset.validation.X, dataset.test.X]))
    return {"validation_rows": len(dataset.validation), "test_rows": len(dataset.test)}


def tuned_model(run: Run) -> dict[str, Any]:
    from ml_demo_dagster.core import batch_steps
    from ml_demo_dagster.core.dataset import read_dataset
    from ml_demo_dagster.core.evaluation import Predictions
    from ml_demo_dagster.core.layout import dataset_prefix

    tuning = json.loads(run.inputs["tuning"])
    dataset = read_dataset(run.store, dataset_prefix(run.batch))
    n = len(dataset.validation)
    both = run.read_scores(BEST, n + len(dataset.test))
    integer = set(run.settings.integer_hyperparameters)
    tuned = {k: int(float(v)) if k in integer else float(v) for k, v in (tuning.get("tuned") or {}).items()}
    counters = tuning.get("counters") or {}
    artifact = {
        "kind": "sagemaker",
        "tuning_job": tuning["job"],
        "best_training_job": tuning["best_training_job"],
        "model_name": run.inputs["model_name"],
        "model_data_url": tuning["best"]["model_data_url"],
    }
    _, record = batch_steps.record_tuned_model(
        run.store, run.batch, dataset, run.settings, artifact=artifact,
        hyperparameters={**run.settings.static_hyperparameters, **tuned},
        objective_metric=run.settings.objective_metric, objective=tuning.get("objective"),
        trials=int(sum(v for v in counters.values() if isinstance(v, int | float))),
        validation_predictions=Predictions(both.scores[:n], both.labels[:n]),
        test_predictions=Predictions(both.scores[n:], both.labels[n:]),
    )  # fmt: skip
    run.log(f"batch {run.batch}: model {artifact['model_name']}: test {record['test'].get('roc_auc')}")
    return {"model_name": artifact["model_name"]}


def deployed_model_prepare(run: Run) -> dict[str, Any]:
    from ml_demo_dagster.core import batch_steps

    rows = batch_steps.gate_rows(run.store, run.batch)
    if rows.champion_version is None:
        return {"score": False, "version": None, "model_name": ""}
    model = run.sagemaker_model(rows.champion_version)
    run.write_rows(CHAMPION, rows.X)
    return {"score": True, "version": rows.champion_version, "model_name": model, "rows": len(rows.y)}


def deployed_model(run: Run) -> dict[str, Any]:
    from ml_demo_dagster.core import batch_steps

    rows = batch_steps.gate_rows(run.store, run.batch)
    champion = run.read_scores(CHAMPION, len(rows.y)) if rows.champion_version is not None else None
    decision, record = batch_steps.gate(run.store, run.batch, run.settings, rows, champion)
    run.log(f"batch {run.batch}: {'deploy' if decision.deploy else 'keep'}: {decision.reason}")
    return {"deploy": decision.deploy, "reason": decision.reason, "record": record}


def deployed_model_promote(run: Run) -> dict[str, Any]:
    """The challenger is InService: it becomes the champion, with the gate's record."""
    from ml_demo_dagster.core.batch_steps import StepError
    from ml_demo_dagster.core.layout import step_result_key
    from ml_demo_dagster.core.registry import ModelRegistry

    gate = json.loads(run.store.get_text(step_result_key(run.batch, "deployed_model")))
    if not gate.get("deploy"):
        raise StepError(f"batch {run.batch}: the gate did not choose to deploy it: {gate.get('reason')}")
    ModelRegistry(run.store).promote(run.batch, gate["record"])
    return {"champion": run.batch}


# Every step the machine can ask for: "<asset>" or "<asset>:<phase>".
STEPS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "raw_ticks": raw_ticks,
    "raw_deals": raw_deals,
    "batch_features": batch_features,
    "training_dataset": training_dataset,
    "live_precision:prepare": live_precision_prepare,
    "live_precision": live_precision,
    "tuned_model:prepare": tuned_model_prepare,
    "tuned_model": tuned_model,
    "deployed_model:prepare": deployed_model_prepare,
    "deployed_model": deployed_model,
    "deployed_model:promote": deployed_model_promote,
}


def run_steps(names: Sequence[str], run: Run) -> dict[str, dict[str, Any]]:
    """Run the named steps in order, each result written for the machine; the first error stops them."""
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; known: {', '.join(STEPS)}")
    done = {}
    for name in names:
        run.log(f"batch {run.batch} attempt {run.attempt}: step {name}")
        done[name] = run.result(name, STEPS[name](run))
    return done


def main(argv: Sequence[str] | None = None) -> int:
    from glue.entry import resolved_options
    from ml_demo_dagster.core.batch_steps import StepSettings
    from ml_demo_dagster.core.store import open_store

    argv = sys.argv[1:] if argv is None else argv
    options = resolved_options(argv, ARGUMENTS)
    names = [n for n in options["steps"].split(",") if n]
    wanted = sorted({i for n in names for i in STEP_INPUTS.get(n, ())})
    inputs = resolved_options(argv, wanted) if wanted else {}
    run = Run(options["batch"], options["attempt"], StepSettings.from_json(options["settings"]),
              open_store(options["store"]), inputs)  # fmt: skip
    run_steps(names, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
