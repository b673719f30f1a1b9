"""A local trainer with SageMaker linear-learner's hyperparameters and semantics.

The aws target trains with the built-in linear-learner; the local target trains here. One
tuning config drives both, so this trainer accepts linear-learner's hyperparameter names
(strings like SageMaker passes them, or typed values) and gives them the same meaning for
`predictor_type=binary_classifier`:

Reproduced
- logistic loss on a linear model with bias (`use_bias`), labels 0/1, scores = sigmoid;
- optimisers `adam` (the `auto` choice; `learning_rate`, `beta_1`, `beta_2`, MXNet's
  bias-corrected update with eps 1e-8), `sgd` (with `momentum`) and `rmsprop`;
- `mini_batch_size`, `epochs`, a fresh seeded shuffle every epoch;
- `wd`: L2 weight decay added to the gradient (MXNet's coupled form), on the bias only
  times `bias_wd_mult` (`auto` = 0, no decay on the bias); `bias_lr_mult`;
- `l1`: a proximal soft-threshold step after each update, in the optimiser's own
  per-coordinate step size (|w| shrinks by l1 * lr_t / (sqrt(v) + eps) with adam, l1 * lr
  with sgd); weights that would cross zero become exactly zero; never on the bias;
- `normalize_data`: features shifted and scaled by the mean and standard deviation of (a
  seeded sample of `num_point_for_scaler` rows of) the training channel; a column with
  zero variance is shifted only. Labels are never normalised (linear-learner leaves
  classification labels as they are);
- `positive_example_weight_mult` (a number or `balanced`);
- `init_method` uniform (`init_scale`) or normal (`init_sigma`), `init_bias`;
- `lr_scheduler_step` / `lr_scheduler_factor` / `lr_scheduler_minimum_lr` when given;
- `binary_classifier_model_selection_criteria` (`accuracy`, `f_beta` with `f_beta`,
  `precision_at_target_recall` with `target_recall`, `recall_at_target_precision` with
  `target_precision`): the criterion is measured on the validation channel after every
  epoch, the epoch with the best value is kept, and the decision threshold is the one
  that criterion picks on the validation channel (the training channel when validation
  is empty);
- `early_stopping_patience` / `early_stopping_tolerance`: training stops when the
  criterion has not improved by more than the relative tolerance for that many epochs.

Not reproduced
- `num_models` (linear-learner trains up to 32 models in parallel with varied
  regularisation and learning rates and keeps the best; SageMaker turns this off inside
  a tuning job anyway, where it is 1) and `num_calibration_samples`: accepted, recorded,
  no effect; one model is trained;
- the automatic learning-rate schedule behind `use_lr_scheduler=auto` and the `auto`
  values linear-learner derives from the data: here `auto` means a fixed default
  (learning_rate 0.001 for adam/rmsprop, 0.01 for sgd; l1 = wd = momentum = 0);
- losses other than logistic, regressors and multiclass classifiers, sparse input,
  the `loss_function` selection criterion: rejected with a clear error;
- numerical identity with SageMaker's MXNet implementation (the algorithm is the same,
  the floating-point path is not).

Pure numpy, vectorised per mini-batch, deterministic for a given seed. The model
serialises to versioned JSON (no pickle). No Dagster or AWS imports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController  # installed with scikit-learn

MODEL_FORMAT = "ml-demo/linear-learner-model"
MODEL_FORMAT_VERSION = 1
ADAM_EPS = 1e-8
RMSPROP_DECAY, RMSPROP_EPS = 0.9, 1e-8

CRITERIA = ("accuracy", "f_beta", "precision_at_target_recall", "recall_at_target_precision", "loss_function")


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"hyperparameter {name}: expected true or false, got {value!r}")


def _number(
    kind: type,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    auto: Any = None,
    extra: tuple[str, ...] = (),
):
    """A parser for one numeric hyperparameter: range-checked, `auto` mapped to a default."""

    def parse(name: str, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("auto", *extra):
            word = value.strip().lower()
            if word == "auto":
                if auto is None:
                    raise ValueError(f"hyperparameter {name}: 'auto' is not supported here; give a value")
                return auto
            return word
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if kind is int:
                if number != int(number):
                    raise ValueError
                number = int(number)
        except (TypeError, ValueError):
            raise ValueError(
                f"hyperparameter {name}: expected {'an integer' if kind is int else 'a number'}, got {value!r}"
            ) from None
        if not math.isfinite(number):
            raise ValueError(f"hyperparameter {name}: expected a finite number, got {value!r}")
        if low is not None and (number < low or (low_open and number == low)):
            raise ValueError(f"hyperparameter {name}: must be {'>' if low_open else '>='} {low}, got {value!r}")
        if high is not None and (number > high or (high_open and number == high)):
            raise ValueError(f"hyperparameter {name}: must be {'<' if high_open else '<='} {high}, got {value!r}")
        return number

    return parse


def _choice(*allowed: str):
    def parse(name: str, value: Any) -> str:
        text = str(value).strip()
        if text not in allowed:
            raise ValueError(f"hyperparameter {name}: expected one of {', '.join(allowed)}, got {value!r}")
        return text

    return parse


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return True
    return _parse_bool(name, value)


# name -> (parser, default). Defaults are linear-learner's, with `auto` resolved as documented above.
_HONOURED: dict[str, tuple[Any, Any]] = {
    "predictor_type": (_choice("binary_classifier"), "binary_classifier"),
    "feature_dim": (_number(int, 1, auto="auto"), "auto"),
    "binary_classifier_model_selection_criteria": (_choice(*CRITERIA), "accuracy"),
    "target_recall": (_number(float, 0, 1, low_open=True), 0.8),
    "target_precision": (_number(float, 0, 1, low_open=True), 0.8),
    "f_beta": (_number(float, 0, low_open=True), 1.0),
    "epochs": (_number(int, 1), 15),
    "mini_batch_size": (_number(int, 1), 1000),
    "optimizer": (_choice("auto", "adam", "sgd", "rmsprop"), "auto"),
    "learning_rate": (_number(float, 0, low_open=True, auto="auto"), "auto"),
    "beta_1": (_number(float, 0, 1, high_open=True, auto=0.9), 0.9),
    "beta_2": (_number(float, 0, 1, high_open=True, auto=0.999), 0.999),
    "momentum": (_number(float, 0, 1, high_open=True, auto=0.0), 0.0),
    "l1": (_number(float, 0, auto=0.0), 0.0),
    "wd": (_number(float, 0, auto=0.0), 0.0),
    "bias_lr_mult": (_number(float, 0, low_open=True, auto=1.0), 1.0),
    "bias_wd_mult": (_number(float, 0, auto=0.0), 0.0),
    "use_bias": (_flag, True),
    "normalize_data": (_flag, True),
    "normalize_label": (_flag, False),  # no effect for classifiers, as in linear-learner
    "num_point_for_scaler": (_number(int, 1), 10_000),
    "positive_example_weight_mult": (_number(float, 0, low_open=True, auto=1.0, extra=("balanced",)), 1.0),
    "init_method": (_choice("auto", "uniform", "normal"), "uniform"),
    "init_scale": (_number(float, 0, auto=0.07), 0.07),
    "init_sigma": (_number(float, 0, auto=0.01), 0.01),
    "init_bias": (_number(float, auto=0.0), 0.0),
    "early_stopping_patience": (_number(int, 1), 3),
    "early_stopping_tolerance": (_number(float, 0), 0.001),
    "use_lr_scheduler": (_flag, True),
    "lr_scheduler_step": (_number(int, 1, auto="auto"), "auto"),
    "lr_scheduler_factor": (_number(float, 0, 1, low_open=True, auto="auto"), "auto"),
    "lr_scheduler_minimum_lr": (_number(float, 0, auto=0.0), 0.0),
    "loss": (_choice("auto", "logistic"), "auto"),
}
# Accepted so a SageMaker hyperparameter dict works unchanged, recorded, but without effect here.
NOT_REPRODUCED = ("num_models", "num_calibration_samples", "accuracy_top_k", "balance_multiclass_weights",
                  "num_classes", "huber_delta", "margin", "quantile", "loss_insensitivity", "unbias_data",
                  "unbias_label")  # fmt: skip


def resolve_hyperparameters(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """Every honoured hyperparameter with its effective typed value; ValueError names a bad one."""
    unknown = sorted(set(hyperparameters) - set(_HONOURED) - set(NOT_REPRODUCED))
    if unknown:
        raise ValueError(f"unknown linear-learner hyperparameter {unknown[0]!r}")
    resolved = {}
    for name, (parse, default) in _HONOURED.items():
        resolved[name] = parse(name, hyperparameters[name]) if name in hyperparameters else default
    if resolved["optimizer"] == "auto":
        resolved["optimizer"] = "adam"
    if resolved["init_method"] == "auto":
        resolved["init_method"] = "uniform"
    if resolved["learning_rate"] == "auto":
        resolved["learning_rate"] = 0.01 if resolved["optimizer"] == "sgd" else 0.001
    return resolved


def _typed(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters as given, with numbers and booleans in JSON-friendly types."""
    out = {}
    for name, value in sorted(hyperparameters.items()):
        if isinstance(value, np.generic):
            value = value.item()
        out[name] = value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
    return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _log_loss(y: np.ndarray, z: np.ndarray, weight: np.ndarray) -> float:
    # log(1 + exp(-z)) for y=1 and log(1 + exp(z)) for y=0, without overflow.
    signed = np.where(y == 1, -z, z)
    return float(np.sum(weight * np.logaddexp(0.0, signed)) / max(len(y), 1))


