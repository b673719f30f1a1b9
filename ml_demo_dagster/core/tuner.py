"""The local face of SageMaker's hyperparameter tuning job.

The aws target sends `config.tuning` to SageMaker; the local target runs the same search
here, from the same section: the ranges (with their scaling and integer flag), the
strategy (Bayesian -> optuna's TPE, Random -> optuna's RandomSampler), `max_jobs`,
`max_parallel_jobs`, and the objective, one of linear-learner's validation metrics
(core/metrics.OBJECTIVES: `validation:objective_loss` minimised, `validation:roc_auc_score`
or `validation:precision` maximised), computed the way linear-learner reports it. Each
trial trains the local linear-learner with the static hyperparameters plus the trial's
values, and its objective carries an interval (block bootstrap over the validation rows'
time, core/intervals.py), so a reader sees how much of the spread between trials is noise.

Trials run truly in parallel, up to `max_parallel_jobs` at once, in worker processes (the
training loop holds the GIL, so threads would take turns). Workers are forked, so they
inherit the dataset once instead of receiving a copy per trial. The search uses optuna's
ask/tell interface: a new trial is asked for as soon as a running one is told, the way
SageMaker starts the next training job when a slot frees up.

A failing trial (bad values, divergence, a dead worker) is recorded as failed and the
search goes on; only when every trial fails is it an error. The best trial has the best
validation objective (ties: higher validation ROC AUC, then the earlier trial); its model
is kept as trained, not retrained. Its predictions on the validation and test rows are
returned for the caller to score (core/evaluation.py); test rows are never used to choose. Scaling `Auto` is taken as Logarithmic when the range is
positive and spans at least two orders of magnitude, else Linear.

Not reproduced: SageMaker's Gaussian-process Bayesian optimiser (TPE is a different
Bayesian method), early stopping of tuning jobs, warm start. With more than one job in
parallel, the order in which trials finish steers the Bayesian search, so the sequence
of values asked for is reproducible only with `max_parallel_jobs` = 1 or the Random
strategy; each trial's training is deterministic for its seed. No Dagster or AWS imports.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import optuna

from ml_demo_dagster.core import evaluation, metrics
from ml_demo_dagster.core.dataset import TrainingDataset
from ml_demo_dagster.core.evaluation import Predictions
from ml_demo_dagster.core.linear_learner import LinearLearnerModel, train

COMPLETED, FAILED = "completed", "failed"


class TuningError(RuntimeError):
    """No trial produced a model; the message lists why the trials failed."""


@dataclass
class TrialResult:
    """One training job of the search."""

    number: int
    tuned: dict[str, Any]  # the values the search chose
    hyperparameters: dict[str, Any]  # static + tuned: what the trainer received
    state: str  # "completed" | "failed"
    objective: float | None  # the tuning objective on the validation rows
    validation: dict[str, Any] | None  # point scores on the validation rows
    seconds: float
    started_at: float  # epoch seconds, measured in the worker
    finished_at: float
    worker: int  # process id
    seed: int
    error: str | None = None
    objective_low: float | None = None  # the objective's interval (None: not claimed)
    objective_high: float | None = None
    best_epoch: int | None = None
    model_bytes: bytes | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly, without the model."""
        out = asdict(self)
        out.pop("model_bytes")
        return out


@dataclass
class TuningResult:
    """What the search found: all trials, the best one, its model and its predictions."""

    trials: list[TrialResult]
    best: TrialResult
    model: LinearLearnerModel
    validation_predictions: Predictions
    test_predictions: Predictions
    validation: dict[str, Any]  # point scores of the best model (metrics.evaluate)
    test: dict[str, Any]
    pr_curve: dict[str, list[float]]  # the best model on the test split
    strategy: str
    max_jobs: int
    max_parallel_jobs: int
    objective_metric: str
    objective_type: str
    target_recall: float
    seconds: float
    artifact: dict[str, Any] = field(default_factory=dict)  # where the best model is kept (set by the caller)

    def trials_table(self) -> list[dict[str, Any]]:
        """One flat row per trial (for a table in the UI)."""
        return trials_table(self.trials)

    def summary(self) -> dict[str, Any]:
        """Everything but the model, the predictions and the curve, JSON-friendly."""
        return {
            "strategy": self.strategy,
            "objective_metric": self.objective_metric,
            "objective_type": self.objective_type,
            "target_recall": self.target_recall,
            "max_jobs": self.max_jobs,
            "max_parallel_jobs": self.max_parallel_jobs,
            "trials": len(self.trials),
            "failed_trials": sum(t.state == FAILED for t in self.trials),
            "best_trial": self.best.number,
            "best_hyperparameters": dict(self.best.tuned),
            "validation": self.validation,
            "test": self.test,
            "seconds": round(self.seconds, 3),
        }


