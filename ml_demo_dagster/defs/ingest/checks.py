"""Checks on the raw batch data, named for the property they assert.

They run inside the raw assets' materialization (the data is in hand there), and are
declared as check specs so the UI shows them beside the asset. Blocking checks stop bad
data from flowing on to features and training.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pyarrow as pa

RAW_TICKS = dg.AssetKey("raw_ticks")
RAW_DEALS = dg.AssetKey("raw_deals")

TICK_CHECKS = [
    dg.AssetCheckSpec("ticks_are_ordered", asset=RAW_TICKS, blocking=True,
                      description="Tick timestamps never go backwards within the price file."),
    dg.AssetCheckSpec("spread_is_positive", asset=RAW_TICKS, blocking=True,
                      description="OFFER > BID on every tick."),
]  # fmt: skip
DEAL_CHECKS = [
    dg.AssetCheckSpec("deals_have_ticks", asset=RAW_DEALS,
                      description="Every deal opened on a tick that is in the batch's price file."),
    dg.AssetCheckSpec("deal_levels_match_stop_and_limit", asset=RAW_DEALS,
                      description="stop_price = price - stop*point_value and limit_price = price + limit*point_value."),
]  # fmt: skip


def ticks_are_ordered(ticks: pa.Table) -> dg.AssetCheckResult:
    ts = ticks.column("timestamp").to_numpy()
    back = np.flatnonzero(np.diff(ts) < 0)
    meta = {"rows": len(ts), "backward_steps": int(len(back))}
    if len(back):
        meta["first_backward_line"] = int(back[0]) + 2
    return dg.AssetCheckResult(check_name="ticks_are_ordered", asset_key=RAW_TICKS, passed=not len(back), metadata=meta)


def spread_is_positive(ticks: pa.Table) -> dg.AssetCheckResult:
    spread = ticks.column("OFFER").to_numpy() - ticks.column("BID").to_numpy()
    bad = np.flatnonzero(~(spread > 0))
    meta = {"min_spread": float(spread.min()), "max_spread": float(spread.max()), "bad_rows": int(len(bad))}
    if len(bad):
        meta["first_bad_line"] = int(bad[0]) + 1
    return dg.AssetCheckResult(check_name="spread_is_positive", asset_key=RAW_TICKS, passed=not len(bad), metadata=meta)


def deals_have_ticks(deals: pa.Table, ticks: pa.Table) -> dg.AssetCheckResult:
    known = np.isin(deals.column("timestamp").to_numpy(), ticks.column("timestamp").to_numpy())
    missing = int((~known).sum())
    return dg.AssetCheckResult(
        check_name="deals_have_ticks", asset_key=RAW_DEALS, passed=missing == 0,
        severity=dg.AssetCheckSeverity.WARN, metadata={"deals_without_tick": missing, "deals": len(known)},
    )  # fmt: skip


def deal_levels_match_stop_and_limit(deals: pa.Table, point_value: float) -> dg.AssetCheckResult:
    price = deals.column("price").to_numpy()
    stop_off = np.abs(price - deals.column("stop").to_numpy() * point_value - deals.column("stop_price").to_numpy())
    limit_off = np.abs(price + deals.column("limit").to_numpy() * point_value - deals.column("limit_price").to_numpy())
    bad = int(((stop_off > 1e-6 * price) | (limit_off > 1e-6 * price)).sum())
    return dg.AssetCheckResult(
        check_name="deal_levels_match_stop_and_limit", asset_key=RAW_DEALS, passed=bad == 0,
        severity=dg.AssetCheckSeverity.WARN, metadata={"deals_off": bad, "point_value": point_value},
    )  # fmt: skip
