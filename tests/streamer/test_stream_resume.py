"""run_stream with a spool, in process: a stopped or crashed stream resumes and its batches
are exactly those of a run never interrupted; a batch id is decided once; a live source's
ticks come back from the spool. (The SIGKILL test of real processes: test_stream_crash.py.)"""

from __future__ import annotations

import itertools
import threading

import pytest

from ml_demo_dagster.config import default_config
from ml_demo_dagster.core.staging import deals_key, deals_rows, format_rows, price_key, read_deals
from ml_demo_dagster.core.store import LocalStore
from streamer.runner import run_stream
from streamer.sources import make_source
from streamer.sources.base import MarketSource
from streamer.spool import SpoolError, open_spool, read_records

START_MS = 1_767_225_000_000


def small_config(batch_size=150, checkpoint_seconds=10.0):
    config = default_config()
    return config.model_copy(
        update={
            # A calm random walk: deals last ~100 ticks, so batches are far enough apart for the
            # checkpoint schedule these tests rely on.
            "sim": config.sim.model_copy(update={"volatility": 2.0, "momentum": 0.0}),
            "export": config.export.model_copy(update={"batch_size": batch_size, "price_lead_seconds": 60}),
            "stream": config.stream.model_copy(update={"checkpoint_seconds": checkpoint_seconds}),
        }
    )


def batches(store) -> list[list[tuple]]:
    """The deals of every batch in the store, batches in T order."""
    ids = sorted(k.removeprefix("staging/deals-").removesuffix(".csv") for k in store.list_keys("staging/deals-"))
    assert all(store.exists(price_key(t)) for t in ids), "a batch without its price file"
    return [deals_rows(read_deals(store.get_bytes(deals_key(t)), t)) for t in ids]


def stream(config, source, store, spool_file, **kwargs):
    with open_spool(spool_file, config, source, store.url) as spool:
        return run_stream(config, source, store, spool=spool, **kwargs)


def test_a_sim_stream_stopped_twice_continues_as_if_never_stopped(tmp_path):
    config = small_config()
    reference = LocalStore(tmp_path / "ref")
    run_stream(config, make_source("sim", config, seed=3, start_ms=START_MS), reference, max_batches=7)
    store, spool_file = LocalStore(tmp_path / "store"), tmp_path / "sim.spool"
    first = stream(config, make_source("sim", config, seed=3, start_ms=START_MS), store, spool_file, max_batches=2)
    assert first.resumed_at == 0 and first.pending > 0  # resolved deals wait in the spool
    # The next runs give no seed: they take the spooled stream's seed and start time.
    second = stream(config, make_source("sim", config), store, spool_file, max_batches=3)
    assert second.resumed_at == first.resumed_at + first.ticks > 0
    stream(config, make_source("sim", config), store, spool_file, max_batches=2)
    assert batches(store) == batches(reference) and len(batches(store)) == 7


class Crash(BaseException):
    """What a kill does to the code between two statements (raised, not caught as an Exception)."""


class CrashingStore(LocalStore):
    """Dies at the n-th write: n odd is a price file (the batch half uploaded), even a deals file."""

    def __init__(self, root, crash_at):
        super().__init__(root)
        self.writes, self.crash_at = 0, crash_at

    def put_bytes(self, key, data):
        self.writes += 1
        if self.writes == self.crash_at:
            super().put_bytes(key, data)  # the write itself lands; the process dies right after it
            raise Crash(key)
        super().put_bytes(key, data)


@pytest.mark.parametrize("crash_at", [1, 4, 7, 10], ids=lambda n: f"write {n}")
def test_a_crash_during_an_upload_reuses_the_batch_id_and_loses_nothing(tmp_path, crash_at):
    config = small_config()
    ticks = list(itertools.islice(make_source("sim", config, seed=5, start_ms=START_MS), 4000))
    price_file = tmp_path / "price.csv"
    price_file.write_bytes(format_rows(ticks))
    reference = LocalStore(tmp_path / "ref")
    run_stream(config, make_source("replay", config, files=[price_file]), reference)
    spool_file = tmp_path / "replay.spool"
    crashing = CrashingStore(tmp_path / "store", crash_at)
    with pytest.raises(Crash) as crash:
        stream(config, make_source("replay", config, files=[price_file]), crashing, spool_file)
    crashed_id = str(crash.value).split("-")[1].removesuffix(".csv")
    decided = [r for r in read_records(spool_file)[0] if r["k"] == "batch"]
    assert str(decided[-1]["T"]) == crashed_id  # recorded before its upload began
    store = LocalStore(tmp_path / "store")
    stats = stream(config, make_source("replay", config, files=[price_file]), store, spool_file)
    assert stats.batch_ids[0] == crashed_id  # the same batch id: its keys are overwritten, not doubled
    assert batches(store) == batches(reference) and len(batches(store)) >= 20
    assert stats.complete and not spool_file.exists()  # the replay ended: the stream is complete


