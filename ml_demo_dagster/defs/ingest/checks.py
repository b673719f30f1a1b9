"""Checks on the raw batch data, named for the property they assert.

They run inside the raw assets' materialization (the data is in hand there), and are
declared as check specs so the UI shows them beside the asset. Blocking checks stop bad
data from flowing on to features and training. What each computes is in core/checks.py
(the Step Functions steps job enforces the same checks).
"""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

from ml_demo_dagster.core import checks as core

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


def result(check: core.Check, asset: dg.AssetKey) -> dg.AssetCheckResult:
    """A core check as Dagster's check result (non-blocking ones warn)."""
    return dg.AssetCheckResult(
        check_name=check.name, asset_key=asset, passed=check.passed, metadata=check.metadata,
        **({} if check.blocking else {"severity": dg.AssetCheckSeverity.WARN}),
    )  # fmt: skip


def ticks_are_ordered(ticks: pa.Table) -> dg.AssetCheckResult:
    return result(core.ticks_are_ordered(ticks), RAW_TICKS)


def spread_is_positive(ticks: pa.Table) -> dg.AssetCheckResult:
    return result(core.spread_is_positive(ticks), RAW_TICKS)


def deals_have_ticks(deals: pa.Table, ticks: pa.Table) -> dg.AssetCheckResult:
    return result(core.deals_have_ticks(deals, ticks), RAW_DEALS)


def deal_levels_match_stop_and_limit(deals: pa.Table, point_value: float) -> dg.AssetCheckResult:
    return result(core.deal_levels_match_stop_and_limit(deals, point_value), RAW_DEALS)
