"""The files of a SageMaker batch transform of linear-learner: rows in, scores out.

Rows go in as headerless CSV, features only, one row per line (what linear-learner's
`text/csv` inference reads); the job writes `<input name>.out`, one JSON line per row
(`application/jsonlines`: {"score", "predicted_label"}), in the input's order. Used by the
aws target's scorer (aws/scoring.py) and by the state machine's steps job, so it imports
nothing of the project's config: numpy and pyarrow only.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv


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
