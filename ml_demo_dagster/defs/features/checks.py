"""Checks on a batch's features: width, NaN, and the label balance (reported). What each
computes is in core/checks.py (the Step Functions steps job enforces the same checks)."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pyarrow as pa

from glue.contract import features_matrix
from ml_demo_dagster.core import checks as core
from ml_demo_dagster.defs.ingest.checks import result

BATCH_FEATURES = dg.AssetKey("batch_features")

FEATURE_CHECKS = [
    dg.AssetCheckSpec("features_have_no_nan", asset=BATCH_FEATURES, blocking=True,
                      description="No NaN or infinity in any feature or label."),
    dg.AssetCheckSpec("feature_width_is_605", asset=BATCH_FEATURES, blocking=True,
                      description="Every row has 5 tick + 600 history values (config.feature_dim)."),
    dg.AssetCheckSpec("label_balance_is_reported", asset=BATCH_FEATURES,
                      description="Share of profitable deals; warns when one class is under 5%."),
]  # fmt: skip


def feature_matrix(table: pa.Table) -> np.ndarray:
    """The `features` column as a 2-D float32 array (rows x width)."""
    return features_matrix(table.column("features"))


def features_have_no_nan(X: np.ndarray, labels: np.ndarray) -> dg.AssetCheckResult:
    return result(core.features_have_no_nan(X, labels), BATCH_FEATURES)


def feature_width_is_605(X: np.ndarray, expected: int) -> dg.AssetCheckResult:
    return result(core.feature_width_is_605(X, expected), BATCH_FEATURES)


def label_balance_is_reported(labels: np.ndarray) -> dg.AssetCheckResult:
    return result(core.label_balance_is_reported(labels), BATCH_FEATURES)
