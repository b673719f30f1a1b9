"""run_stream: whole batches only, stops cleanly, ends with the source, reports progress."""

from __future__ import annotations

import itertools
import threading

import pytest
from streamer_testkit import brute_force_deals

from ml_demo_dagster.config import default_config
from ml_demo_dagster.core.staging import deals_key, deals_rows, format_rows, price_key, read_deals, read_prices
from ml_demo_dagster.core.store import LocalStore
from streamer.runner import StreamStats, run_stream
from streamer.sources import make_source
from streamer.sources.base import MarketSource

START_MS = 1_767_225_000_000


def small_config(batch_size=200):
    config = default_config()
    return config.model_copy(update={"export": config.export.model_copy(update={"batch_size": batch_size})})


def complete_batches(store) -> list[str]:
    """Batch ids in the store; fails if any batch is missing one of its two files."""
    keys = list(store.list_keys("staging/"))
    deals = {k.removeprefix("staging/deals-").removesuffix(".csv") for k in keys if "/deals-" in k}
    prices = {k.removeprefix("staging/price-").removesuffix(".csv") for k in keys if "/price-" in k}
    assert deals == prices, f"incomplete batches: {sorted(deals ^ prices)}"
    for batch_id in deals:
        read_deals(store.get_bytes(deals_key(batch_id)), batch_id)
        read_prices(store.get_bytes(price_key(batch_id)), batch_id)
    return sorted(deals)


def test_max_batches_writes_exactly_that_many(tmp_path):
    store = LocalStore(tmp_path)
    config = small_config()
    source = make_source("sim", config, seed=4, start_ms=START_MS)
    stats = run_stream(config, source, store, max_batches=3)
    assert stats.batches_written == 3 and not stats.stopped
    assert complete_batches(store) == stats.batch_ids
    assert stats.resolved >= 600 and stats.ticks > 600
    for batch_id in stats.batch_ids:
        assert len(read_deals(store.get_bytes(deals_key(batch_id)))) == 200


class StopsAfter(MarketSource):
    """Sim ticks; sets the stop event after n of them (as a signal handler would)."""

    name = "stops-after"

    def __init__(self, inner, n, stop):
        super().__init__()
        self.inner, self.n, self.stop_event, self.handed_out = inner, n, stop, 0

    def _ticks(self):
        for tick in self.inner:
            self.handed_out += 1
            if self.handed_out == self.n:
                self.stop_event.set()
            yield tick


def test_a_stop_ends_the_run_after_the_current_tick_with_whole_batches_only(tmp_path):
    store = LocalStore(tmp_path)
    config = small_config()
    stop = threading.Event()
    source = StopsAfter(make_source("sim", config, seed=4, start_ms=START_MS), 1234, stop)
    stats = run_stream(config, source, store, stop=stop)
    assert stats.stopped
    # The tick in hand when the stop came was still handled; no further tick was taken.
    assert stats.ticks == source.handed_out == 1234
    assert complete_batches(store) == stats.batch_ids and stats.batches_written >= 3
    assert stats.resolved > 200 * stats.batches_written  # the rest stays unexported, not half-written


def test_replay_to_the_end_writes_only_whole_batches_with_the_rules_deals(tmp_path):
    config = small_config(batch_size=150)
    ticks = list(itertools.islice(make_source("sim", config, seed=9, start_ms=START_MS), 1000))
    price_file = tmp_path / "price.csv"
    price_file.write_bytes(format_rows(ticks))
    store = LocalStore(tmp_path / "store")
    stats = run_stream(config, make_source("replay", config, files=[price_file]), store)
    assert stats.ticks == 1000 and not stats.stopped
    expected = [row for row, _ in brute_force_deals([(t.timestamp, t.offer) for t in ticks], 20.0, 20.0)]
    assert stats.resolved == len(expected)
    assert stats.batches_written == len(expected) // 150
    for n, batch_id in enumerate(complete_batches(store)):
        got = deals_rows(read_deals(store.get_bytes(deals_key(batch_id))))
        assert got == sorted(expected[n * 150 : (n + 1) * 150], key=lambda row: row[0])


def test_progress_reports_a_growing_snapshot(tmp_path):
    seen: list[StreamStats] = []
    config = small_config(batch_size=1000)
    stats = run_stream(
        config,
        make_source("sim", config, seed=2, start_ms=START_MS),
        LocalStore(tmp_path),
        max_batches=2,
        progress=seen.append,
        progress_every_s=0.0,
    )
    # An unpaced source looks at the clock every 256 ticks: so many reports, no more.
    assert len(seen) == stats.ticks // 256 >= 5
    assert [s.ticks for s in seen] == [256 * (i + 1) for i in range(len(seen))]
    assert seen[-1].batches_written >= 1 and seen[-1].batch_ids and seen[0].store_url == str(tmp_path)
    seen[-1].batch_ids.append("x")  # a snapshot, not the runner's own list
    assert "x" not in stats.batch_ids


def test_a_paced_source_reports_on_every_tick(tmp_path):
    seen: list[StreamStats] = []
    config = small_config(batch_size=20)
    source = make_source("sim", config, seed=2, start_ms=START_MS, speed=1e6)
    run_stream(config, source, LocalStore(tmp_path), max_batches=1, progress=seen.append, progress_every_s=0.0)
    assert [s.ticks for s in seen] == list(range(1, len(seen) + 1)) and len(seen) > 20


def test_max_batches_must_be_positive(tmp_path):
    config = small_config()
    with pytest.raises(ValueError, match="max_batches"):
        run_stream(config, make_source("sim", config, seed=1), LocalStore(tmp_path), max_batches=0)
