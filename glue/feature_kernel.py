"""The feature definition (DESIGN §4.2) for one batch, as a pure numpy function.

Everything that decides a feature value lives here, so the Spark job (local and on AWS
Glue), the single-process pyarrow job and the tests all compute exactly the same thing:

- a deal's tick is the price row whose timestamp equals the deal's (several rows with
  that timestamp: the last whose OFFER equals the deal's price, else the last of them);
- with s = floor(deal timestamp / 1000), history column k (k = 0..H-1) is the mean mid
  ((BID + OFFER) / 2) of the ticks in second s - H + k on a dense per-second grid, where a
  second without ticks takes the last known mid from an earlier second; nothing from second
  s or later is used;
- the 5 tick columns (BID, OFFER, MID_OPEN, HIGH, LOW) and the H history columns are all
  minus the deal's mid (the mid of its tick); label 1 = profit;
- a deal's duration is the time from its opening to the first later price row that
  resolves it by the dealer's rule (OFFER <= stop_price: loss, checked first; OFFER >=
  limit_price: profit); when the file ends first, the duration is a lower bound (file end
  - opening) and `duration_known` is False.

Each deal lands in exactly one count: `no_tick` (no price row at its timestamp), else
`missing_tick_values` (its tick lacks one of the 5 values), else `no_history` (no tick at
or before second s - H, so column 0 is undefined), else `rows` (it is in the output).
Nothing is ever filled from another deal. Computation is in float64, output float32.
No Spark, Dagster or AWS imports: this module is shipped to Glue as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TICK_FEATURES = ("BID", "OFFER", "MID_OPEN", "HIGH", "LOW")
COUNT_KEYS = ("deals", "rows", "no_history", "no_tick", "missing_tick_values")


@dataclass(frozen=True)
class KernelResult:
    """Features of one batch: one entry per output row (deals with a full window)."""

    timestamp: np.ndarray  # int64, the deal's opening time (epoch ms)
    label: np.ndarray  # int8, 1 = profit
    duration_ms: np.ndarray  # int64
    duration_known: np.ndarray  # bool
    features: np.ndarray  # float32 [rows, 5 + H]
    deal_index: np.ndarray  # int64, each row's position in the deals given
    counts: dict[str, int]


def first_at_or_below(values: np.ndarray, start: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Per query, the first index i >= start with values[i] <= threshold (len(values) if none)."""
    return _first_passage(np.asarray(values, dtype=np.float64), start, threshold, below=True)


