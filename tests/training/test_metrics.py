"""Metrics against brute force, and defined results on degenerate input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_demo_dagster.core.metrics import evaluate, pr_curve, precision_at_recall, precision_recall_at, roc_auc


def brute_precision_at_recall(y, scores, target):
    """Try every distinct score as the threshold (score >= t is positive)."""
    best = None
    positives = sum(y)
    for t in sorted(set(scores)):
        predicted = [s >= t for s in scores]
        tp = sum(p and yy == 1 for p, yy in zip(predicted, y, strict=False))
        recall = tp / positives
        precision = tp / sum(predicted)
        if recall >= target and (best is None or precision > best[0]):
            best = (precision, t, recall)  # ascending t: the first of equals is the lowest threshold
    return best


def brute_auc(y, scores):
    pos = [s for s, yy in zip(scores, y, strict=False) if yy == 1]
    neg = [s for s, yy in zip(scores, y, strict=False) if yy == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


labels_and_scores = st.integers(2, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0]) | st.floats(0, 1), min_size=n, max_size=n),
    )
)


@settings(max_examples=80, deadline=None)
@given(labels_and_scores, st.sampled_from([0.1, 0.25, 0.5, 0.8, 1.0]))
def test_precision_at_recall_matches_brute_force(ys, target):
    y, scores = ys
    got = precision_at_recall(y, scores, target)
    if sum(y) == 0:
        assert got[0] == 0.0 and got[2] == 0.0 and got[1] > max(scores)
        return
    want = brute_precision_at_recall(y, scores, target)
    assert got[0] == pytest.approx(want[0])
    assert got[1] == want[1]
    assert got[2] == pytest.approx(want[2])
    assert got[2] >= target
    assert precision_recall_at(y, scores, got[1]) == pytest.approx((got[0], got[2]))


@settings(max_examples=60, deadline=None)
@given(labels_and_scores)
def test_roc_auc_matches_brute_force(ys):
    y, scores = ys
    if 0 < sum(y) < len(y):
        assert roc_auc(y, scores) == pytest.approx(brute_auc(y, scores))
    else:
        assert roc_auc(y, scores) == 0.5


def test_degenerate_inputs_have_defined_results():
    assert precision_at_recall([], [], 0.25) == (0.0, pytest.approx(1.0, abs=1e-12), 0.0)
    assert precision_at_recall([1, 1], [0.2, 0.3], 0.25) == (1.0, 0.2, 1.0)  # ties: the lower threshold
    p, t, r = precision_at_recall([0, 0, 0], [0.2, 0.9, 0.3], 0.25)
    assert (p, r) == (0.0, 0.0) and t > 0.9
    assert roc_auc([1, 1, 1], [0.1, 0.2, 0.3]) == 0.5
    assert roc_auc([], []) == 0.5
    assert pr_curve([0, 0], [0.1, 0.2]) == {"precision": [0.0], "recall": [0.0], "thresholds": []}
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([0, 1], [0.5])
    with pytest.raises(ValueError, match="non-finite"):
        roc_auc([0, 1], [0.5, float("nan")])


def test_pr_curve_points_are_what_each_threshold_gives():
    y = [0, 1, 1, 0, 1]
    s = [0.1, 0.4, 0.35, 0.8, 0.9]
    curve = pr_curve(y, s)
    assert len(curve["precision"]) == len(curve["recall"]) == len(curve["thresholds"]) + 1
    for p, r, t in zip(curve["precision"], curve["recall"], curve["thresholds"], strict=False):
        assert precision_recall_at(y, s, t) == pytest.approx((p, r))


class _Fixed:
    def __init__(self, scores, threshold):
        self._scores, self.threshold = np.asarray(scores), threshold

    def scores(self, X):
        return self._scores


def test_evaluate_reports_both_thresholds():
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    model = _Fixed([0.1, 0.8, 0.7, 0.6, 0.9, 0.2, 0.3, 0.4], threshold=0.65)
    result = evaluate(model, np.zeros((8, 1)), y, target_recall=0.5)
    assert result["rows"] == 8 and result["base_rate"] == 0.5 and result["positives"] == 4
    assert result["precision_at_target_recall"] == 1.0 and result["recall_at_target_recall"] == 0.75
    assert result["threshold_at_target_recall"] == 0.7
    assert (result["precision_at_threshold"], result["recall_at_threshold"]) == (1.0, 0.75)
    assert result["roc_auc"] == pytest.approx(brute_auc(y.tolist(), model._scores.tolist()))
    empty = evaluate(_Fixed([], 0.5), np.zeros((0, 1)), np.zeros(0), 0.25)
    assert empty["rows"] == 0 and empty["roc_auc"] == 0.5 and empty["precision_at_target_recall"] == 0.0
