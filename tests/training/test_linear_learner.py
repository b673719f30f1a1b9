"""The local linear-learner: it learns, honours l1/normalisation/threshold selection, and round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml_demo_dagster.core import linear_learner as ll
from ml_demo_dagster.core.metrics import evaluate, precision_at_recall

BASE = {
    "predictor_type": "binary_classifier",
    "binary_classifier_model_selection_criteria": "precision_at_target_recall",
    "target_recall": 0.5,
    "epochs": 15,
    "normalize_data": True,
    "learning_rate": 0.05,
    "mini_batch_size": 64,
}


def separable(n: int, d: int, seed: int, informative: int = 3, margin: float = 0.2):
    """Labels set by the sign of a few features, with a margin around the boundary."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n * 2, d)).astype(np.float32)
    z = X[:, :informative].sum(axis=1)
    keep = np.abs(z) > margin
    X, z = X[keep][:n], z[keep][:n]
    return X, (z > 0).astype(np.int8)


def test_learns_a_linearly_separable_problem():
    X, y = separable(1500, 20, seed=0)
    hp = {**BASE, "binary_classifier_model_selection_criteria": "accuracy"}
    model = ll.train(X[:1000], y[:1000], X[1000:1250], y[1000:1250], hp, seed=0)
    scores, labels = model.predict(X[1250:])
    assert (labels == y[1250:]).mean() > 0.97
    result = evaluate(model, X[1250:], y[1250:], 0.5)
    assert result["roc_auc"] > 0.99 and result["precision_at_target_recall"] > 0.98
    assert labels.dtype == np.int8 and set(np.unique(labels)) <= {0, 1}
    # The informative features carry the largest weights.
    assert set(np.argsort(-np.abs(model.weights))[:3]) == {0, 1, 2}


def test_threshold_is_precision_at_target_recall_on_validation():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(1200, 5)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=1200) > 0).astype(np.int8)
    hp = {**BASE, "target_recall": 0.3}
    model = ll.train(X[:800], y[:800], X[800:], y[800:], hp, seed=2)
    precision, threshold, recall = precision_at_recall(y[800:], model.scores(X[800:]), 0.3)
    assert model.threshold == threshold and recall >= 0.3
    assert model.info["criterion_value"] == precision
    assert evaluate(model, X[800:], y[800:], 0.3)["precision_at_threshold"] == precision


def test_sparsity_rises_with_l1():
    X, y = separable(1200, 40, seed=3)
    zeros = []
    for l1 in (0.0, 0.01, 0.1):
        model = ll.train(X[:900], y[:900], X[900:], y[900:], {**BASE, "l1": l1, "early_stopping_patience": 20}, seed=0)
        zeros.append(int((model.weights == 0).sum()))
    assert zeros[0] == 0
    assert zeros[0] < zeros[1] < zeros[2]
    assert zeros[2] >= 30  # 37 of 40 features carry nothing


def test_wd_shrinks_weights():
    X, y = separable(1000, 10, seed=4)
    norms = [np.linalg.norm(ll.train(X[:800], y[:800], X[800:], y[800:], {**BASE, "wd": wd}, seed=0).weights)
             for wd in (0.0, 0.1, 1.0)]  # fmt: skip
    assert norms[0] > norms[1] > norms[2]


def test_deterministic_for_a_seed_and_different_across_seeds():
    X, y = separable(600, 8, seed=5)
    a = ll.train(X[:400], y[:400], X[400:], y[400:], BASE, seed=7)
    b = ll.train(X[:400], y[:400], X[400:], y[400:], BASE, seed=7)
    c = ll.train(X[:400], y[:400], X[400:], y[400:], BASE, seed=8)
    assert a.to_bytes() == b.to_bytes()
    assert not np.array_equal(a.weights, c.weights)


def test_normalisation_is_fitted_on_train_and_survives_constant_columns():
    rng = np.random.default_rng(6)
    X = np.column_stack([rng.normal(1000, 50, 800), np.full(800, 7.0), rng.normal(0, 1e-3, 800)]).astype(np.float32)
    y = (X[:, 2] > 0).astype(np.int8)
    model = ll.train(X[:600], y[:600], X[600:], y[600:], BASE, seed=0)
    assert np.allclose(model.mean, X[:600].mean(axis=0, dtype=np.float64))
    assert model.scale[1] == 1.0  # constant column: shifted, not scaled
    assert np.isfinite(model.scores(X)).all()
    assert evaluate(model, X[600:], y[600:], 0.5)["roc_auc"] > 0.95
    raw = ll.train(X[:600], y[:600], X[600:], y[600:], {**BASE, "normalize_data": "false"}, seed=0)
    assert raw.mean is None and raw.scale is None


