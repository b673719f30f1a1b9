"""The numpy kernel against DESIGN §4.2: a hand-worked case, the brute-force reference,
the dealer replay for durations, and the no-look-ahead property."""

from __future__ import annotations

import numpy as np
import pytest
from feature_reference import generate_batch, kernel_inputs, reference_features
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glue.feature_kernel import compute_features, first_at_or_above, first_at_or_below

NAN = float("nan")


def _prices(rows):
    """rows: (timestamp, bid, offer[, mid_open, high, low]) -> kernel price arguments."""
    full = [r + (r[1] - 1, r[2] + 1, r[1] - 2)[len(r) - 3 :] if len(r) < 6 else r for r in rows]
    ts, bid, offer, mid_open, high, low = (np.array(c) for c in zip(*full, strict=True))
    return {"price_ts": ts.astype(np.int64), "bid": bid, "offer": offer, "mid_open": mid_open, "high": high, "low": low}


def _deals(rows):
    """rows: (timestamp, price, outcome) with stop/limit 5 around the price."""
    ts, price, outcome = zip(*rows, strict=True)
    price = np.array(price, dtype=float)
    return {
        "deal_ts": np.array(ts, dtype=np.int64), "deal_price": price,
        "stop_price": price - 5, "limit_price": price + 5, "outcome": np.array(outcome),
    }  # fmt: skip


def test_hand_worked_window_with_gap_burst_and_forward_fill():
    # Seconds 100..105, H = 3. Second 101 has two ticks (mean of their mids), 102 has none.
    prices = _prices([
        (100_500, 9.0, 11.0),   # s100 mid 10
        (101_100, 11.0, 13.0),  # s101 mids 12 and 14 -> mean 13
        (101_900, 13.0, 15.0),
        (103_000, 19.0, 21.0),  # s103 mid 20
        (104_250, 29.0, 31.0, 28.0, 33.0, 27.0),  # the deal's tick, s104, mid 30
        (104_700, 99.0, 101.0),  # later in the deal's own second: never used
    ])  # fmt: skip
    r = compute_features(**prices, **_deals([(104_250, 31.0, "profit")]), history_seconds=3)
    assert r.counts == {"deals": 1, "rows": 1, "no_history": 0, "no_tick": 0, "missing_tick_values": 0}
    # Tick columns BID, OFFER, MID_OPEN, HIGH, LOW minus mid 30; history s101, s102 (ffill), s103.
    np.testing.assert_allclose(r.features[0], [-1, 1, -2, 3, -3, 13 - 30, 13 - 30, 20 - 30])
    assert r.features.dtype == np.float32 and r.label.tolist() == [1]
    # Resolution: the first later row with OFFER >= 36 is the one at 104_700 (limit 36).
    assert r.duration_ms.tolist() == [450] and r.duration_known.tolist() == [True]


def test_counts_each_dropped_deal_once_and_never_fills_it():
    prices = _prices([
        (100_000, 9.0, 11.0),
        (103_000, 9.0, 11.0),
        (104_000, 9.0, 11.0, NAN, 12.0, 8.0),  # MID_OPEN missing
        (105_000, 9.0, 11.0),
    ])  # fmt: skip
    deals = _deals([
        (102_000, 11.0, "loss"),    # no price row at this timestamp
        (104_000, 11.0, "loss"),    # its tick lacks MID_OPEN
        (103_000, 11.0, "profit"),  # s103, H = 4 needs a tick at or before s99
        (105_000, 11.0, "loss"),    # s105 needs s101: the tick at s100 is known -> kept
    ])  # fmt: skip
    r = compute_features(**prices, **deals, history_seconds=4)
    assert r.counts == {"deals": 4, "rows": 1, "no_history": 1, "no_tick": 1, "missing_tick_values": 1}
    assert r.timestamp.tolist() == [105_000]
    assert np.isfinite(r.features).all()
    # Deal at the file's last row: nothing resolves it, duration is a lower bound.
    assert r.duration_ms.tolist() == [0] and r.duration_known.tolist() == [False]


