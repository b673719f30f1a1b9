"""Scoring rows with a SageMaker model: one batch transform job over the rows.

The rows go to the store as CSV (features only, one row per line: what linear-learner's
`text/csv` inference reads), a transform job scores them with the named SageMaker model,
and its output (`<input>.out`, one JSON line per row, `application/jsonlines`) comes back
as scores and 0/1 predicted labels, in the rows' order. The model artifact is never
opened here: SageMaker's own container decides the scores, as it does when it serves.
Inputs and outputs are deleted once read. No Dagster imports.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ml_demo_dagster.aws import requests as rq
from ml_demo_dagster.aws.transform_io import ScoringError, parse_jsonlines, rows_csv  # noqa: F401 (re-exported)
from ml_demo_dagster.aws.waiting import Job, wait_for
from ml_demo_dagster.config import ProjectConfig
from ml_demo_dagster.core.layout import scoring_keys
from ml_demo_dagster.core.store import ObjectStore

TRANSFORM_DONE = ("Completed",)
TRANSFORM_FAILED = ("Failed", "Stopped")


def batch_transform(
    sagemaker, store: ObjectStore, config: ProjectConfig, model_name: str, X: np.ndarray, tag: str,
    log: Callable[[str], None],
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Score the rows of X with the SageMaker model `model_name`; (scores, labels) in row order."""
    if len(X) == 0:
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int8)
    name = rq.transform_job_name(config, tag, rq.run_token(8))
    input_key, output_key = scoring_keys(name)
    store.put_bytes(input_key, rows_csv(X))
    request = rq.transform_job(
        config, name, model_name, store.uri(input_key).rsplit("/", 1)[0] + "/", store.uri(output_key).rsplit("/", 1)[0]
    )
    try:
        wait_for(
            Job(
                what=f"transform job {name} ({len(X)} rows, model {model_name})",
                start=lambda: sagemaker.create_transform_job(**request),
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
