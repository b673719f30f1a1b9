"""The dealer rule (DESIGN §2): the heap dealer against the naive scan and a brute-force replay."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streamer_testkit import brute_force_deals

from streamer.dealer import Dealer, NaiveDealer

# Offers on a coarse grid, so that stop and limit prices often equal a later offer exactly.
offers = st.lists(st.integers(0, 40).map(lambda k: 100.0 + k * 0.5), min_size=1, max_size=120)
stops = st.sampled_from([0.5, 1.0, 2.5, 4.0])
# A negative limit puts limit_price below the price: then both conditions can hold at once.
limits = st.sampled_from([0.5, 1.0, 3.0, -1.0])
point_values = st.sampled_from([1.0, 0.5, 2.0])


def feed(dealer, ticks):
    """Per-tick resolved deals, as lists of tuples."""
    return [list(dealer.on_tick(ts, offer)) for ts, offer in ticks]


@settings(max_examples=200, deadline=None)
@given(offers, stops, limits, point_values, st.integers(0, 3))
def test_heap_dealer_matches_naive_and_brute_force(prices, stop, limit, point_value, repeat_every):
    # Timestamps may repeat (several ticks in one millisecond); the rule does not care.
    ticks = []
    ts = 1_700_000_000_000
    for i, offer in enumerate(prices):
        if not (repeat_every and i % repeat_every == 0):
            ts += 250
        ticks.append((ts, offer))
    heap = Dealer(stop, limit, point_value)
    naive = NaiveDealer(stop, limit, point_value)
    heap_out, naive_out = feed(heap, ticks), feed(naive, ticks)
    assert heap_out == naive_out
    got = [(deal.row(), deal.resolved_at) for per_tick in heap_out for deal in per_tick]
    expected = [(row, ticks[j][0]) for row, j in brute_force_deals(ticks, stop, limit, point_value)]
    assert got == expected
    assert heap.open_orders == naive.open_orders == len(ticks) - len(expected)
    assert heap.resolved_count == len(expected)
    # Memory: each heap holds the open price levels plus at most as many stale entries.
    assert all(size <= 2 * heap.open_levels for size in heap.heap_sizes)
    assert heap.open_levels <= heap.open_orders


def test_stop_price_equal_to_offer_is_a_loss():
    dealer = Dealer(stop=20, limit=20)
    dealer.on_tick(1, 1000.0)
    (deal,) = dealer.on_tick(2, 980.0)  # stop_price 980 >= OFFER 980
    assert (deal.loss_or_profit, deal.stop_price, deal.resolved_at) == ("loss", 980.0, 2)


def test_limit_price_equal_to_offer_is_a_profit():
    dealer = Dealer(stop=20, limit=20)
    dealer.on_tick(1, 1000.0)
    assert list(dealer.on_tick(2, 1019.99)) == []
    (deal,) = dealer.on_tick(3, 1020.0)
    assert (deal.loss_or_profit, deal.limit_price, deal.timestamp) == ("profit", 1020.0, 1)


@pytest.mark.parametrize("cls", [Dealer, NaiveDealer])
def test_both_conditions_met_is_a_loss(cls):
    dealer = cls(stop=1, limit=-2)  # stop_price 99, limit_price 98
    dealer.on_tick(1, 100.0)
    (deal,) = dealer.on_tick(2, 98.5)  # 99 >= 98.5 and 98 <= 98.5
    assert deal.loss_or_profit == "loss"


def test_an_order_does_not_resolve_on_its_own_tick_and_records_the_seed_columns():
    dealer = Dealer(stop=20, limit=30, point_value=0.5)
    assert list(dealer.on_tick(1_700_000_000_000, 5944.21)) == []
    assert dealer.open_orders == 1
    (deal,) = dealer.on_tick(1_700_000_000_500, 5959.21)
    assert deal.row() == (1_700_000_000_000, "profit", "buy", 20, 30, 5944.21, 5944.21 - 10.0, 5944.21 + 15.0)
    assert deal.resolved_at == 1_700_000_000_500


def test_resolved_orders_do_not_linger_in_the_other_heap():
    dealer = Dealer(stop=20, limit=20)
    for i in range(1000):
        dealer.on_tick(i, 1000.0 + i * 0.01)  # all distinct: 1000 price levels
    assert dealer.heap_sizes == (1000, 1000)
    resolved = dealer.on_tick(1000, 900.0)  # a crash: every order is a loss
    assert len(resolved) == 1000 and dealer.open_orders == 1
    # The 1000 profit-heap entries of the resolved orders are gone, not waiting at the bottom.
    assert dealer.heap_sizes == (1, 1)
    resolved = dealer.on_tick(1001, 950.0)  # and a jump: the one open order is a profit
    assert [d.loss_or_profit for d in resolved] == ["profit"]
    assert dealer.heap_sizes == (1, 1)


def test_heaps_stay_bounded_by_open_orders_over_a_long_walk():
    rng = random.Random(3)
    dealer = Dealer(stop=5, limit=5)
    offer = 1000.0
    worst = 0.0
    for i in range(20_000):
        offer = round(offer + rng.gauss(0, 0.7), 2)
        dealer.on_tick(i, offer)
        loss_size, profit_size = dealer.heap_sizes
        assert max(loss_size, profit_size) <= 2 * dealer.open_levels
        worst = max(worst, max(loss_size, profit_size) / dealer.open_levels)
    assert dealer.resolved_count > 19_000  # the walk did resolve orders from both heaps
    assert worst > 1.0  # stale entries did occur, and were compacted before doubling


def test_oldest_open_timestamp_follows_resolutions():
    dealer = Dealer(stop=1, limit=100)
    assert dealer.oldest_open_timestamp() is None
    dealer.on_tick(10, 100.0)
    dealer.on_tick(20, 102.0)
    dealer.on_tick(30, 100.5)  # the order from t=20 (stop 101) is a loss; t=10 stays open
    assert dealer.oldest_open_timestamp() == 10
    dealer.on_tick(40, 98.0)  # t=10 (stop 99) and t=30 (stop 99.5) are losses
    assert dealer.oldest_open_timestamp() == 40


def test_non_finite_settings_are_refused():
    with pytest.raises(ValueError, match="stop"):
        Dealer(float("nan"), 20)
