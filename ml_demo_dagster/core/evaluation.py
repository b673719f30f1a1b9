"""Scores of a model on labelled rows, each with its interval, and the champion/challenger gate.

Everything a person reads about a model (validation, test, live, the gate) is computed
here, from the same three things whatever the target: the rows' labels and opening times,
and the model's predictions on them (scores, and 0/1 labels at the model's own threshold,
which is set on its validation split for the target recall, as it serves). Locally the
predictions come from numpy, on aws from a SageMaker transform job: the numbers mean the
same either way.

Each score carries a 95% interval from a block bootstrap over time (core/intervals.py),
with blocks no shorter than the longest deal.

The gate (DESIGN §4.3): the challenger and the champion are scored on the same newest rows
with the same resamples, and the challenger is deployed only when the interval of its
improvement lies above zero; with no champion, only when its own score's interval lies
above chance (ROC AUC 0.5, or precision above the rows' base rate, paired likewise). The
decision keeps the difference, its interval and the reason. No Dagster or AWS imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_demo_dagster.core.intervals import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MIN_BLOCKS,
    DEFAULT_SAMPLES,
    BlockBootstrap,
    Interval,
)

# What the gate can compare: name -> (how it is computed, what chance scores).
GATE_METRICS = ("roc_auc", "precision")
SCORES = ("roc_auc", "precision", "recall", "precision_at_target_recall", "log_loss")


@dataclass(frozen=True)
class Predictions:
    """A model's output on some rows: probability of profit, and 0/1 at its own threshold."""

    scores: np.ndarray  # float64 [n]
    labels: np.ndarray  # int8 [n]

    def __post_init__(self) -> None:
        scores = np.asarray(self.scores, dtype=np.float64).ravel()
        labels = np.asarray(self.labels).astype(np.int8).ravel()
        if scores.shape != labels.shape:
            raise ValueError(f"{scores.size} scores but {labels.size} predicted labels")
        if not np.isfinite(scores).all():
            raise ValueError(f"predictions contain {int((~np.isfinite(scores)).sum())} non-finite scores")
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return int(self.scores.size)


@dataclass(frozen=True)
class Settings:
    """How intervals are drawn (config [evaluation])."""

    confidence: float = DEFAULT_CONFIDENCE
    samples: int = DEFAULT_SAMPLES
    min_blocks: int = DEFAULT_MIN_BLOCKS
    seed: int = 0

    @classmethod
    def from_config(cls, section: Any, seed: int = 0) -> Settings:
        return cls(section.confidence, section.bootstrap_samples, section.min_blocks, seed)


def bootstrap(timestamp: Any, block_ms: float, settings: Settings) -> BlockBootstrap:
    """The resamples every score on these rows shares."""
    return BlockBootstrap(
        timestamp, block_ms, samples=settings.samples, confidence=settings.confidence,
        min_blocks=settings.min_blocks, seed=settings.seed,
    )  # fmt: skip


def _replicates(bb: BlockBootstrap, name: str, y: np.ndarray, p: Predictions, target_recall: float):
    if name == "roc_auc":
        return bb.roc_auc(y, p.scores)
    if name == "precision":
        return bb.precision_at(y, p.labels)
    if name == "recall":
        return bb.recall_at(y, p.labels)
    if name == "precision_at_target_recall":
        return bb.precision_at_recall(y, p.scores, target_recall)
    if name == "log_loss":
        return bb.log_loss(y, p.scores)
    raise ValueError(f"unknown score {name!r}")


# A tuning objective (core/metrics.OBJECTIVES) as the score computed here.
OBJECTIVE_SCORES = {
    "validation:objective_loss": "log_loss",
    "validation:roc_auc_score": "roc_auc",
    "validation:precision": "precision",
}


def objective_interval(
    bb: BlockBootstrap, objective_metric: str, y: Any, predictions: Predictions, target_recall: float
) -> Interval:
    """A tuning objective's value on the validation rows, with its interval."""
    try:
        name = OBJECTIVE_SCORES[objective_metric]
    except KeyError:
        raise ValueError(f"unknown tuning objective {objective_metric!r}") from None
    y = np.asarray(y).astype(np.int8, copy=False).ravel()
    return bb.interval(*_replicates(bb, name, y, predictions, target_recall))


