"""Scoring rows with a SageMaker model: one batch transform job over the rows.

The rows go to the store as CSV (features only, one row per line: what linear-learner's
`text/csv` inference reads), a transform job scores them with the named SageMaker model,
and its output (`<input>.out`, one JSON line per row, `application/jsonlines`) comes back
as scores and 0/1 predicted labels, in the rows' order. The model artifact is never
opened here: SageMaker's own container decides the scores, as it does when it serves.
Inputs and outputs are deleted once read. No Dagster imports.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ml_demo_dagster.aws import requests as rq
from ml_demo_dagster.aws.waiting import Job, wait_for
from ml_demo_dagster.config import ProjectConfig
from ml_demo_dagster.core.store import ObjectStore

SCORING_PREFIX = "scoring"
TRANSFORM_DONE = ("Completed",)
TRANSFORM_FAILED = ("Failed", "Stopped")


class ScoringError(RuntimeError):
    """The transform job's output does not match the rows sent."""


def rows_csv(X: np.ndarray) -> bytes:
    """Rows of features as headerless CSV, one row per line."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-d array of rows, got shape {X.shape}")
    table = pa.Table.from_arrays(
        [pa.array(X[:, j]) for j in range(X.shape[1])], names=[f"f{j}" for j in range(X.shape[1])]
    )
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return sink.getvalue()


def parse_jsonlines(data: bytes, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores float64, predicted labels int8) from linear-learner's jsonlines output."""
    lines = [line for line in data.decode("utf-8").splitlines() if line.strip()]
    if len(lines) != rows:
        raise ScoringError(f"the transform job returned {len(lines)} predictions for {rows} rows")
    scores = np.empty(rows, dtype=np.float64)
    labels = np.empty(rows, dtype=np.int8)
    for i, line in enumerate(lines):
        doc = json.loads(line)
        scores[i], labels[i] = float(doc["score"]), int(doc["predicted_label"])
    return scores, labels


def batch_transform(
    sagemaker, store: ObjectStore, config: ProjectConfig, model_name: str, X: np.ndarray, tag: str,
    log: Callable[[str], None],
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Score the rows of X with the SageMaker model `model_name`; (scores, labels) in row order."""
    if len(X) == 0:
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int8)
    name = config.aws_name("s", f"{tag}-{uuid.uuid4().hex[:8]}")
    folder = f"{SCORING_PREFIX}/{name}"
    input_key, output_key = f"{folder}/input/rows.csv", f"{folder}/output/rows.csv.out"
    store.put_bytes(input_key, rows_csv(X))
    try:
        sagemaker.create_transform_job(
            **rq.transform_job(
                config,
                name,
                model_name,
                store.uri(input_key).rsplit("/", 1)[0] + "/",
                store.uri(output_key).rsplit("/", 1)[0],
            )
        )
        wait_for(
            Job(
                what=f"transform job {name} ({len(X)} rows, model {model_name})",
                describe=lambda: sagemaker.describe_transform_job(TransformJobName=name),
                status=lambda d: d["TransformJobStatus"],
                succeeded=TRANSFORM_DONE,
                failed=TRANSFORM_FAILED,
                reason=lambda d: d.get("FailureReason"),
                stop=lambda: sagemaker.stop_transform_job(TransformJobName=name),
                timeout_key="aws.transform_timeout_minutes",
            ),
            timeout_seconds=config.aws.transform_timeout_minutes * 60,
            poll_seconds=config.aws.poll_interval_seconds,
            log=log,
        )
        return parse_jsonlines(store.get_bytes(output_key), len(X))
    finally:
        for key in (input_key, output_key):
            store.delete(key)