def first_at_or_above(values: np.ndarray, start: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Per query, the first index i >= start with values[i] >= threshold (len(values) if none)."""
    return _first_passage(np.asarray(values, dtype=np.float64), start, threshold, below=False)


def _first_passage(values: np.ndarray, start: np.ndarray, threshold: np.ndarray, below: bool) -> np.ndarray:
    # A sparse table of block minima (maxima) over power-of-two spans, then, for all queries
    # at once, a descent that skips every block that cannot contain a hit: O((n + q) log n).
    n = len(values)
    pos = np.asarray(start, dtype=np.int64).copy()
    threshold = np.asarray(threshold, dtype=np.float64)
    if n == 0 or len(pos) == 0:
        return np.full(len(pos), n, dtype=np.int64)
    reduce = np.minimum if below else np.maximum
    levels = [values]  # levels[k][i] = extreme of values[i : i + 2**k]
    while (2 << (len(levels) - 1)) <= n:
        span = 1 << (len(levels) - 1)
        levels.append(reduce(levels[-1][:-span], levels[-1][span:]))
    for k in range(len(levels) - 1, -1, -1):
        table = levels[k]
        ok = pos < len(table)
        idx = np.minimum(pos, len(table) - 1)
        miss = table[idx] > threshold if below else table[idx] < threshold
        pos = np.where(ok & miss, pos + (1 << k), pos)
    return np.minimum(pos, n)


def _sorted_prices(price_ts: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.argsort(price_ts, kind="stable")  # ties keep file order
    if np.all(order[:-1] < order[1:]):
        return (price_ts, *columns)
    return (price_ts[order], *(c[order] for c in columns))


def _match_ticks(price_ts: np.ndarray, offer: np.ndarray, deal_ts: np.ndarray, deal_price: np.ndarray) -> np.ndarray:
    """Index of each deal's tick in the sorted prices, -1 where none has its timestamp."""
    lo = np.searchsorted(price_ts, deal_ts, side="left")
    hi = np.searchsorted(price_ts, deal_ts, side="right")
    tick = np.where(hi > lo, hi - 1, -1)
    multi = np.flatnonzero(hi - lo > 1)
    if len(multi):
        # Expand each ambiguous deal over its candidate rows; keep the last with OFFER == price.
        sizes = (hi - lo)[multi]
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        cand = np.repeat(lo[multi] - starts, sizes) + np.arange(sizes.sum())
        hit = offer[cand] == np.repeat(deal_price[multi], sizes)
        last_hit = np.maximum.reduceat(np.where(hit, cand, -1), starts)
        tick[multi] = np.where(last_hit >= 0, last_hit, tick[multi])
    return tick


def _second_grid(price_sec: np.ndarray, mid: np.ndarray) -> tuple[int, np.ndarray]:
    """(first second with a tick, mean mid per second from then on, forward-filled)."""
    first = int(price_sec[0])
    slot = price_sec - first
    length = int(slot[-1]) + 1
    total = np.bincount(slot, weights=mid, minlength=length)
    count = np.bincount(slot, minlength=length)
    seen = count > 0
    last = np.maximum.accumulate(np.where(seen, np.arange(length), -1))
    mean = np.zeros(length)
    mean[seen] = total[seen] / count[seen]
    return first, mean[last]  # slot 0 has a tick, so `last` is never -1


def compute_features(
    price_ts: np.ndarray,
    bid: np.ndarray,
    offer: np.ndarray,
    mid_open: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    deal_ts: np.ndarray,
    deal_price: np.ndarray,
    stop_price: np.ndarray,
    limit_price: np.ndarray,
    outcome: np.ndarray,
    history_seconds: int,
) -> KernelResult:
    """Features, labels and durations of one batch's buy deals (DESIGN §4.2); NaN = missing."""
    if history_seconds < 1:
        raise ValueError(f"history_seconds must be >= 1, got {history_seconds}")
    H = int(history_seconds)
    width = len(TICK_FEATURES) + H
    price_ts = np.asarray(price_ts, dtype=np.int64)
    cols = [np.asarray(c, dtype=np.float64) for c in (bid, offer, mid_open, high, low)]
    deal_ts = np.asarray(deal_ts, dtype=np.int64)
    deal_price = np.asarray(deal_price, dtype=np.float64)
    stop_price = np.asarray(stop_price, dtype=np.float64)
    limit_price = np.asarray(limit_price, dtype=np.float64)
    label = _labels(outcome)
    n_deals = len(deal_ts)

    price_ts, *cols = _sorted_prices(price_ts, *cols)
    bid, offer = cols[0], cols[1]
    tick = _match_ticks(price_ts, offer, deal_ts, deal_price) if len(price_ts) else np.full(n_deals, -1)

    has_tick = tick >= 0
    safe_tick = np.where(has_tick, tick, 0)
    tick_values = np.stack([c[safe_tick] for c in cols], axis=1) if len(price_ts) else np.zeros((n_deals, 5))
    complete = has_tick & ~np.isnan(tick_values).any(axis=1)

    deal_sec = np.floor_divide(deal_ts, 1000)
    has_history = np.zeros(n_deals, dtype=bool)
    if len(price_ts):
        price_sec = np.floor_divide(price_ts, 1000)
        first_sec, grid = _second_grid(price_sec, (bid + offer) / 2.0)
        row0 = deal_sec - H - first_sec  # grid slot of column 0
        has_history = row0 >= 0
    keep = np.flatnonzero(complete & has_history)

    counts = {
        "deals": n_deals,
        "rows": len(keep),
        "no_tick": int((~has_tick).sum()),
        "missing_tick_values": int((has_tick & ~complete).sum()),
        "no_history": int((complete & ~has_history).sum()),
    }
    features = np.empty((len(keep), width), dtype=np.float32)
    if len(keep):
        deal_mid = (tick_values[keep, 0] + tick_values[keep, 1]) / 2.0
        features[:, :5] = tick_values[keep] - deal_mid[:, None]
        # Every kept deal has its tick in the grid, so its window (seconds s-H .. s-1) fits.
        windows = np.lib.stride_tricks.sliding_window_view(grid, H)
        features[:, 5:] = windows[row0[keep]] - deal_mid[:, None]

    start = tick[keep] + 1
    loss_at = first_at_or_below(offer, start, stop_price[keep])
    profit_at = first_at_or_above(offer, start, limit_price[keep])
    resolved_at = np.minimum(loss_at, profit_at)
    known = resolved_at < len(price_ts)
    end_ts = price_ts[np.minimum(resolved_at, len(price_ts) - 1)] if len(price_ts) else np.zeros(0, np.int64)
    opened = deal_ts[keep]
    return KernelResult(
        timestamp=opened,
        label=label[keep],
        duration_ms=(end_ts - opened).astype(np.int64),
        duration_known=known,
        features=features,
        deal_index=keep.astype(np.int64),
        counts=counts,
    )


def _labels(outcome: np.ndarray) -> np.ndarray:
    """1 = profit, 0 = loss, from "profit"/"loss" strings or anything numeric/boolean."""
    outcome = np.asarray(outcome)
    if outcome.dtype.kind in "OUS":
        return (outcome == "profit").astype(np.int8)
    return (outcome != 0).astype(np.int8)


def empty_counts() -> dict[str, int]:
    """All counts zero (a batch with nothing in it)."""
    return dict.fromkeys(COUNT_KEYS, 0)
