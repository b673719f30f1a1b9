"""The local tuner: the config's ranges and limits, parallel trials, failures, the best model's scores."""

from __future__ import annotations

import os

import numpy as np
import pytest
from training_synthetic import random_table

from ml_demo_dagster.config import default_config
from ml_demo_dagster.core import linear_learner, metrics
from ml_demo_dagster.core.dataset import assemble_dataset
from ml_demo_dagster.core.metrics import evaluate
from ml_demo_dagster.core.tuner import COMPLETED, FAILED, TuningError, max_concurrency, search_space, tune

STATIC = {
    "predictor_type": "binary_classifier",
    "binary_classifier_model_selection_criteria": "precision_at_target_recall",
    "target_recall": 0.25,
    "epochs": 4,
    "normalize_data": True,
    "feature_dim": 8,
}


@pytest.fixture(scope="module")
def dataset():
    return assemble_dataset([random_table("1700000000001", 1500, 8, seed=0, max_duration=3000, signal=2.0)])


def section(**changes):
    base = default_config().tuning.model_dump()
    base.update(changes)
    return base


def test_runs_max_jobs_trials_never_more_than_max_parallel_at_once(dataset):
    result = tune(dataset, section(max_jobs=6, max_parallel_jobs=2), STATIC, seed=1)
    assert [t.number for t in result.trials] == list(range(6))
    assert all(t.state == COMPLETED for t in result.trials)
    assert max_concurrency(result.trials) <= 2
    assert len({t.worker for t in result.trials}) <= 2 and os.getpid() not in {t.worker for t in result.trials}
    for t in result.trials:
        assert t.started_at <= t.finished_at and t.seconds >= 0
        assert t.hyperparameters == {**STATIC, **t.tuned}


def test_one_at_a_time_when_max_parallel_is_one(dataset):
    result = tune(dataset, section(max_jobs=3, max_parallel_jobs=1), STATIC, seed=2)
    assert max_concurrency(result.trials) == 1
    ordered = sorted(result.trials, key=lambda t: t.started_at)
    assert all(a.finished_at <= b.started_at for a, b in zip(ordered, ordered[1:], strict=False))


def test_values_honour_ranges_scaling_and_integers(dataset):
    result = tune(dataset, section(max_jobs=4, max_parallel_jobs=2, strategy="Random"), STATIC, seed=3)
    for t in result.trials:
        assert 1e-7 <= t.tuned["l1"] <= 1 and 1e-5 <= t.tuned["learning_rate"] <= 1 and 1e-7 <= t.tuned["wd"] <= 1
        assert isinstance(t.tuned["mini_batch_size"], int) and 100 <= t.tuned["mini_batch_size"] <= 1000
    space = search_space(default_config().tuning.ranges)
    assert space["l1"].distribution.log and space["mini_batch_size"].distribution.log
    assert type(space["mini_batch_size"].distribution).__name__ == "IntDistribution"
    linear = search_space({"beta_1": {"min": 0.5, "max": 0.99, "scaling": "Linear"}})["beta_1"].distribution
    assert not linear.log
    reverse = search_space({"beta_2": {"min": 0.9, "max": 0.9999, "scaling": "ReverseLogarithmic"}})["beta_2"]
    assert reverse.reverse and reverse.distribution.low == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="Logarithmic scaling needs min > 0"):
        search_space({"l1": {"min": 0.0, "max": 1.0, "scaling": "Logarithmic"}})


def test_random_strategy_is_reproducible_for_a_seed(dataset):
    a = tune(dataset, section(max_jobs=3, max_parallel_jobs=2, strategy="Random"), STATIC, seed=4)
    b = tune(dataset, section(max_jobs=3, max_parallel_jobs=2, strategy="Random"), STATIC, seed=4)
    assert [t.tuned for t in a.trials] == [t.tuned for t in b.trials]
    assert [t.objective for t in a.trials] == [t.objective for t in b.trials]


