"""Synthetic per-batch feature tables (the feature job's output schema) for the training tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

T0 = 1_700_000_000_000


def feature_table(
    batch: str,
    timestamp: np.ndarray,
    label: np.ndarray,
    duration_ms: np.ndarray,
    features: np.ndarray,
    duration_known: np.ndarray | None = None,
) -> pa.Table:
    """A table with the columns and types glue/ writes for one batch."""
    n = len(timestamp)
    features = np.asarray(features, dtype=np.float32)
    known = np.ones(n, dtype=bool) if duration_known is None else np.asarray(duration_known, dtype=bool)
    return pa.table({
        "batch": pa.array([batch] * n, type=pa.string()),
        "timestamp": pa.array(np.asarray(timestamp, dtype=np.int64), type=pa.int64()),
        "label": pa.array(np.asarray(label, dtype=np.int8), type=pa.int8()),
        "duration_ms": pa.array(np.asarray(duration_ms, dtype=np.int64), type=pa.int64()),
        "duration_known": pa.array(known, type=pa.bool_()),
        "features": pa.array(list(features), type=pa.list_(pa.float32())) if n else pa.array([], pa.list_(pa.float32())),
    })  # fmt: skip


def random_table(
    batch: str, n: int, d: int, seed: int, start: int = T0, max_duration: int = 60_000, signal: float = 0.0
) -> pa.Table:
    """n deals about a second apart, random durations; label depends on feature 0 when signal > 0."""
    rng = np.random.default_rng(seed)
    timestamp = start + np.cumsum(rng.integers(200, 1800, n))
    X = rng.normal(size=(n, d)).astype(np.float32)
    logit = signal * X[:, 0]
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    duration = rng.integers(1, max_duration + 1, n)
    return feature_table(batch, timestamp, label, duration, X)