def test_same_timestamp_rows_match_the_deals_offer_else_the_last():
    prices = _prices([(200_000, 1.0, 3.0), (200_000, 5.0, 7.0), (200_000, 9.0, 11.0), (100_000, 0.0, 2.0)])
    deals = _deals([(200_000, 7.0, "loss"), (200_000, 4.0, "loss")])
    r = compute_features(**prices, **deals, history_seconds=50)
    # File order among equal timestamps is kept (the row at 100_000 sorts first).
    assert r.features[:, 1].tolist() == [1.0, 1.0]  # OFFER - mid: offer 7 (mid 6), then offer 11 (mid 10)
    assert r.features[:, 5].tolist() == [1.0 - 6.0, 1.0 - 10.0]  # history is the mid 1 of s100, ffilled


def test_no_prices_means_no_tick_for_every_deal():
    empty = {k: np.array([], dtype=np.int64 if k == "price_ts" else float) for k in _prices([(1, 1.0, 2.0)])}
    r = compute_features(**empty, **_deals([(1000, 2.0, "loss")]), history_seconds=5)
    assert r.counts["no_tick"] == 1 and r.features.shape == (0, 10)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("history", [1, 7, 40])
def test_kernel_equals_brute_force_reference(seed, history):
    batch = generate_batch(seed, contract=False)
    rows, counts = reference_features(batch, history)
    r = compute_features(**kernel_inputs(batch), history_seconds=history)
    assert r.counts == counts
    assert counts["rows"] > 0 and counts["no_tick"] >= 1 and (counts["no_history"] > 0 or history < 40)
    assert r.timestamp.tolist() == [x["timestamp"] for x in rows]
    assert r.label.tolist() == [x["label"] for x in rows]
    assert r.features.shape == (len(rows), 5 + history)
    np.testing.assert_allclose(r.features, np.array([x["features"] for x in rows]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_durations_equal_a_replay_of_the_dealer(seed):
    batch = generate_batch(seed, n_ticks=300, stop=3.0, limit=4.0, contract=False)
    rows, _ = reference_features(batch, 5)
    r = compute_features(**kernel_inputs(batch), history_seconds=5)
    assert r.duration_ms.tolist() == [x["duration_ms"] for x in rows]
    assert r.duration_known.tolist() == [x["duration_known"] for x in rows]
    assert r.duration_known.any() and not r.duration_known.all()
    assert (r.duration_ms >= 0).all()


def test_first_passage_search_equals_a_scan():
    rng = np.random.default_rng(1)
    for n in (0, 1, 2, 3, 7, 8, 9, 100):
        values = rng.normal(size=n)
        start, threshold = rng.integers(0, n + 1, 64), rng.normal(size=64)
        below = [next((i for i in range(s, n) if values[i] <= t), n) for s, t in zip(start, threshold, strict=True)]
        above = [next((i for i in range(s, n) if values[i] >= t), n) for s, t in zip(start, threshold, strict=True)]
        assert first_at_or_below(values, start, threshold).tolist() == below
        assert first_at_or_above(values, start, threshold).tolist() == above


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    history=st.integers(1, 30),
    pick=st.floats(0, 1, exclude_max=True),
    shift=st.floats(-50, 50, allow_nan=False).filter(lambda x: abs(x) > 1e-3),
    drop_every=st.integers(2, 5),
)
def test_prices_at_or_after_a_deals_second_never_change_its_features(seed, history, pick, shift, drop_every):
    batch = generate_batch(seed, n_ticks=150, contract=False)
    base = compute_features(**kernel_inputs(batch), history_seconds=history)
    if len(base.timestamp) == 0:
        return
    i = int(pick * len(base.timestamp))
    deal_ts, deal_no = int(base.timestamp[i]), int(base.deal_index[i])
    cut = (deal_ts // 1000) * 1000
    changed = []
    for j, p in enumerate(batch.prices):
        # Rows sharing the deal's exact timestamp are left alone: they decide which row is its tick.
        if p["timestamp"] < cut or p["timestamp"] == deal_ts:
            changed.append(p)
        elif j % drop_every:  # shift the later prices, dropping every drop_every-th row
            changed.append({**p, "BID": p["BID"] + shift, "OFFER": p["OFFER"] + shift})
    if cut != deal_ts:
        changed.append({**batch.prices[0], "timestamp": cut, "BID": 1.0, "OFFER": 2.0})  # a new tick in second s
    batch.prices = changed
    after = compute_features(**kernel_inputs(batch), history_seconds=history)
    k = after.deal_index.tolist().index(deal_no)
    np.testing.assert_array_equal(after.features[k], base.features[i])
