"""Checks on a batch's features: width, NaN, and the label balance (reported)."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pyarrow as pa

from glue.contract import features_matrix

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
    bad_rows = int((~np.isfinite(X)).any(axis=1).sum()) if X.size else 0
    bad_labels = int((~np.isin(labels, [0, 1])).sum())
    return dg.AssetCheckResult(
        check_name="features_have_no_nan", asset_key=BATCH_FEATURES, passed=bad_rows == 0 and bad_labels == 0,
        metadata={"rows_with_nan": bad_rows, "bad_labels": bad_labels},
    )  # fmt: skip


def feature_width_is_605(X: np.ndarray, expected: int) -> dg.AssetCheckResult:
    # features_matrix refuses ragged rows, so one width holds for every row.
    lo = hi = X.shape[1] if len(X) else expected
    return dg.AssetCheckResult(
        check_name="feature_width_is_605", asset_key=BATCH_FEATURES, passed=lo == hi == expected,
        metadata={"expected": expected, "min_width": lo, "max_width": hi},
    )  # fmt: skip


def label_balance_is_reported(labels: np.ndarray) -> dg.AssetCheckResult:
    share = float(labels.mean()) if len(labels) else 0.0
    return dg.AssetCheckResult(
        check_name="label_balance_is_reported", asset_key=BATCH_FEATURES,
        passed=bool(len(labels)) and 0.05 <= share <= 0.95, severity=dg.AssetCheckSeverity.WARN,
        metadata={"profit_share": round(share, 4), "rows": len(labels), "profits": int(labels.sum())},
    )  # fmt: skip
