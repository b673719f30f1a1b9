"""An independent, deliberately plain implementation of DESIGN §4.2 and a batch generator.

The reference walks a dense per-second grid with Python loops and dicts; it shares no
code with glue/, so agreement between the two means something. The generator makes
batches with the awkward cases the definition must handle: seconds without ticks, several
ticks in one second, ticks with missing MID_OPEN/HIGH/LOW, deals without enough history,
and, for the kernel alone (`contract=False`), several price rows with the same timestamp and
a deal without a matching tick: the staging contract refuses both in files, so the batches
the job reads from files (`contract=True`, the default) have neither.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml_demo_dagster.core.staging import DEAL_COLUMNS, PRICE_COLUMNS, format_rows

TICK = ("BID", "OFFER", "MID_OPEN", "HIGH", "LOW")


@dataclass
class Batch:
    prices: list[dict]  # PRICE_COLUMNS keys, file order; None = missing
    deals: list[dict]  # DEAL_COLUMNS keys, file order


def generate_batch(
    seed: int, n_ticks: int = 400, spread: float = 2.0, stop: float = 5.0, limit: float = 5.0, contract: bool = True
) -> Batch:
    """A random-walk batch in the staging shape, with gaps, bursts and missing values; with
    contract=False also ties (rows on one timestamp) and a deal without a tick."""
    rng = np.random.default_rng(seed)
    t = 1_700_000_000_000 + int(rng.integers(0, 1000))
    mid = 30_000.0
    prices = []
    for _ in range(n_ticks):
        r = rng.random()
        if r < 0.08:
            t += int(rng.integers(2_000, 9_000))  # seconds without ticks
        elif r < 0.35:
            t += int(rng.integers(1, 300))  # several ticks in one second
        elif r < 0.40:
            t += 0 if not contract else 1  # the same millisecond as the previous row (kernel only)
        else:
            t += int(rng.integers(300, 1_600))
        mid = round(mid + float(rng.normal(0, 1.0)), 2)
        bid, offer = mid - spread / 2, mid + spread / 2
        missing = rng.random() < 0.04
        prices.append({
            "timestamp": t, "BID": bid, "OFFER": offer,
            "MID_OPEN": None if missing else round(mid - 3.1, 2),
            "CHANGE": 3.1, "CHANGE_PCT": 0.01,
            "HIGH": None if missing and rng.random() < 0.5 else round(mid + 7.3, 2),
            "LOW": round(mid - 9.7, 2),
            "UPDATE_TIME": "12:00:00", "MARKET_STATE": "TRADEABLE", "MARKET_DELAY": 0,
        })  # fmt: skip
    deals = []
    for i, p in enumerate(prices):
        if rng.random() < 0.3:
            continue
        stop_price, limit_price = p["OFFER"] - stop, p["OFFER"] + limit
        outcome = "loss"
        for q in prices[i + 1 :]:
            if q["OFFER"] <= stop_price:
                break
            if q["OFFER"] >= limit_price:
                outcome = "profit"
                break
        deals.append({
            "timestamp": p["timestamp"], "loss_or_profit": outcome, "type": "buy", "stop": stop,
            "limit": limit, "price": p["OFFER"], "stop_price": stop_price, "limit_price": limit_price,
        })  # fmt: skip
    if not contract:
        # One deal whose timestamp matches no price row.
        orphan = dict(deals[len(deals) // 2])
        orphan["timestamp"] += 1 if orphan["timestamp"] + 1 not in {p["timestamp"] for p in prices} else 3
        deals.append(orphan)
    return Batch(prices, deals)


def reference_features(batch: Batch, history_seconds: int) -> tuple[list[dict], dict[str, int]]:
    """Rows {timestamp, label, duration_ms, duration_known, features} and counts, by brute force."""
    H = history_seconds
    ordered = sorted(range(len(batch.prices)), key=lambda i: (batch.prices[i]["timestamp"], i))
    prices = [batch.prices[i] for i in ordered]
    mids_by_second: dict[int, list[float]] = defaultdict(list)
    for p in prices:
        mids_by_second[math.floor(p["timestamp"] / 1000)].append((p["BID"] + p["OFFER"]) / 2)
    mean = {sec: sum(v) / len(v) for sec, v in mids_by_second.items()}

    counts = {"deals": 0, "rows": 0, "no_history": 0, "no_tick": 0, "missing_tick_values": 0}
    rows = []
    for d in batch.deals:
        counts["deals"] += 1
        same = [i for i, p in enumerate(prices) if p["timestamp"] == d["timestamp"]]
        if not same:
            counts["no_tick"] += 1
            continue
        matching = [i for i in same if prices[i]["OFFER"] == d["price"]]
        at = matching[-1] if matching else same[-1]
        tick = prices[at]
        if any(tick[c] is None for c in TICK):
            counts["missing_tick_values"] += 1
            continue
        s = math.floor(d["timestamp"] / 1000)
        earlier = [sec for sec in mean if sec <= s - H]
        if not earlier:
            counts["no_history"] += 1
            continue
        last = mean[max(earlier)]
        history = []
        for sec in range(s - H, s):
            if sec in mean:
                last = mean[sec]
            history.append(last)
        deal_mid = (tick["BID"] + tick["OFFER"]) / 2
        features = [tick[c] - deal_mid for c in TICK] + [h - deal_mid for h in history]

        duration, known = prices[-1]["timestamp"] - d["timestamp"], False
        for q in prices[at + 1 :]:
            if q["OFFER"] <= d["stop_price"] or q["OFFER"] >= d["limit_price"]:
                duration, known = q["timestamp"] - d["timestamp"], True
                break
        counts["rows"] += 1
        rows.append({
            "timestamp": d["timestamp"], "label": int(d["loss_or_profit"] == "profit"),
            "duration_ms": duration, "duration_known": known, "features": features,
        })  # fmt: skip
    return rows, counts


def kernel_inputs(batch: Batch) -> dict:
    """The batch as the numpy arrays glue.feature_kernel.compute_features takes."""

    def col(rows: list[dict], name: str, dtype=np.float64) -> np.ndarray:
        return np.array([np.nan if r[name] is None else r[name] for r in rows], dtype=dtype)

    p, d = batch.prices, batch.deals
    return {
        "price_ts": col(p, "timestamp", np.int64), "bid": col(p, "BID"), "offer": col(p, "OFFER"),
        "mid_open": col(p, "MID_OPEN"), "high": col(p, "HIGH"), "low": col(p, "LOW"),
        "deal_ts": col(d, "timestamp", np.int64), "deal_price": col(d, "price"),
        "stop_price": col(d, "stop_price"), "limit_price": col(d, "limit_price"),
        "outcome": np.array([r["loss_or_profit"] for r in d]),
    }  # fmt: skip


def write_batch(folder: Path, name: str, batch: Batch) -> tuple[Path, Path]:
    """The batch as seed-format staging files `deals-<name>.csv` and `price-<name>.csv`."""
    deals, price = folder / f"deals-{name}.csv", folder / f"price-{name}.csv"
    deals.write_bytes(format_rows([[r[c] for c in DEAL_COLUMNS] for r in batch.deals]))
    price.write_bytes(format_rows([[r[c] for c in PRICE_COLUMNS] for r in batch.prices]))
    return deals, price
