"""Market sources: the simulated Bitcoin CFD, replay from price files, pacing, the registry."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime

import numpy as np
import pytest

from ml_demo_dagster.config import default_config
from ml_demo_dagster.core.staging import PRICE_COLUMNS, StagingFormatError, format_rows
from streamer.sources import SourceError, Tick, make_source, paced
from streamer.sources.replay import ReplaySource
from streamer.sources.sim import SimSource

START_MS = 1_767_225_000_000  # 2025-12-31 23:50 UTC


def sim_ticks(n, seed=7, start_ms=START_MS, config=None):
    return list(itertools.islice(SimSource(config or default_config(), seed=seed, start_ms=start_ms), n))


def test_tick_fields_are_the_price_columns():
    assert len(Tick._fields) == len(PRICE_COLUMNS)
    assert [f.replace("_", "").lower() for f in Tick._fields] == [c.replace("_", "").lower() for c in PRICE_COLUMNS]


def test_sim_is_deterministic_for_a_seed_and_start_time():
    assert sim_ticks(3000) == sim_ticks(3000)
    assert sim_ticks(50) != sim_ticks(50, seed=8)
    shifted = sim_ticks(50, start_ms=START_MS + 1000)
    assert [t.timestamp - 1000 for t in shifted] == [t.timestamp for t in sim_ticks(50)]


def test_sim_default_start_is_now_truncated_to_the_second():
    before = int(datetime.now(UTC).timestamp()) * 1000
    first = next(iter(SimSource(default_config(), seed=1)))
    assert first.timestamp % 1000 == 0 and before <= first.timestamp <= before + 2000


def test_sim_ticks_look_like_igs_bitcoin_cfd():
    config = config_with(momentum=0.0)
    ticks = sim_ticks(20_000, config=config)
    stamps = [t.timestamp for t in ticks]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))  # strictly increasing ms
    mean_gap_s = (stamps[-1] - stamps[0]) / (len(stamps) - 1) / 1000
    assert mean_gap_s == pytest.approx(config.sim.tick_interval_seconds, rel=0.05)
    gaps = {b - a for a, b in zip(stamps, stamps[1:], strict=False)}
    assert len(gaps) > 1000  # irregular, not a fixed interval
    days = {t.timestamp // 86_400_000 for t in ticks}
    assert len(days) >= 2  # crosses a UTC midnight
    previous_day = None
    for t in ticks:
        assert round(t.offer - t.bid, 2) == config.market.spread
        for value in (t.bid, t.offer, t.mid_open, t.high, t.low, t.change, t.change_pct):
            assert value == round(value, 2)
        mid = round((t.bid + t.offer) / 2, 2)
        day = t.timestamp // 86_400_000
        if day != previous_day:  # the day's first tick opens the day
            assert t.mid_open == t.high == t.low == mid
            previous_day = day
        assert t.low <= mid <= t.high
        assert t.change == round(mid - t.mid_open, 2)
        assert t.change_pct == round(t.change / t.mid_open * 100, 2)
        clock = datetime.fromtimestamp(t.timestamp / 1000, UTC).strftime("%H:%M:%S")
        assert (t.update_time, t.market_state, t.market_delay) == (clock, "TRADEABLE", 0)
    steps = [round((b.bid + b.offer - a.bid - a.offer) / 2, 2) for a, b in zip(ticks, ticks[1:], strict=False)]
    sd = (sum(s * s for s in steps) / len(steps)) ** 0.5
    assert sd == pytest.approx(config.sim.volatility, rel=0.05)


def config_with(**sim):
    base = default_config()
    return base.model_copy(update={"sim": base.sim.model_copy(update=sim)})


def mid_steps(ticks):
    mids = np.array([(t.bid + t.offer) / 2 for t in ticks])
    return np.diff(mids)


def test_momentum_zero_is_a_random_walk_and_momentum_plants_persistent_trends():
    walk = mid_steps(sim_ticks(40_000, config=config_with(momentum=0.0)))
    trend = mid_steps(sim_ticks(40_000, config=config_with(momentum=0.5, momentum_seconds=300)))

    def lag_correlation(steps, lag):
        return float(np.corrcoef(steps[:-lag], steps[lag:])[0, 1])

    # Random walk: steps uncorrelated at every lag (sd of an estimate ~ 1/sqrt(40k) = 0.005).
    assert all(abs(lag_correlation(walk, lag)) < 0.02 for lag in (1, 10, 100))
    # Trends: a drift with sd 0.5 x volatility is shared by neighbouring steps, so steps
    # correlate by about 0.25 / 1.25 = 0.2, fading over the drift's ~300 ticks of memory.
    assert 0.15 < lag_correlation(trend, 1) < 0.25
    assert 0.05 < lag_correlation(trend, 100) < lag_correlation(trend, 1)
    assert np.std(trend) == pytest.approx(5.0 * (1 + 0.5**2) ** 0.5, rel=0.1)


def test_momentum_is_deterministic_and_leaves_timestamps_alone():
    config = config_with(momentum=0.3)
    assert sim_ticks(3000, config=config) == sim_ticks(3000, config=config)
    plain = sim_ticks(3000, config=config_with(momentum=0.0))
    assert [t.timestamp for t in sim_ticks(3000, config=config)] == [t.timestamp for t in plain]
    assert "momentum 0.3" in SimSource(config, seed=1).describe()
    assert "random walk" in SimSource(config_with(momentum=0.0), seed=1).describe()


def write_prices(path, ticks):
    path.write_bytes(format_rows(ticks))
    return path


def test_replay_yields_the_file_rows_as_ticks(tmp_path):
    ticks = sim_ticks(500)
    source = make_source("replay", default_config(), files=[write_prices(tmp_path / "p.csv", ticks)])
    assert list(source) == ticks and len(source) == 500


def test_replay_merges_overlapping_files_in_time_order(tmp_path):
    ticks = sim_ticks(300)
    a = write_prices(tmp_path / "a.csv", ticks[:200])
    b = write_prices(tmp_path / "b.csv", ticks[150:])  # overlaps a by 50 rows
    assert list(ReplaySource([b, a])) == ticks


def test_replay_of_a_bad_file_names_file_line_and_field(tmp_path):
    lines = format_rows(sim_ticks(5)).decode().splitlines()
    fields = lines[2].split(",")
    fields[1] = "abc"
    lines[2] = ",".join(fields)
    bad = tmp_path / "price-bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(StagingFormatError) as err:
        make_source("replay", default_config(), files=[bad])
    assert (err.value.source, err.value.line, err.value.field) == (str(bad), 3, "BID")
    assert str(bad) in str(err.value) and "line 3" in str(err.value) and "BID" in str(err.value)


def test_replay_missing_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="nope.csv: not found"):
        make_source("replay", default_config(), files=[tmp_path / "nope.csv"])
    with pytest.raises(SourceError, match="at least one"):
        make_source("replay", default_config())


def test_unknown_sources_and_options_are_clear_errors():  # the ig source: tests/streamer/test_ig_source.py
    with pytest.raises(SourceError, match="unknown source 'nope'"):
        make_source("nope", default_config())
    with pytest.raises(SourceError, match="does not take seed"):
        make_source("replay", default_config(), files=["x"], seed=3)


class FakeTime:
    """A monotonic clock and a stop event whose waits move the clock instead of sleeping."""

    def __init__(self, stop_after_waits=None):
        self.now = 100.0
        self.waits: list[float] = []
        self.stop_after_waits = stop_after_waits

    def clock(self):
        return self.now

    def wait(self, timeout):
        self.waits.append(round(timeout, 6))
        self.now += timeout
        return self.stop_after_waits is not None and len(self.waits) >= self.stop_after_waits

    def is_set(self):
        return False


def test_pacing_waits_until_each_ticks_deadline_in_market_time():
    fake = FakeTime()
    stamps = [0, 1000, 1000, 3000, 7000]

    def ticks():
        for ts in stamps:
            fake.now += 0.25  # handling each tick takes a quarter of a wall second
            yield (ts,)

    out = [t[0] for t in paced(ticks(), speed=2.0, stop=fake, clock=fake.clock)]
    assert out == stamps
    # Deadlines are 0.5, 0.5, 1.5, 3.5 s after the first tick. Each wait is what is left
    # after the work (0.25 s per tick); the tick already past its deadline waits not at all.
    assert fake.waits == [0.25, 0.5, 1.75]


def test_a_stop_ends_a_paced_wait_at_once():
    fake = FakeTime(stop_after_waits=1)
    out = list(paced(iter([(0,), (60_000,), (120_000,)]), speed=1.0, stop=fake, clock=fake.clock))
    assert out == [(0,)]


def test_closing_a_paced_source_ends_it(tmp_path):
    stop = threading.Event()
    source = make_source("sim", default_config(), seed=1, speed=1e-6, stop=stop)
    it = iter(source)
    assert next(it).timestamp % 1000 == 0
    source.close()  # the next tick is hours of wall time away; close ends the wait now
    assert list(it) == [] and stop.is_set()
