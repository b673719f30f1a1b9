"""The sandbox's linear-learner "container": training jobs and the model artifact format.

A SageMaker training job of the built-in linear-learner reads its channels (here CSV, label
first, as `text/csv`), trains with the job's hyperparameters (strings, as SageMaker passes
them) and writes `model.tar.gz`. The sandbox trains with the local trainer
(core/linear_learner.py), which honours linear-learner's hyperparameter names and
meaning, and reports the final metrics linear-learner emits for a binary classifier on the
validation channel (`validation:objective_loss`, `validation:roc_auc_score`,
`validation:precision`, `validation:recall`).

The artifact is a tar.gz holding `model.json` (the local trainer's format). Only the
sandbox reads it back (its transform jobs and endpoints): the aws target never opens an
artifact, it scores through SageMaker.

`train_job` runs in worker processes; `init_worker` gives each worker the channels once.
"""

from __future__ import annotations

import io
import math
import tarfile
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ARTIFACT_MEMBER = "model.json"


class ChannelError(ValueError):
    """A channel the algorithm cannot read (SageMaker reports these as ClientError)."""


def read_channel(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(X float32, y int8) from label-first, headerless CSV."""
    if not data.strip():
        raise ChannelError(f"channel {name} is empty")
    try:
        table = pacsv.read_csv(pa.BufferReader(data), read_options=pacsv.ReadOptions(autogenerate_column_names=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ChannelError(f"channel {name}: not CSV of numbers: {str(e).splitlines()[0]}") from None
    columns = []
    for column in table.columns:
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise ChannelError(f"channel {name}: column of {column.type}, expected numbers")
        columns.append(column.to_numpy().astype(np.float64))
    if len(columns) < 2:
        raise ChannelError(f"channel {name}: expected the label and at least one feature per row")
    y = columns[0]
    if not np.isin(y, (0.0, 1.0)).all():
        raise ChannelError(f"channel {name}: labels must be 0 or 1 for a binary classifier")
    return np.column_stack(columns[1:]).astype(np.float32), y.astype(np.int8)


def binary_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """The final metrics linear-learner reports for a binary classifier on a channel."""
    from ml_demo_dagster.core import metrics

    p = np.clip(scores, 1e-15, 1 - 1e-15)
    loss = float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p)))) if len(y) else 0.0
    precision, recall = metrics.precision_recall_at(y, scores, threshold)
    auc = metrics.roc_auc(y, scores) if 0 < int(y.sum()) < len(y) else math.nan
    return {"objective_loss": loss, "roc_auc_score": auc, "precision": precision, "recall": recall}


def pack_artifact(model_bytes: bytes) -> bytes:
    """model.tar.gz with the model (fixed timestamps: the same model gives the same bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(ARTIFACT_MEMBER)
        info.size, info.mtime, info.mode = len(model_bytes), 0, 0o644
        tar.addfile(info, io.BytesIO(model_bytes))
    return buffer.getvalue()


def unpack_artifact(data: bytes):
    """The model in a model.tar.gz written by pack_artifact; ValueError for anything else."""
    from ml_demo_dagster.core.linear_learner import LinearLearnerModel

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            member = tar.extractfile(ARTIFACT_MEMBER)
            if member is None:
                raise ValueError(f"no {ARTIFACT_MEMBER} in the artifact")
            return LinearLearnerModel.from_bytes(member.read())
    except (tarfile.TarError, KeyError, OSError) as e:
        raise ValueError(f"not a model artifact of this sandbox ({e})") from None


_CHANNELS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def init_worker(channels: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    _CHANNELS.clear()
    _CHANNELS.update(channels)


def train_job(hyperparameters: dict[str, str], seed: int) -> dict[str, Any]:
    """One training job on the worker's channels: the artifact and the final validation metrics.

    Raises ValueError (a bad hyperparameter or channel) or FloatingPointError (divergence):
    the job's AlgorithmError."""
    from ml_demo_dagster.core.linear_learner import train

    started = time.time()
    X, y = _CHANNELS["train"]
    Xv, yv = _CHANNELS["validation"]
    model = train(X, y, Xv, yv, hyperparameters, seed)
    scores = model.scores(Xv)
    metrics = {f"validation:{k}": v for k, v in binary_metrics(yv, scores, model.threshold).items()}
    train_scores = model.scores(X)
    metrics.update({f"train:{k}": v for k, v in binary_metrics(y, train_scores, model.threshold).items()
                    if k == "objective_loss"})  # fmt: skip
    return {"artifact": pack_artifact(model.to_bytes()), "metrics": metrics, "seconds": time.time() - started}
