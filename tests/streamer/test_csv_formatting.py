"""format_csv must write exactly what staging.format_rows writes, for any rows."""

from __future__ import annotations

import itertools

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_demo_dagster.config import default_config
from ml_demo_dagster.core.staging import DEAL_SCHEMA, PRICE_SCHEMA, format_rows
from streamer.dealer import Dealer
from streamer.formatting import format_csv
from streamer.sources.sim import SimSource

ROW_SCHEMA = pa.schema(
    [("t", pa.int64()), ("s", pa.string()), ("x", pa.float64()), ("u", pa.string()), ("y", pa.float64())]
)
prices = st.one_of(
    st.none(),
    st.floats(min_value=-1e6, max_value=1e6).map(lambda x: round(x, 2)),
    st.floats(min_value=1e-4, max_value=9999999999.999998),
    st.sampled_from([0.0, -0.0, 0, 7, 1e-4, 9999999999.999998]),
)
odd_numbers = st.one_of(
    prices,
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([9.9e-5, 1e10, 1e16, 1e21, 123456789012345678.0, True, False, "1.5"]),
)
texts = st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["TRADEABLE", 'a"b', "c\\d", "x\ny", "é", ""]))
stamps = st.one_of(st.integers(0, 10**13), st.sampled_from([0.5, 2.0, True, None, 2**70]))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10**13), texts, prices, st.sampled_from(["buy", None]), prices),
        min_size=1,
        max_size=200,
    )
)
def test_vectorised_path_writes_what_format_rows_writes(rows):
    assert format_csv(rows, ROW_SCHEMA) == format_rows(rows)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(stamps, texts, odd_numbers, texts, odd_numbers), min_size=1, max_size=10))
def test_values_arrow_prints_differently_fall_back_to_format_rows(rows):
    assert format_csv(rows, ROW_SCHEMA) == format_rows(rows)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(prices, min_size=1, max_size=4),
    st.lists(texts, min_size=1, max_size=3),
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 3), st.integers(1, 12)), min_size=3, max_size=60
    ),
)
def test_columns_of_few_distinct_values_print_the_same(pool, words, picks):
    # Runs of repeated values: the path that prints each distinct value once.
    rows = []
    for a, w, b, run in picks:
        rows += [(len(rows), words[w % len(words)], pool[a % len(pool)], None, pool[b % len(pool)])] * run
    assert format_csv(rows, ROW_SCHEMA) == format_rows(rows)


def test_repeated_values_with_blanks_and_odd_numbers_print_the_same():
    cycle = [30000.5, None, 1e-5, -0.0, 30001, float("nan"), 2e10, 7]
    rows = [(i, "TRADEABLE" if i % 50 else None, cycle[i // 10 % 8], "x", cycle[i // 7 % 8]) for i in range(400)]
    assert format_csv(rows, ROW_SCHEMA) == format_rows(rows)


def test_sim_prices_and_deals_format_exactly():
    config = default_config()
    ticks = list(itertools.islice(SimSource(config, seed=3, start_ms=1_767_225_000_000), 5000))
    dealer = Dealer(config.dealer.stop, config.dealer.limit)
    deals = [d for t in ticks for d in dealer.on_tick(t.timestamp, t.offer)]
    assert format_csv(ticks, PRICE_SCHEMA) == format_rows(ticks)
    assert format_csv(deals, DEAL_SCHEMA) == format_rows([d.row() for d in deals])  # the 9th field is left out
    assert format_csv([], PRICE_SCHEMA) == b""


def test_rows_of_other_lengths_are_formatted_like_format_rows():
    rows = [(1, "a", 1.5, "b", 2.5), (2, "a", 1.5, "b")]  # the second row is short
    assert format_csv(rows, ROW_SCHEMA) == format_rows(rows)
    long_rows = [(1, "a", 1.5, "b", 2.5, "extra"), (2, "c", 0.25, None, 3.0, 99)]
    assert format_csv(long_rows, ROW_SCHEMA) == format_rows([r[:5] for r in long_rows])