def threshold_for(criterion: str, y: np.ndarray, scores: np.ndarray, hp: dict[str, Any]) -> tuple[float, float]:
    """(criterion value, threshold) that the selection criterion picks on these labels and scores."""
    # Imported here: metrics pulls in scikit-learn (seconds to import), and scoring a
    # model (the endpoint) needs none of it.
    from ml_demo_dagster.core import metrics

    y = np.asarray(y).astype(np.int8, copy=False)
    scores = np.asarray(scores, dtype=np.float64)
    if criterion == "loss_function":  # higher is better everywhere here, so the negated loss
        return -metrics.log_loss(y, scores), 0.5
    if criterion == "precision_at_target_recall":
        precision, threshold, _ = metrics.precision_at_recall(y, scores, hp["target_recall"])
        return precision, threshold
    nothing = float(np.nextafter(max(float(scores.max()) if scores.size else 1.0, 1.0), np.inf))
    n, positives = len(y), int(y.sum())
    if n == 0:
        return 0.0, nothing
    # Candidate thresholds: each distinct score, descending; tp/fp = counts at or above it.
    order = np.argsort(-scores, kind="stable")
    s, ys = scores[order], y[order]
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    tp = np.cumsum(ys)[last].astype(np.float64)
    fp = (last + 1) - tp
    thresholds = s[last]
    precision = tp / (tp + fp)
    recall = tp / positives if positives else np.zeros_like(tp)
    if criterion == "accuracy":
        accuracy = (tp + (n - positives - fp)) / n
        best = int(np.argmax(accuracy))
        none_accuracy = (n - positives) / n
        if none_accuracy >= accuracy[best]:
            return float(none_accuracy), nothing
        return float(accuracy[best]), float(thresholds[best])
    if positives == 0:
        return 0.0, nothing
    if criterion == "f_beta":
        b2 = hp["f_beta"] ** 2
        denom = b2 * precision + recall
        f = np.where(denom > 0, (1 + b2) * precision * recall / np.where(denom > 0, denom, 1), 0.0)
        best = int(np.argmax(f))
        return float(f[best]), float(thresholds[best])
    if criterion == "recall_at_target_precision":
        eligible = np.flatnonzero(precision >= hp["target_precision"])
        if len(eligible) == 0:  # the target is out of reach: the most precise threshold
            best = int(np.argmax(precision))
            return 0.0, float(thresholds[best])
        best = int(eligible[np.argmax(recall[eligible])])
        return float(recall[best]), float(thresholds[best])
    raise ValueError(f"unknown selection criterion {criterion!r}")