def trials_table(trials: list[TrialResult]) -> list[dict[str, Any]]:
    """One flat row per trial: state, objective with its interval, the values tried, time, error."""
    rows = []
    for t in trials:
        row = {
            "trial": t.number,
            "state": t.state,
            "objective": t.objective,
            "objective_low": t.objective_low,
            "objective_high": t.objective_high,
            "validation_roc_auc": t.validation["roc_auc"] if t.validation else None,
            "best_epoch": t.best_epoch,
        }
        row.update(t.tuned)
        row.update({"seconds": round(t.seconds, 3), "error": t.error})
        rows.append(row)
    return rows


def _field(r: Any, name: str, default: Any = None) -> Any:
    return r.get(name, default) if isinstance(r, Mapping) else getattr(r, name, default)


@dataclass(frozen=True)
class _Dimension:
    distribution: optuna.distributions.BaseDistribution
    reverse: bool  # ReverseLogarithmic: the search runs over 1 - value


def search_space(ranges: Mapping[str, Any]) -> dict[str, _Dimension]:
    """optuna distributions for the tuning ranges, honouring scaling and integer flags."""
    space = {}
    for name, r in ranges.items():
        low, high = float(_field(r, "min")), float(_field(r, "max"))
        scaling = _field(r, "scaling", "Auto") or "Auto"
        integer = bool(_field(r, "integer", False))
        if not low < high:
            raise ValueError(f"tuning range {name}: min ({low}) must be below max ({high})")
        if scaling == "Auto":
            scaling = "Logarithmic" if low > 0 and high / low >= 100 else "Linear"
        if scaling == "Logarithmic" and low <= 0:
            raise ValueError(f"tuning range {name}: Logarithmic scaling needs min > 0, got {low}")
        if scaling == "ReverseLogarithmic":
            if integer or not 0 <= low < high < 1:
                raise ValueError(f"tuning range {name}: ReverseLogarithmic needs a continuous range within [0, 1)")
            dist = optuna.distributions.FloatDistribution(1 - high, 1 - low, log=True)
            space[name] = _Dimension(dist, reverse=True)
            continue
        if scaling not in ("Linear", "Logarithmic"):
            raise ValueError(f"tuning range {name}: unknown scaling {scaling!r}")
        log = scaling == "Logarithmic"
        if integer:
            lo, hi = math.ceil(low), math.floor(high)
            if lo > hi:
                raise ValueError(f"tuning range {name}: no integer between {low} and {high}")
            dist = optuna.distributions.IntDistribution(lo, hi, log=log)
        else:
            dist = optuna.distributions.FloatDistribution(low, high, log=log)
        space[name] = _Dimension(dist, reverse=False)
    if not space:
        raise ValueError("tuning needs at least one range")
    return space


