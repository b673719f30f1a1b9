"""How good a binary classifier is, in the terms SageMaker linear-learner uses.

The project's objective is linear-learner's `precision_at_target_recall`: among the
decision thresholds whose recall reaches the target, the one with the highest precision.
The local trainer uses it to pick its threshold on the validation channel, the tuner to
rank trials, the champion gate to compare models, and the endpoint's model carries the
threshold it produced. ROC AUC is reported beside it because precision at a target
recall alone hides how much of the ranking is skill.

Every function gives a defined result on degenerate input (no rows, one class only)
instead of raising, because a small or unlucky batch must not crash the pipeline:
- no positives: precision 0, recall 0, threshold just above the highest score (predicts
  nothing);
- one class only: ROC AUC 0.5 (no ranking skill can be measured).
A row is predicted positive when its score is >= the threshold. No Dagster or AWS imports.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score


class ScoringModel(Protocol):
    """What `evaluate` needs from a model: scores in [0, 1] and its own threshold."""

    threshold: float

    def scores(self, X: np.ndarray) -> np.ndarray: ...


def _as_arrays(y: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int8, copy=False).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != scores.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} labels, {scores.size} scores")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores contain {int((~np.isfinite(scores)).sum())} non-finite values")
    return y, scores


def _nothing_threshold(scores: np.ndarray) -> float:
    """A threshold above every score: nothing is predicted positive."""
    top = float(scores.max()) if scores.size else 1.0
    return float(np.nextafter(max(top, 1.0), np.inf))


def precision_at_recall(y: Any, scores: Any, target_recall: float) -> tuple[float, float, float]:
    """(precision, threshold, recall) at the threshold with recall >= target that maximises precision.

    Ties in precision go to the lower threshold (more recall at the same precision).
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    y, scores = _as_arrays(y, scores)
    if not y.any():
        return 0.0, _nothing_threshold(scores), 0.0
    precision, recall, thresholds = precision_recall_curve(y, scores)
    # The curve's last point (precision 1, recall 0) has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    eligible = np.flatnonzero(recall >= target_recall)
    best_precision = precision[eligible].max()
    # thresholds ascend, so among equally precise points the first is the lowest threshold.
    pick = eligible[np.flatnonzero(precision[eligible] == best_precision)[0]]
    return float(precision[pick]), float(thresholds[pick]), float(recall[pick])


def roc_auc(y: Any, scores: Any) -> float:
    """Area under the ROC curve; 0.5 when only one class is present."""
    y, scores = _as_arrays(y, scores)
    if y.size == 0 or y.min() == y.max():
        return 0.5
    return float(roc_auc_score(y, scores))


def log_loss(y: Any, scores: Any) -> float:
    """Mean logistic loss of probability scores (linear-learner's `objective_loss` for a binary
    classifier); scores are clipped to [1e-15, 1 - 1e-15] so a confident mistake costs ~34.5, not inf."""
    y, scores = _as_arrays(y, scores)
    if y.size == 0:
        return 0.0
    p = np.clip(scores, 1e-15, 1 - 1e-15)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


# linear-learner's binary-classifier metrics a tuning job can optimise (DESIGN §4.3), with
# the direction SageMaker requires for each: name -> (objective type, how it is computed).
OBJECTIVES = {
    "validation:objective_loss": "Minimize",
    "validation:roc_auc_score": "Maximize",
    "validation:precision": "Maximize",
}


def objective_value(metric: str, y: Any, scores: Any, threshold: float) -> float:
    """The value of a tuning objective (a name in OBJECTIVES) on labelled rows.

    `validation:precision` is the precision of the predicted labels, i.e. at the model's own
    threshold, which linear-learner sets on the validation channel by its selection criterion.
    """
    if metric == "validation:objective_loss":
        return log_loss(y, scores)
    if metric == "validation:roc_auc_score":
        return roc_auc(y, scores)
    if metric == "validation:precision":
        return precision_recall_at(y, scores, threshold)[0]
    raise ValueError(f"unknown tuning objective {metric!r}; expected one of {', '.join(OBJECTIVES)}")


def pr_curve(y: Any, scores: Any) -> dict[str, list[float]]:
    """Precision, recall and threshold lists (thresholds ascending; one fewer than points)."""
    y, scores = _as_arrays(y, scores)
    if not y.any():
        return {"precision": [0.0], "recall": [0.0], "thresholds": []}
    precision, recall, thresholds = precision_recall_curve(y, scores)
    return {
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "thresholds": thresholds.tolist(),
    }


def precision_recall_at(y: Any, scores: Any, threshold: float) -> tuple[float, float]:
    """(precision, recall) when rows with score >= threshold are predicted positive."""
    y, scores = _as_arrays(y, scores)
    predicted = scores >= threshold
    tp = int((predicted & (y == 1)).sum())
    n_predicted, n_positive = int(predicted.sum()), int(y.sum())
    return (tp / n_predicted if n_predicted else 0.0), (tp / n_positive if n_positive else 0.0)


def evaluate(model: ScoringModel, X: np.ndarray, y: Any, target_recall: float) -> dict[str, Any]:
    """Rows, base rate, precision at target recall, ROC AUC, and precision/recall at the model's own threshold."""
    y = np.asarray(y).astype(np.int8, copy=False).ravel()
    scores = model.scores(X) if len(y) else np.zeros(0)
    return evaluate_scores(y, scores, model.threshold, target_recall)


def evaluate_scores(y: Any, scores: Any, threshold: float, target_recall: float) -> dict[str, Any]:
    """`evaluate` for scores already computed."""
    y, scores = _as_arrays(y, scores)
    precision_t, threshold_t, recall_t = precision_at_recall(y, scores, target_recall)
    precision_m, recall_m = precision_recall_at(y, scores, threshold)
    return {
        "rows": int(y.size),
        "positives": int(y.sum()),
        "base_rate": float(y.mean()) if y.size else 0.0,
        "target_recall": float(target_recall),
        "precision_at_target_recall": precision_t,
        "recall_at_target_recall": recall_t,
        "threshold_at_target_recall": threshold_t,
        "roc_auc": roc_auc(y, scores),
        "log_loss": log_loss(y, scores),
        "threshold": float(threshold),
        "precision_at_threshold": precision_m,
        "recall_at_threshold": recall_m,
        "predicted_positive_rate": float((scores >= threshold).mean()) if y.size else 0.0,
    }
