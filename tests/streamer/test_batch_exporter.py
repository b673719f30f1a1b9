"""The exporter: the staging contract round trip, batch boundaries, ids, and bounded memory."""

from __future__ import annotations

import itertools

import pytest

from ml_demo_dagster.config import default_config
from ml_demo_dagster.core.staging import (
    deals_key,
    deals_rows,
    price_key,
    price_rows,
    read_deals,
    read_prices,
)
from ml_demo_dagster.core.store import LocalStore, StoreError
from streamer.dealer import Dealer
from streamer.exporter import Exporter
from streamer.sources.sim import SimSource

START_MS = 1_767_225_000_000  # 2025-12-31 23:50 UTC: the run crosses a UTC midnight


def simulate(n_ticks, *, batch_size, lead_s=60, store=None, seed=1, clock=None, every_ms=None):
    """Sim ticks through a dealer into an exporter; returns (exporter, ticks, resolved in order).

    With `every_ms`, the ticks are re-timed to a regular grid, so a tick sits exactly on each
    batch's lower bound (earliest deal - lead)."""
    config = default_config()
    ticks = list(itertools.islice(SimSource(config, seed=seed, start_ms=START_MS), n_ticks))
    if every_ms:
        ticks = [t._replace(timestamp=START_MS + i * every_ms) for i, t in enumerate(ticks)]
    dealer = Dealer(config.dealer.stop, config.dealer.limit, config.market.point_value)
    kwargs = {"clock": clock} if clock else {}
    exporter = Exporter(store, batch_size=batch_size, price_lead_seconds=lead_s, **kwargs)
    resolved = []
    for tick in ticks:
        exporter.add_tick(tick)
        deals = dealer.on_tick(tick.timestamp, tick.offer)
        exporter.add_deals(deals)
        resolved.extend(deals)
        while exporter.ready():
            exporter.export_batch()
            exporter.trim(dealer.oldest_open_timestamp())
    return exporter, ticks, resolved


def test_batches_round_trip_through_the_staging_contract(tmp_path):
    store = LocalStore(tmp_path)
    exporter, ticks, resolved = simulate(3000, batch_size=400, store=store)
    assert len(exporter.batch_ids) == len(resolved) // 400 >= 5
    assert exporter.pending == len(resolved) % 400
    assert sorted(store.list_keys("staging/")) == sorted(
        k for b in exporter.batch_ids for k in (deals_key(b), price_key(b))
    )
    for n, batch_id in enumerate(exporter.batch_ids):
        deals = deals_rows(read_deals(store.get_bytes(deals_key(batch_id)), "deals"))
        prices = price_rows(read_prices(store.get_bytes(price_key(batch_id)), "price"))
        # Exactly the n-th 400 resolved deals, sorted by opening time, with the 8 columns.
        expected = sorted(resolved[n * 400 : (n + 1) * 400], key=lambda d: d.timestamp)
        assert deals == [d.row() for d in expected]
        # Every tick from the earliest deal minus the lead to the latest deal, inclusive.
        first, last = deals[0][0] - 60_000, deals[-1][0]
        assert prices == [tuple(t) for t in ticks if first <= t.timestamp <= last]
        assert prices[-1][0] == last and prices[0][0] >= first


def test_the_price_file_includes_both_bounds(tmp_path):
    store = LocalStore(tmp_path)
    exporter, ticks, _ = simulate(3000, batch_size=300, lead_s=5, store=store, every_ms=1000)
    assert len(exporter.batch_ids) >= 5
    for batch_id in exporter.batch_ids:
        deals = deals_rows(read_deals(store.get_bytes(deals_key(batch_id)), "deals"))
        prices = price_rows(read_prices(store.get_bytes(price_key(batch_id)), "price"))
        first = max(deals[0][0] - 5000, ticks[0].timestamp)
        assert (prices[0][0], prices[-1][0]) == (first, deals[-1][0])
        assert len(prices) == (deals[-1][0] - first) // 1000 + 1


def test_batch_ids_increase_and_never_reuse_existing_files(tmp_path):
    store = LocalStore(tmp_path)
    frozen = 1_800_000_000.0  # the wall clock does not move between exports
    store.put_bytes(price_key(1_800_000_000_000), b"someone else's")
    store.put_bytes(deals_key(1_800_000_000_001), b"someone else's")
    exporter, _, _ = simulate(1500, batch_size=300, store=store, clock=lambda: frozen)
    ids = [int(b) for b in exporter.batch_ids]
    assert ids[:2] == [1_800_000_000_002, 1_800_000_000_003]
    assert ids == sorted(set(ids)) and len(ids) >= 3
    assert store.get_bytes(price_key(1_800_000_000_000)) == b"someone else's"


class FlakyStore(LocalStore):
    """Refuses to write deals files while `failing` is set."""

    failing = True

    def put_bytes(self, key, data):
        if self.failing and "deals-" in key:
            raise StoreError("disk full")
        super().put_bytes(key, data)


def test_a_failed_deals_write_takes_the_price_file_back_and_loses_no_deal(tmp_path):
    store = FlakyStore(tmp_path)
    config = default_config()
    dealer = Dealer(config.dealer.stop, config.dealer.limit)
    exporter = Exporter(store, batch_size=50, price_lead_seconds=10)
    resolved = []
    for tick in SimSource(config, seed=5, start_ms=START_MS):
        exporter.add_tick(tick)
        deals = dealer.on_tick(tick.timestamp, tick.offer)
        exporter.add_deals(deals)
        resolved.extend(deals)
        if exporter.ready():
            break
    with pytest.raises(StoreError, match="disk full"):
        exporter.export_batch()
    assert list(store.list_keys("staging/")) == []  # no orphan price file
    assert exporter.pending == len(resolved) and exporter.batch_ids == []
    store.failing = False
    batch_id = exporter.export_batch()
    deals = deals_rows(read_deals(store.get_bytes(deals_key(batch_id)), "deals"))
    assert deals == [d.row() for d in sorted(resolved[:50], key=lambda d: d.timestamp)]
    assert store.exists(price_key(batch_id))


def test_price_buffer_holds_only_what_pending_deals_can_need(tmp_path):
    store = LocalStore(tmp_path)
    exporter, ticks, resolved = simulate(6000, batch_size=500, lead_s=30, store=store)
    assert len(exporter.batch_ids) >= 10
    # After the last trim, the oldest buffered tick is within the lead of a deal still
    # pending or open, not the first tick of the run.
    assert exporter.oldest_buffered_ms > ticks[0].timestamp + 30_000
    assert exporter.buffered_ticks < 0.4 * len(ticks)