@dataclass
class Report:
    """Scores of one model on one set of rows, each with its interval."""

    rows: int
    positives: int
    base_rate: float
    predicted_positive_rate: float
    target_recall: float
    scores: dict[str, Interval] = field(default_factory=dict)

    def value(self, name: str) -> float | None:
        return self.scores[name].value

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: counts, then each score as {value, low, high, confidence, blocks, block_seconds}."""
        return {
            "rows": self.rows,
            "positives": self.positives,
            "base_rate": self.base_rate,
            "predicted_positive_rate": self.predicted_positive_rate,
            "target_recall": self.target_recall,
            **{name: interval.to_dict() for name, interval in self.scores.items()},
        }


def report(
    y: Any,
    timestamp: Any,
    predictions: Predictions,
    block_ms: float,
    target_recall: float,
    settings: Settings | None = None,
    scores: tuple[str, ...] = SCORES,
) -> Report:
    """Every score in `scores` of these predictions on these rows, with intervals."""
    y = np.asarray(y).astype(np.int8, copy=False).ravel()
    if y.size != len(predictions):
        raise ValueError(f"{y.size} rows but {len(predictions)} predictions")
    bb = bootstrap(timestamp, block_ms, settings or Settings())
    out = Report(
        rows=int(y.size),
        positives=int(y.sum()),
        base_rate=float(y.mean()) if y.size else 0.0,
        predicted_positive_rate=float(predictions.labels.mean()) if y.size else 0.0,
        target_recall=float(target_recall),
    )
    for name in scores:
        out.scores[name] = bb.interval(*_replicates(bb, name, y, predictions, target_recall))
    return out


@dataclass(frozen=True)
class Decision:
    """Whether the challenger replaces the champion, why, and the evidence."""

    deploy: bool
    reason: str
    metric: str
    challenger: Interval  # the challenger's score on the rows
    champion: Interval | None  # the champion's, on the same rows (None: no champion)
    reference: str  # what the difference is taken against: "champion" or "chance"
    chance: float | None  # the chance level compared with when there is no champion
    difference: Interval  # challenger minus champion (or minus chance), paired

    def to_dict(self) -> dict[str, Any]:
        return {
            "deploy": self.deploy,
            "reason": self.reason,
            "metric": self.metric,
            "reference": self.reference,
            "chance": self.chance,
            "challenger": self.challenger.to_dict(),
            "champion": self.champion.to_dict() if self.champion else None,
            "difference": self.difference.to_dict(),
        }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def decide(
    y: Any,
    timestamp: Any,
    challenger: Predictions,
    champion: Predictions | None,
    block_ms: float,
    metric: str = "roc_auc",
    settings: Settings | None = None,
) -> Decision:
    """Deploy the challenger only when its paired improvement on these rows is significant."""
    if metric not in GATE_METRICS:
        raise ValueError(f"gate metric must be one of {', '.join(GATE_METRICS)}, got {metric!r}")
    y = np.asarray(y).astype(np.int8, copy=False).ravel()
    settings = settings or Settings()
    bb = bootstrap(timestamp, block_ms, settings)
    level = f"{settings.confidence:.0%}"
    challenger_reps = _replicates(bb, metric, y, challenger, 0.0)
    challenger_score = bb.interval(*challenger_reps)
    if champion is not None:
        champion_reps = _replicates(bb, metric, y, champion, 0.0)
        champion_score = bb.interval(*champion_reps)
        reference, chance = "champion", None
        diff = bb.difference(challenger_reps, champion_reps)
    else:
        champion_score = None
        reference = "chance"
        if metric == "roc_auc":
            chance = 0.5
            diff = bb.interval(challenger_reps[0] - 0.5, challenger_reps[1] - 0.5)
        else:  # precision of predicting "profit" for every deal: the base rate, on the same resamples
            base = bb.base_rate(y)
            chance = base[0]
            diff = bb.difference(challenger_reps, base)
    what = f"{metric} {'improvement over the champion' if champion is not None else 'above chance'}"
    if diff.value is None:
        deploy, reason = False, f"{what} cannot be measured on these rows (a score is undefined)"
    elif not diff.claimed:
        deploy = False
        reason = (
            f"{what} {_fmt(diff.value)}, but {diff.blocks} blocks of {diff.block_seconds:.0f} s are too few "
            f"for an interval (need {settings.min_blocks}): not deployed without evidence"
        )
    elif diff.low > 0:
        deploy = True
        reason = f"{what} {_fmt(diff.value)}, {level} interval [{_fmt(diff.low)}, {_fmt(diff.high)}] above zero"
    else:
        deploy = False
        reason = (
            f"{what} {_fmt(diff.value)}, {level} interval [{_fmt(diff.low)}, {_fmt(diff.high)}] "
            "includes zero: not significant"
        )
    if champion is None:
        reason = "first model: " + reason
    return Decision(
        deploy=deploy, reason=reason, metric=metric, challenger=challenger_score, champion=champion_score,
        reference=reference, chance=chance, difference=diff,
    )  # fmt: skip


def finite_or_none(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float, np.floating)) and math.isfinite(x) else None