def test_best_is_chosen_on_validation_and_test_is_only_reported(dataset):
    result = tune(dataset, section(max_jobs=4, max_parallel_jobs=2), STATIC, seed=5)
    assert result.objective_metric == "validation:objective_loss" and result.objective_type == "Minimize"
    best = min(result.trials, key=lambda t: (t.objective, -t.validation["roc_auc"], t.number))
    assert result.best.number == best.number
    assert (
        result.validation["log_loss"]
        == best.objective
        == metrics.log_loss(dataset.validation.y, result.validation_predictions.scores)
    )
    for t in result.trials:  # every objective carries its interval (enough blocks here)
        assert t.objective_low <= t.objective <= t.objective_high
    assert result.test == evaluate(result.model, dataset.test.X, dataset.test.y, 0.25)
    assert np.array_equal(result.test_predictions.scores, result.model.scores(dataset.test.X))
    assert result.test["rows"] == len(dataset.test)
    assert len(result.pr_curve["precision"]) == len(result.pr_curve["recall"])
    assert result.validation["roc_auc"] > 0.6  # the planted signal is found
    summary = result.summary()
    assert summary["trials"] == 4 and summary["best_hyperparameters"] == result.best.tuned
    assert [row["trial"] for row in result.trials_table()] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("metric", "kind", "pick", "value"),
    [
        ("validation:roc_auc_score", "Maximize", max, lambda v: v["roc_auc"]),
        ("validation:precision", "Maximize", max, lambda v: v["precision_at_threshold"]),
    ],
)
def test_every_objective_is_linear_learners_metric_in_its_direction(dataset, metric, kind, pick, value):
    result = tune(dataset, section(max_jobs=3, max_parallel_jobs=2, objective_metric=metric, objective_type=kind),
                  STATIC, seed=8)  # fmt: skip
    for t in result.trials:
        assert t.objective == value(t.validation)
    assert result.best.objective == pick(t.objective for t in result.trials)
    with pytest.raises(ValueError, match=f"objective_type must be {kind}"):
        tune(dataset, section(max_jobs=2, max_parallel_jobs=1, objective_metric=metric, objective_type="Minimize"),
             STATIC)  # fmt: skip


def _fails_for_small_batches(train_X, train_y, val_X, val_y, hyperparameters, seed):
    if hyperparameters["mini_batch_size"] < 300:
        raise RuntimeError("simulated failure")
    return linear_learner.train(train_X, train_y, val_X, val_y, hyperparameters, seed)


def _always_fails(*args):
    raise RuntimeError("simulated failure")


def test_a_failing_trial_is_recorded_not_fatal(dataset):
    result = tune(
        dataset,
        section(max_jobs=6, max_parallel_jobs=2, strategy="Random"),
        STATIC,
        seed=6,
        train_fn=_fails_for_small_batches,
    )
    states = {t.number: t.state for t in result.trials}
    assert len(result.trials) == 6
    for t in result.trials:
        if t.tuned["mini_batch_size"] < 300:
            assert t.state == FAILED and "simulated failure" in t.error and t.objective is None
        else:
            assert t.state == COMPLETED
    assert FAILED in states.values() and COMPLETED in states.values()
    assert result.best.state == COMPLETED


def test_all_trials_failing_is_an_error(dataset):
    with pytest.raises(TuningError, match="all 2 tuning trials failed: RuntimeError: simulated failure"):
        tune(dataset, section(max_jobs=2, max_parallel_jobs=2), STATIC, train_fn=_always_fails)


def _dies_for_small_batches(train_X, train_y, val_X, val_y, hyperparameters, seed):
    if hyperparameters["mini_batch_size"] < 300:
        os._exit(3)  # the worker process crashes outright
    return linear_learner.train(train_X, train_y, val_X, val_y, hyperparameters, seed)


def test_a_dead_worker_fails_its_trial_and_the_search_goes_on(dataset):
    result = tune(
        dataset,
        section(max_jobs=6, max_parallel_jobs=1, strategy="Random"),
        STATIC,
        seed=6,
        train_fn=_dies_for_small_batches,
    )
    assert len(result.trials) == 6
    died = [t for t in result.trials if t.tuned["mini_batch_size"] < 300]
    assert died and len(died) < 6
    assert all(t.state == FAILED and "worker process died" in t.error for t in died)
    assert all(t.state == COMPLETED for t in result.trials if t not in died)


def test_config_errors_are_clear(dataset):
    with pytest.raises(ValueError, match="both tuned and static"):
        tune(dataset, section(max_jobs=2, max_parallel_jobs=1), {**STATIC, "l1": 0.1})
    with pytest.raises(ValueError, match="target_recall"):
        tune(dataset, section(max_jobs=2, max_parallel_jobs=1), {"epochs": 1})
    with pytest.raises(ValueError, match="strategy must be Bayesian or Random"):
        tune(dataset, section(max_jobs=2, max_parallel_jobs=1, strategy="Grid"), STATIC)
    with pytest.raises(ValueError, match="max_parallel_jobs"):
        tune(dataset, section(max_jobs=2, max_parallel_jobs=3), STATIC)


def test_the_kept_model_equals_a_retrain_with_the_same_seed(dataset):
    result = tune(dataset, section(max_jobs=2, max_parallel_jobs=2), STATIC, seed=7)
    best = result.best
    again = linear_learner.train(
        dataset.train.X, dataset.train.y, dataset.validation.X, dataset.validation.y, best.hyperparameters, best.seed
    )
    assert np.array_equal(again.weights, result.model.weights) and again.threshold == result.model.threshold