class LiveFeed(MarketSource):
    """A source that cannot resume, like IG: it hands out ticks from `start` on, as they come."""

    name = "live"

    def __init__(self, ticks, start=0, die_after=None):
        super().__init__()
        self.ticks, self.start, self.die_after = ticks, start, die_after

    def _ticks(self):
        for n, tick in enumerate(self.ticks[self.start :], 1):
            yield tick
            if n == self.die_after:
                raise Crash(f"feed died after {n} ticks")


def test_a_live_sources_ticks_come_back_from_the_spool_after_a_crash(tmp_path):
    config = small_config(checkpoint_seconds=0.0005)  # checkpoints often, between the ticks that follow them
    ticks = list(itertools.islice(make_source("sim", config, seed=8, start_ms=START_MS), 3000))
    reference = LocalStore(tmp_path / "ref")
    run_stream(config, LiveFeed(ticks), reference)
    store, spool_file = LocalStore(tmp_path / "store"), tmp_path / "live.spool"
    with pytest.raises(Crash):
        stream(config, LiveFeed(ticks, die_after=1234), store, spool_file)
    with open_spool(spool_file, config, LiveFeed(ticks), store.url) as spool:
        logged = spool.recovery.ticks
        assert spool.recovery.state is not None and logged  # a checkpoint, then ticks logged after it
        assert spool.recovery.state["position"] + len(logged) == 1234
        assert logged[-1] == ticks[1233]
    # Restarted, the feed goes on live from where it is now; here, right after the crash (no gap).
    stats = stream(config, LiveFeed(ticks, start=1234), store, spool_file)
    assert stats.resumed_at + stats.ticks == 3000
    assert batches(store) == batches(reference) and len(batches(store)) >= 10
    assert spool_file.exists()  # a live stream is never complete: what is pending waits for more ticks


def test_a_source_that_no_longer_gives_the_same_ticks_is_refused(tmp_path):
    config = small_config()
    store, spool_file = LocalStore(tmp_path / "store"), tmp_path / "sim.spool"
    stream(config, make_source("sim", config, seed=4, start_ms=START_MS), store, spool_file, max_batches=2)

    class Changed(type(make_source("sim", config, seed=4))):
        def _ticks(self):
            for tick in super()._ticks():
                yield tick._replace(offer=tick.offer + 0.01)

    with pytest.raises(SpoolError, match="no longer hands out the ticks it did before"):
        stream(config, Changed(config, seed=4, start_ms=START_MS), store, spool_file)


def test_a_stop_during_a_paced_wait_keeps_the_spool(tmp_path):
    """A paced source's wait for its next tick ends at once on a stop (SIGTERM in `ml-demo
    up`): the run stopped and its pending deals stay in the spool; the stream did not end."""
    config = small_config()
    store, spool_file = LocalStore(tmp_path / "store"), tmp_path / "sim.spool"
    stream(config, make_source("sim", config, seed=6, start_ms=START_MS), store, spool_file, max_batches=1)
    stop = threading.Event()
    slow = make_source("sim", config, speed=0.001, stop=stop)  # the next tick ~1,000 s away; seed from the spool
    timer = threading.Timer(0.5, stop.set)  # the signal, arriving while the source waits
    timer.start()
    try:
        stats = stream(config, slow, store, spool_file, stop=stop)
    finally:
        timer.cancel()
    assert stats.stopped and not stats.complete and stats.ticks == 1
    assert spool_file.exists() and stats.pending > 0


def test_a_crash_while_a_live_sources_logged_ticks_are_handled_again_loses_none(tmp_path):
    """The logged ticks come before any checkpoint the catching-up run could append; so it
    appends none until all are handled, and a second crash in between loses none of them."""
    config = small_config(checkpoint_seconds=1000.0)
    ticks = list(itertools.islice(make_source("sim", config, seed=12, start_ms=START_MS), 3000))
    reference = LocalStore(tmp_path / "ref")
    run_stream(config, LiveFeed(ticks), reference)
    spool_file = tmp_path / "live.spool"
    with pytest.raises(Crash):  # dies in the 5th batch's deals upload
        stream(config, LiveFeed(ticks), CrashingStore(tmp_path / "store", crash_at=10), spool_file)
    with open_spool(spool_file, config, LiveFeed(ticks), LocalStore(tmp_path / "store").url) as spool:
        checkpointed = spool.recovery.state["position"]
        crashed_at = checkpointed + len(spool.recovery.ticks)
    # Among the logged ticks is a place where a checkpoint is due (every 256 ticks, unpaced).
    assert any(n % 256 == 0 for n in range(checkpointed + 1, crashed_at))
    eager = small_config(checkpoint_seconds=1e-9)  # would checkpoint at every chance
    with pytest.raises(Crash):  # dies again, re-uploading that batch at the end of the catch-up
        stream(eager, LiveFeed(ticks, start=crashed_at), CrashingStore(tmp_path / "store", crash_at=1), spool_file)
    store = LocalStore(tmp_path / "store")
    stream(config, LiveFeed(ticks, start=crashed_at), store, spool_file)
    assert batches(store) == batches(reference)
