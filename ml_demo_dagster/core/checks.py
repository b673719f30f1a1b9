"""Data checks on a batch, as plain results: what the Dagster asset checks report and what
the Step Functions steps job enforces, computed once here.

Each check is named for the property it asserts; `blocking` ones stop the batch (Dagster:
blocking check specs; the steps job: the step fails), the others are reported. No Dagster
or AWS imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Check:
    """One check's outcome: its name, whether it passed, whether a failure stops the batch, numbers."""

    name: str
    passed: bool
    blocking: bool
    metadata: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.name} {'passed' if self.passed else 'failed'} {self.metadata}"


def ticks_are_ordered(ticks: pa.Table) -> Check:
    """Tick timestamps never go backwards within the price file."""
    ts = ticks.column("timestamp").to_numpy()
    back = np.flatnonzero(np.diff(ts) < 0)
    meta: dict[str, Any] = {"rows": len(ts), "backward_steps": int(len(back))}
    if len(back):
        meta["first_backward_line"] = int(back[0]) + 2
    return Check("ticks_are_ordered", not len(back), True, meta)


def spread_is_positive(ticks: pa.Table) -> Check:
    """OFFER > BID on every tick."""
    spread = ticks.column("OFFER").to_numpy() - ticks.column("BID").to_numpy()
    bad = np.flatnonzero(~(spread > 0))
    meta: dict[str, Any] = {
        "min_spread": float(spread.min()),
        "max_spread": float(spread.max()),
        "bad_rows": int(len(bad)),
    }
    if len(bad):
        meta["first_bad_line"] = int(bad[0]) + 1
    return Check("spread_is_positive", not len(bad), True, meta)


def deals_have_ticks(deals: pa.Table, ticks: pa.Table) -> Check:
    """Every deal opened on a tick that is in the batch's price file (reported)."""
    known = np.isin(deals.column("timestamp").to_numpy(), ticks.column("timestamp").to_numpy())
    missing = int((~known).sum())
    return Check("deals_have_ticks", missing == 0, False, {"deals_without_tick": missing, "deals": len(known)})


def deal_levels_match_stop_and_limit(deals: pa.Table, point_value: float) -> Check:
    """stop_price = price - stop*point_value and limit_price = price + limit*point_value (reported)."""
    price = deals.column("price").to_numpy()
    stop_off = np.abs(price - deals.column("stop").to_numpy() * point_value - deals.column("stop_price").to_numpy())
    limit_off = np.abs(price + deals.column("limit").to_numpy() * point_value - deals.column("limit_price").to_numpy())
    bad = int(((stop_off > 1e-6 * price) | (limit_off > 1e-6 * price)).sum())
    return Check("deal_levels_match_stop_and_limit", bad == 0, False, {"deals_off": bad, "point_value": point_value})


def features_have_no_nan(X: np.ndarray, labels: np.ndarray) -> Check:
    """No NaN or infinity in any feature or label."""
    bad_rows = int((~np.isfinite(X)).any(axis=1).sum()) if X.size else 0
    bad_labels = int((~np.isin(labels, [0, 1])).sum())
    return Check("features_have_no_nan", bad_rows == 0 and bad_labels == 0, True,
                 {"rows_with_nan": bad_rows, "bad_labels": bad_labels})  # fmt: skip


def feature_width_is_605(X: np.ndarray, expected: int) -> Check:
    """Every row has 5 tick + history values (config.feature_dim)."""
    # features_matrix refuses ragged rows, so one width holds for every row.
    lo = hi = X.shape[1] if len(X) else expected
    return Check("feature_width_is_605", lo == hi == expected, True,
                 {"expected": expected, "min_width": lo, "max_width": hi})  # fmt: skip


def label_balance_is_reported(labels: np.ndarray) -> Check:
    """Share of profitable deals; fails (a warning) when one class is under 5%."""
    share = float(labels.mean()) if len(labels) else 0.0
    return Check("label_balance_is_reported", bool(len(labels)) and 0.05 <= share <= 0.95, False,
                 {"profit_share": round(share, 4), "rows": len(labels), "profits": int(labels.sum())})  # fmt: skip


def failed_blocking(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.blocking and not c.passed]