@dataclass
class LinearLearnerModel:
    """A trained binary linear-learner: scores = sigmoid(((X - mean) / scale) @ weights + bias)."""

    weights: np.ndarray  # float64 [d], in the normalised feature space
    bias: float
    mean: np.ndarray | None  # float64 [d] or None when normalize_data was off
    scale: np.ndarray | None
    threshold: float
    hyperparameters: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_dim(self) -> int:
        return int(self.weights.shape[0])

    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.feature_dim:
            raise ValueError(f"expected rows of {self.feature_dim} features, got shape {X.shape}")
        return X

    def logits(self, X: np.ndarray) -> np.ndarray:
        """w·x + b for each row, before the sigmoid."""
        X = self._check(X).astype(np.float64, copy=self.mean is not None)
        if self.mean is not None:
            X -= self.mean
            X /= self.scale
        return X @ self.weights + self.bias

    def scores(self, X: np.ndarray) -> np.ndarray:
        """Probability of profit per row (float64)."""
        return _sigmoid(self.logits(X))

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, predicted labels int8) with the model's threshold."""
        s = self.scores(X)
        return s, (s >= self.threshold).astype(np.int8)

    def to_bytes(self) -> bytes:
        """Versioned JSON; floats round-trip exactly."""
        doc = {
            "format": MODEL_FORMAT,
            "version": MODEL_FORMAT_VERSION,
            "feature_dim": self.feature_dim,
            "weights": self.weights.tolist(),
            "bias": float(self.bias),
            "mean": None if self.mean is None else self.mean.tolist(),
            "scale": None if self.scale is None else self.scale.tolist(),
            "threshold": float(self.threshold),
            "hyperparameters": self.hyperparameters,
            "info": self.info,
        }
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> LinearLearnerModel:
        """Inverse of to_bytes; ValueError for anything that is not a model of a known version."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"not a linear-learner model (not JSON: {e})") from None
        if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
            raise ValueError(f"not a linear-learner model (format is not {MODEL_FORMAT!r})")
        if doc.get("version") != MODEL_FORMAT_VERSION:
            raise ValueError(
                f"model format version {doc.get('version')!r} is not supported "
                f"(this build reads version {MODEL_FORMAT_VERSION})"
            )
        try:
            weights = np.asarray(doc["weights"], dtype=np.float64)
            d = int(doc["feature_dim"])
            mean = None if doc["mean"] is None else np.asarray(doc["mean"], dtype=np.float64)
            scale = None if doc["scale"] is None else np.asarray(doc["scale"], dtype=np.float64)
            model = cls(
                weights=weights,
                bias=float(doc["bias"]),
                mean=mean,
                scale=scale,
                threshold=float(doc["threshold"]),
                hyperparameters=dict(doc["hyperparameters"]),
                info=dict(doc.get("info") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"linear-learner model is incomplete or malformed: {e!r}") from None
        if (
            weights.shape != (d,)
            or (mean is not None and mean.shape != (d,))
            or (scale is not None and scale.shape != (d,))
            or ((mean is None) != (scale is None))
        ):
            raise ValueError(f"linear-learner model arrays do not match feature_dim {d}")
        return model


def _normaliser(X: np.ndarray, sample: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rows = X if len(X) <= sample else X[np.sort(rng.choice(len(X), size=sample, replace=False))]
    mean = rows.mean(axis=0, dtype=np.float64)
    std = rows.std(axis=0, dtype=np.float64)
    # A constant column is shifted only; dividing by ~0 would blow up the rows that differ.
    scale = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return mean, scale


def _as_xy(X: Any, y: Any, what: str, d: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y).astype(np.int8, copy=False).ravel()
    if X.ndim != 2:
        raise ValueError(f"{what} features must be a 2-d array, got shape {X.shape}")
    if len(X) != len(y):
        raise ValueError(f"{what}: {len(X)} feature rows but {len(y)} labels")
    if d is not None and X.shape[1] != d:
        raise ValueError(f"{what}: rows have {X.shape[1]} features, expected {d}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{what}: labels must be 0 or 1")
    if not np.isfinite(X).all():
        raise ValueError(f"{what}: features contain {int((~np.isfinite(X)).sum())} NaN or infinite values")
    return X, y


_controller: ThreadpoolController | None = None


def train(
    train_X: Any,
    train_y: Any,
    val_X: Any,
    val_y: Any,
    hyperparameters: dict[str, Any],
    seed: int = 0,
    on_epoch: Callable[[int, LinearLearnerModel], None] | None = None,
) -> LinearLearnerModel:
    """Train a binary linear-learner on the train channel; pick epoch and threshold on validation.

    `on_epoch(epoch, model)`, when given, sees the model as it stands after each epoch
    (threshold not yet chosen): for experiments that study epoch selection."""
    global _controller
    _controller = _controller or ThreadpoolController()
    # Mini-batch products are small: a multi-threaded BLAS spends far more time waking its
    # threads than computing (measured 30x slower on 2 cores), and trials run in parallel.
    with _controller.limit(limits=1, user_api="blas"):
        return _train(train_X, train_y, val_X, val_y, hyperparameters, seed, on_epoch)


def _train(
    train_X: Any,
    train_y: Any,
    val_X: Any,
    val_y: Any,
    hyperparameters: dict[str, Any],
    seed: int,
    on_epoch: Callable[[int, LinearLearnerModel], None] | None,
) -> LinearLearnerModel:
    hp = resolve_hyperparameters(hyperparameters)
    X, y = _as_xy(train_X, train_y, "train")
    n, d = X.shape
    if hp["feature_dim"] != "auto" and hp["feature_dim"] != d:
        raise ValueError(f"train: rows have {d} features but feature_dim is {hp['feature_dim']}")
    Xv, yv = _as_xy(val_X, val_y, "validation", d)
    if n == 0:
        raise ValueError("train: the training channel is empty")
    rng = np.random.default_rng(seed)

    if hp["normalize_data"]:
        mean, scale = _normaliser(X, hp["num_point_for_scaler"], rng)
        Xn = ((X - mean) / scale).astype(np.float32)
        Xvn = ((Xv - mean) / scale).astype(np.float32)
    else:
        mean = scale = None
        Xn, Xvn = X, Xv

    positives = int(y.sum())
    pos_mult = hp["positive_example_weight_mult"]
    if pos_mult == "balanced":
        pos_mult = (n - positives) / positives if positives else 1.0
    sample_weight = np.where(y == 1, pos_mult, 1.0).astype(np.float32)

    if hp["init_method"] == "normal":
        w = rng.normal(0.0, hp["init_sigma"], size=d)
    else:
        w = rng.uniform(-hp["init_scale"], hp["init_scale"], size=d)
    b = float(hp["init_bias"]) if hp["use_bias"] else 0.0

    optimizer, lr0 = hp["optimizer"], hp["learning_rate"]
    beta1, beta2, momentum = hp["beta_1"], hp["beta_2"], hp["momentum"]
    l1, wd = hp["l1"], hp["wd"]
    bias_lr_mult, bias_wd = hp["bias_lr_mult"], hp["wd"] * hp["bias_wd_mult"]
    schedule = hp["lr_scheduler_step"] != "auto" and hp["lr_scheduler_factor"] != "auto"
    m_w, v_w, m_b, v_b = np.zeros(d), np.zeros(d), 0.0, 0.0
    batch = min(hp["mini_batch_size"], n)
    criterion = hp["binary_classifier_model_selection_criteria"]
    use_val = len(yv) > 0
    patience, tolerance = hp["early_stopping_patience"], hp["early_stopping_tolerance"]

    best = None  # (value, epoch, w, b)
    history: list[float] = []
    since_best = 0
    step = 0
    epochs_run = 0
    for epoch in range(1, hp["epochs"] + 1):
        epochs_run = epoch
        order = rng.permutation(n)
        # One gather per epoch into a contiguous copy: each mini-batch is then a slice (a view),
        # not a scattered gather of rows (measured: the per-step gather was most of a step).
        Xe, ye, swe = Xn[order], y[order], sample_weight[order]
        epoch_loss = 0.0
        for start in range(0, n, batch):
            xb, yb, sw = Xe[start : start + batch], ye[start : start + batch], swe[start : start + batch]
            z = (xb @ w.astype(np.float32) + np.float32(b)).astype(np.float64)
            p = _sigmoid(z)
            if not use_val:  # the training loss is the criterion only without a validation channel
                epoch_loss += _log_loss(yb, z, sw) * len(yb)
            r = (sw * (p - yb)).astype(np.float32) / np.float32(len(yb))
            g_w = (xb.T @ r).astype(np.float64) + wd * w
            g_b = float(r.sum(dtype=np.float64)) + bias_wd * b
            step += 1
            lr = lr0
            if schedule:
                lr = max(
                    lr0 * hp["lr_scheduler_factor"] ** (step // hp["lr_scheduler_step"]), hp["lr_scheduler_minimum_lr"]
                )
            lr_b = lr * bias_lr_mult
            # `step_w` is the optimiser's per-coordinate step size; the l1 proximal step
            # shrinks by l1 times that same step (preconditioned proximal gradient).
            if optimizer == "adam":
                m_w = beta1 * m_w + (1 - beta1) * g_w
                v_w = beta2 * v_w + (1 - beta2) * g_w * g_w
                m_b = beta1 * m_b + (1 - beta1) * g_b
                v_b = beta2 * v_b + (1 - beta2) * g_b * g_b
                correction = math.sqrt(1 - beta2**step) / (1 - beta1**step)
                step_w = lr * correction / (np.sqrt(v_w) + ADAM_EPS)
                w = w - step_w * m_w
                b = b - lr_b * correction * m_b / (math.sqrt(v_b) + ADAM_EPS)
            elif optimizer == "rmsprop":
                v_w = RMSPROP_DECAY * v_w + (1 - RMSPROP_DECAY) * g_w * g_w
                v_b = RMSPROP_DECAY * v_b + (1 - RMSPROP_DECAY) * g_b * g_b
                step_w = lr / (np.sqrt(v_w) + RMSPROP_EPS)
                w = w - step_w * g_w
                b = b - lr_b * g_b / (math.sqrt(v_b) + RMSPROP_EPS)
            else:  # sgd with momentum
                m_w = momentum * m_w - lr * g_w
                m_b = momentum * m_b - lr_b * g_b
                step_w = lr
                w = w + m_w
                b = b + m_b
            if not hp["use_bias"]:
                b = 0.0
            if l1 > 0:
                w = np.sign(w) * np.maximum(np.abs(w) - step_w * l1, 0.0)
        if not (np.isfinite(w).all() and math.isfinite(b)):
            raise FloatingPointError(
                f"training diverged in epoch {epoch} (learning_rate {lr0}); try a smaller learning_rate"
            )
        if use_val:
            value, _ = threshold_for(criterion, yv, _sigmoid(Xvn @ w + b), hp)
        else:  # no validation channel: linear-learner watches the training loss
            value = -epoch_loss / n
        history.append(float(value))
        if on_epoch is not None:
            on_epoch(epoch, LinearLearnerModel(np.asarray(w, dtype=np.float64), float(b), mean, scale, 0.5, {}))
        if best is None or value > best[0] + tolerance * abs(best[0]):
            best = (value, epoch, w.copy(), b)
            since_best = 0
        else:
            since_best += 1
            if since_best >= patience:
                break

    _, best_epoch, w, b = best
    model = LinearLearnerModel(
        weights=np.asarray(w, dtype=np.float64),
        bias=float(b),
        mean=mean,
        scale=scale,
        threshold=0.5,
        hyperparameters=_typed(hyperparameters),
    )
    # The threshold is chosen on the scores the finished model gives, so that evaluating it
    # later on the same rows reproduces the criterion value exactly.
    if use_val:
        value, model.threshold = threshold_for(criterion, yv, model.scores(Xv), hp)
    else:
        value, model.threshold = threshold_for(criterion, y, model.scores(X), hp)
    model.info = {
        "seed": int(seed),
        "train_rows": int(n),
        "validation_rows": int(len(yv)),
        "epochs_run": int(epochs_run),
        "best_epoch": int(best_epoch),
        "stopped_early": bool(epochs_run < hp["epochs"]),
        "criterion": criterion,
        "criterion_value": float(value),
        "criterion_channel": "validation" if use_val else "train",
        "criterion_history": history,
        "effective_hyperparameters": hp,
        "ignored_hyperparameters": sorted(set(hyperparameters) & set(NOT_REPRODUCED)),
    }
    return model