def test_model_bytes_round_trip_exactly_and_are_versioned_json():
    X, y = separable(400, 6, seed=8)
    model = ll.train(X[:300], y[:300], X[300:], y[300:], BASE, seed=0)
    data = model.to_bytes()
    doc = json.loads(data)
    assert doc["format"] == ll.MODEL_FORMAT and doc["version"] == ll.MODEL_FORMAT_VERSION
    back = ll.LinearLearnerModel.from_bytes(data)
    assert np.array_equal(back.weights, model.weights) and back.bias == model.bias
    assert back.threshold == model.threshold and back.hyperparameters == model.hyperparameters
    assert np.array_equal(back.scores(X), model.scores(X))
    with pytest.raises(ValueError, match="version 99 is not supported"):
        ll.LinearLearnerModel.from_bytes(json.dumps({**doc, "version": 99}).encode())
    with pytest.raises(ValueError, match="not JSON"):
        ll.LinearLearnerModel.from_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match="do not match feature_dim"):
        ll.LinearLearnerModel.from_bytes(json.dumps({**doc, "feature_dim": 5}).encode())


def test_sagemaker_style_string_hyperparameters_are_accepted():
    X, y = separable(300, 4, seed=9)
    hp = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in BASE.items()}
    hp.update({"feature_dim": "4", "num_models": "auto", "l1": "auto", "optimizer": "auto"})
    model = ll.train(X[:200], y[:200], X[200:], y[200:], hp, seed=0)
    assert model.info["effective_hyperparameters"]["mini_batch_size"] == 64
    assert model.info["effective_hyperparameters"]["optimizer"] == "adam"
    assert model.info["ignored_hyperparameters"] == ["num_models"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"l2": 0.1}, "unknown linear-learner hyperparameter 'l2'"),
        ({"learning_rate": "fast"}, "learning_rate: expected a number"),
        ({"mini_batch_size": 10.5}, "mini_batch_size: expected an integer"),
        ({"target_recall": 1.5}, "target_recall: must be <= 1"),
        ({"l1": -1}, "l1: must be >= 0"),
        ({"predictor_type": "regressor"}, "predictor_type: expected one of binary_classifier"),
        ({"feature_dim": 7}, "feature_dim is 7"),
    ],
)
def test_bad_hyperparameters_are_named(change, message):
    X, y = separable(100, 4, seed=10)
    with pytest.raises(ValueError, match=message):
        ll.train(X[:60], y[:60], X[60:], y[60:], {**BASE, **change}, seed=0)


def test_bad_data_is_named():
    X, y = separable(100, 4, seed=11)
    with pytest.raises(ValueError, match="validation: rows have 3 features, expected 4"):
        ll.train(X[:60], y[:60], X[60:, :3], y[60:], BASE)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="train: features contain 1 NaN"):
        ll.train(bad[:60], y[:60], X[60:], y[60:], BASE)
    with pytest.raises(ValueError, match="train: 60 feature rows but 59 labels"):
        ll.train(X[:60], y[:59], X[60:], y[60:], BASE)


def test_early_stopping_keeps_the_best_epoch():
    X, y = separable(800, 10, seed=12)
    model = ll.train(X[:500], y[:500], X[500:], y[500:], {**BASE, "epochs": 50, "early_stopping_patience": 2}, seed=0)
    history = model.info["criterion_history"]
    assert model.info["stopped_early"] and len(history) < 50
    assert history[model.info["best_epoch"] - 1] == max(history)


def test_other_selection_criteria_pick_their_thresholds():
    rng = np.random.default_rng(13)
    X = rng.normal(size=(900, 3)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=900) > 0.5).astype(np.int8)
    for criterion in ("accuracy", "f_beta", "recall_at_target_precision"):
        model = ll.train(
            X[:600],
            y[:600],
            X[600:],
            y[600:],
            {**BASE, "binary_classifier_model_selection_criteria": criterion},
            seed=0,
        )
        s = model.scores(X[600:])
        # Brute force over every candidate threshold on the validation rows.
        candidates = np.append(np.unique(s), np.inf)
        predicted = s[None, :] >= candidates[:, None]
        tp = (predicted & (y[600:] == 1)).sum(axis=1)
        fp = (predicted & (y[600:] == 0)).sum(axis=1)
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = tp / y[600:].sum()
        if criterion == "accuracy":
            value = ((predicted == (y[600:] == 1)).mean(axis=1)).max()
        elif criterion == "f_beta":
            value = (2 * precision * recall / np.maximum(precision + recall, 1e-300)).max()
        else:
            value = recall[precision >= 0.8].max()
        assert model.info["criterion_value"] == pytest.approx(value)


def test_without_a_validation_channel_the_training_channel_decides():
    X, y = separable(300, 4, seed=14)
    model = ll.train(X, y, np.zeros((0, 4)), np.zeros(0), BASE, seed=0)
    assert model.info["criterion_channel"] == "train" and model.info["validation_rows"] == 0
    assert precision_at_recall(y, model.scores(X), 0.5)[1] == model.threshold
