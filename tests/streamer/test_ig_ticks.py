"""TickAssembler: MERGE updates (only what changed) in, complete ticks in time order out."""

from __future__ import annotations

import pytest

from ml_demo_dagster.core.staging import PRICE_COLUMNS, format_rows, price_rows, read_prices
from streamer.sources.ig import FIELDS, MalformedUpdate, TickAssembler

FULL = {  # the seed's own example message
    "UPDATE_TIME": "11:03:40", "BID": "5918.21", "OFFER": "5954.21", "CHANGE": "-31.32", "CHANGE_PCT": "-0.52",
    "MID_OPEN": "5967.53", "HIGH": "6177.00", "LOW": "5885.50", "MARKET_STATE": "TRADEABLE", "MARKET_DELAY": "0",
}  # fmt: skip


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_the_subscription_has_the_seeds_ten_fields():
    assert FIELDS == ("UPDATE_TIME", "BID", "OFFER", "CHANGE", "CHANGE_PCT", "MID_OPEN", "HIGH", "LOW",
                      "MARKET_STATE", "MARKET_DELAY")  # fmt: skip


def test_a_full_update_is_a_tick_in_price_row_order():
    tick = TickAssembler(Clock(1_767_225_600.123)).update(FULL)
    assert tick == (1_767_225_600_123, 5918.21, 5954.21, 5967.53, -31.32, -0.52, 6177.0, 5885.5, "11:03:40",
                    "TRADEABLE", 0.0)  # fmt: skip
    assert tick._fields[1:] == tuple(c.lower() for c in PRICE_COLUMNS[1:])


def test_unchanged_fields_keep_their_last_value():
    ticks = TickAssembler(Clock(1_767_225_600.0))
    ticks.update(FULL)
    tick = ticks.update({"OFFER": "5960.5", "UPDATE_TIME": "11:03:41"})
    assert (tick.bid, tick.offer, tick.update_time, tick.high, tick.market_state) == (
        5918.21, 5960.5, "11:03:41", 6177.0, "TRADEABLE",
    )  # fmt: skip
    tick = ticks.update({"BID": "5920"})
    assert (tick.bid, tick.offer, tick.update_time) == (5920.0, 5960.5, "11:03:41")


def test_empty_or_null_optional_fields_are_missing_values_and_the_row_round_trips():
    ticks = TickAssembler(Clock(1_767_225_600.0))
    tick = ticks.update({**FULL, "MID_OPEN": None, "CHANGE": "", "MARKET_STATE": "", "MARKET_DELAY": None})
    assert (tick.mid_open, tick.change, tick.market_state, tick.market_delay) == (None, None, None, None)
    row = tuple(tick)
    assert price_rows(read_prices(format_rows([row]), "t")) == [row]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"BID": "abc"}, "BID 'abc' is not a number"),
        ({"OFFER": "nan"}, "OFFER 'nan' is not a finite number"),
        ({"HIGH": "1e999"}, "HIGH '1e999' is not a finite number"),
        ({"OFFER": "0"}, "OFFER '0' is not a price above 0"),
        ({"BID": None}, "BID is missing"),
        ({"MARKET_DELAY": "zero"}, "MARKET_DELAY 'zero' is not a number"),
    ],
)
def test_an_update_that_cannot_be_a_tick_is_refused_with_field_and_value(changes, reason):
    ticks = TickAssembler(Clock(1_767_225_600.0))
    ticks.update(FULL)
    with pytest.raises(MalformedUpdate, match="^" + reason.replace("+", r"\+") + "$"):
        ticks.update(changes)


def test_a_bad_value_stays_until_the_server_replaces_it():
    ticks = TickAssembler(Clock(1_767_225_600.0))
    ticks.update(FULL)
    with pytest.raises(MalformedUpdate):
        ticks.update({"BID": "abc"})
    with pytest.raises(MalformedUpdate):
        ticks.update({"OFFER": "5999"})  # BID is still 'abc' on the server's side
    assert ticks.update({"BID": "5990"})[1:3] == (5990.0, 5999.0)


def test_the_first_update_without_prices_is_not_a_tick():
    with pytest.raises(MalformedUpdate, match="BID is missing"):
        TickAssembler(Clock(1_767_225_600.0)).update({"UPDATE_TIME": "11:00:00", "MARKET_STATE": "CLOSED"})


def test_timestamps_follow_the_local_clock_and_strictly_increase():
    clock = Clock(1_767_225_600.0)
    ticks = TickAssembler(clock)
    stamps = []
    # The clock steps back once; two updates arrive in the same millisecond.
    for t in (1_767_225_600.0, 1_767_225_600.5, 1_767_225_599.0, 1_767_225_601.25, 1_767_225_601.25):
        clock.t = t
        stamps.append(ticks.update(FULL).timestamp)
    assert stamps == [1_767_225_600_000, 1_767_225_600_500, 1_767_225_600_501, 1_767_225_601_250, 1_767_225_601_251]


def test_fields_outside_the_subscription_are_ignored():
    tick = TickAssembler(Clock(1_767_225_600.0)).update({**FULL, "STRIKE_PRICE": "x"})
    assert tick.bid == 5918.21