def _values(space: dict[str, _Dimension], params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, dim in space.items():
        v = params[name]
        out[name] = 1 - v if dim.reverse else (int(v) if isinstance(v, (int, np.integer)) else float(v))
    return out


def _sampler(strategy: str, seed: int, max_jobs: int, max_parallel_jobs: int) -> optuna.samplers.BaseSampler:
    if strategy == "Random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "Bayesian":
        # A few random trials first (at least one per parallel slot), then TPE.
        startup = max(max_parallel_jobs, min(10, max_jobs // 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    raise ValueError(f"tuning strategy must be Bayesian or Random, got {strategy!r}")


# What each worker process holds for the whole search (inherited through fork).
_WORKER: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    _WORKER.clear()
    _WORKER.update(state)


def _run_trial(number: int, tuned: dict[str, Any], hyperparameters: dict[str, Any], seed: int) -> TrialResult:
    """Train and score one trial; never raises (a failure is part of the result)."""
    started = time.time()
    clock = time.perf_counter()
    try:
        ds: TrainingDataset = _WORKER["dataset"]
        model = _WORKER["train_fn"](ds.train.X, ds.train.y, ds.validation.X, ds.validation.y, hyperparameters, seed)
        scores, labels = model.predict(ds.validation.X)
        validation = metrics.evaluate_scores(ds.validation.y, scores, model.threshold, _WORKER["target_recall"])
        objective = metrics.objective_value(_WORKER["objective"], ds.validation.y, scores, model.threshold)
        if not math.isfinite(objective):
            raise FloatingPointError(f"objective is {objective}")
        interval = evaluation.objective_interval(
            _WORKER["bootstrap"], _WORKER["objective"], ds.validation.y, Predictions(scores, labels),
            _WORKER["target_recall"],
        )  # fmt: skip
        outcome = dict(
            state=COMPLETED, objective=objective, validation=validation, model_bytes=model.to_bytes(),
            objective_low=interval.low, objective_high=interval.high,
            best_epoch=(model.info or {}).get("best_epoch"),
        )  # fmt: skip
    except Exception as e:  # any failure of one trial is that trial's result
        last = traceback.extract_tb(e.__traceback__)[-1:] or [None]
        where = f" ({os.path.basename(last[0].filename)}:{last[0].lineno})" if last[0] else ""
        outcome = dict(state=FAILED, objective=None, validation=None, error=f"{type(e).__name__}: {e}{where}")
    return TrialResult(
        number=number, tuned=tuned, hyperparameters=hyperparameters, worker=os.getpid(), seed=seed,
        seconds=time.perf_counter() - clock, started_at=started, finished_at=time.time(), **outcome,
    )  # fmt: skip


def _died(trial: optuna.Trial, tuned: dict[str, Any], hp: dict[str, Any], trial_seed: int) -> TrialResult:
    now = time.time()
    return TrialResult(
        number=trial.number, tuned=tuned, hyperparameters=hp, state=FAILED, objective=None, validation=None,
        seconds=0.0, started_at=now, finished_at=now, worker=0, seed=trial_seed,
        error="BrokenProcessPool: the worker process died",
    )  # fmt: skip


@dataclass(frozen=True)
class _Plan:
    """The search as the tuning config and the static hyperparameters describe it, checked."""

    strategy: str
    max_jobs: int
    parallel: int
    objective_metric: str
    objective_type: str
    static: dict[str, Any]
    target_recall: float
    space: dict[str, _Dimension]


def _plan(tuning_section: Any, static_hyperparameters: Mapping[str, Any]) -> _Plan:
    strategy = _field(tuning_section, "strategy", "Bayesian")
    max_jobs = int(_field(tuning_section, "max_jobs"))
    parallel = int(_field(tuning_section, "max_parallel_jobs"))
    objective_metric = _field(tuning_section, "objective_metric", "validation:objective_loss")
    if objective_metric not in metrics.OBJECTIVES:
        raise ValueError(f"objective_metric must be one of {', '.join(metrics.OBJECTIVES)}, got {objective_metric!r}")
    objective_type = metrics.OBJECTIVES[objective_metric]
    if _field(tuning_section, "objective_type", objective_type) != objective_type:
        raise ValueError(f"objective_type must be {objective_type} for {objective_metric}")
    if not 1 <= parallel <= max_jobs:
        raise ValueError(f"need 1 <= max_parallel_jobs ({parallel}) <= max_jobs ({max_jobs})")
    static = dict(static_hyperparameters)
    if "target_recall" not in static:
        raise ValueError("static hyperparameters must include target_recall (the serving threshold needs it)")
    space = search_space(_field(tuning_section, "ranges"))
    overlap = sorted(set(space) & set(static))
    if overlap:
        raise ValueError(f"hyperparameter {overlap[0]!r} is both tuned and static")
    return _Plan(strategy, max_jobs, parallel, objective_metric, objective_type, static,
                 float(static["target_recall"]), space)  # fmt: skip


def _search(
    plan: _Plan, state: dict[str, Any], seed: int, progress: Callable[[TrialResult], None] | None
) -> list[TrialResult]:
    """Run the trials, up to `plan.parallel` at once in forked workers; every trial's result, by number."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "minimize" if plan.objective_type == "Minimize" else "maximize"
    study = optuna.create_study(
        direction=direction, sampler=_sampler(plan.strategy, seed, plan.max_jobs, plan.parallel)
    )
    distributions = {name: dim.distribution for name, dim in plan.space.items()}
    results: list[TrialResult] = []
    asked = 0
    pending: dict[Future, tuple[optuna.Trial, dict[str, Any], dict[str, Any], int]] = {}

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=plan.parallel,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(state,),
        )

    pool = new_pool()
    try:
        while asked < plan.max_jobs or pending:
            while asked < plan.max_jobs and len(pending) < plan.parallel:
                trial = study.ask(distributions)
                tuned = _values(plan.space, trial.params)
                hp = {**plan.static, **tuned}
                trial_seed = seed * 100_003 + trial.number
                pending[pool.submit(_run_trial, trial.number, tuned, hp, trial_seed)] = (trial, tuned, hp, trial_seed)
                asked += 1
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            broken = False
            for future in sorted(done, key=lambda f: pending[f][0].number):
                trial, tuned, hp, trial_seed = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    broken = True
                    result = _died(trial, tuned, hp, trial_seed)
                if result.state == COMPLETED:
                    study.tell(trial, result.objective)
                else:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                results.append(result)
                if progress:
                    progress(result)
            if broken:
                pool.shutdown(wait=True, cancel_futures=True)
                pool = new_pool()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return sorted(results, key=lambda r: r.number)


def tune(
    dataset: TrainingDataset,
    tuning_section: Any,
    static_hyperparameters: Mapping[str, Any],
    seed: int = 0,
    *,
    train_fn: Callable[..., LinearLearnerModel] = train,
    progress: Callable[[TrialResult], None] | None = None,
    settings: evaluation.Settings | None = None,
) -> TuningResult:
    """Search hyperparameters over the dataset as the tuning config says; the best model and its predictions."""
    clock = time.perf_counter()
    plan = _plan(tuning_section, static_hyperparameters)
    state = {
        "dataset": dataset,
        "train_fn": train_fn,
        "target_recall": plan.target_recall,
        "objective": plan.objective_metric,
        # Built once, inherited by the workers: every trial's interval uses the same resamples.
        "bootstrap": evaluation.bootstrap(
            dataset.validation.timestamp, dataset.gap_ms, settings or evaluation.Settings()
        ),
    }
    results = _search(plan, state, seed, progress)
    completed = [r for r in results if r.state == COMPLETED]
    if not completed:
        reasons = sorted({r.error or "unknown" for r in results})
        raise TuningError(f"all {len(results)} tuning trials failed: " + "; ".join(reasons[:3]))
    sign = -1.0 if plan.objective_type == "Minimize" else 1.0
    best = max(completed, key=lambda r: (sign * r.objective, r.validation["roc_auc"], -r.number))
    model = LinearLearnerModel.from_bytes(best.model_bytes)
    validation_predictions = Predictions(*model.predict(dataset.validation.X))
    test_predictions = Predictions(*model.predict(dataset.test.X))
    return TuningResult(
        trials=results,
        best=best,
        model=model,
        validation_predictions=validation_predictions,
        test_predictions=test_predictions,
        validation=metrics.evaluate_scores(
            dataset.validation.y, validation_predictions.scores, model.threshold, plan.target_recall
        ),
        test=metrics.evaluate_scores(dataset.test.y, test_predictions.scores, model.threshold, plan.target_recall),
        pr_curve=metrics.pr_curve(dataset.test.y, test_predictions.scores),
        strategy=plan.strategy,
        max_jobs=plan.max_jobs,
        max_parallel_jobs=plan.parallel,
        objective_metric=plan.objective_metric,
        objective_type=plan.objective_type,
        target_recall=plan.target_recall,
        seconds=time.perf_counter() - clock,
    )


def max_concurrency(trials: list[TrialResult]) -> int:
    """The most trials whose [started_at, finished_at] intervals overlap at one moment."""
    events = sorted(
        [(t.started_at, 1) for t in trials] + [(t.finished_at, -1) for t in trials], key=lambda e: (e[0], e[1])
    )  # an end at the same instant as a start comes first
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak
