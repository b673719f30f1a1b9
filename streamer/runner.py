"""The streaming loop: source -> dealer -> exporter, until enough batches, a stop, or the end.

`run_stream` is the one entry point: the `ml-demo stream` command, `ml-demo demo` and the
Dagster side all call it. A batch is written whole or not at all: the stop event is only
looked at between ticks.

With a spool (streamer/spool.py; `ml-demo stream` always has one) the stream survives a
crash: the run starts from what the spool holds (open orders, resolved deals not yet in a
batch, the price buffer, batch ids decided but maybe not uploaded), restarting a resumable
source after the ticks already handled or handling a live source's logged ticks again, and
checkpoints after every batch, every `stream.checkpoint_seconds` and when it stops. What is
resolved but short of a full batch then waits in the spool for the next run; when a
resumable source ends, the stream is complete and the spool is removed. Without a spool
(`ml-demo demo`, benchmarks) a run starts afresh and leaves the remainder unexported.
"""

from __future__ import annotations

import gc
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from ml_demo_dagster.config import ProjectConfig
from ml_demo_dagster.core.store import ObjectStore
from streamer.dealer import Dealer, NaiveDealer
from streamer.exporter import Exporter
from streamer.sources.base import MarketSource, Tick
from streamer.spool import Spool, SpoolError

_TRIM_EVERY = 16_384  # ticks between price-buffer trims (besides one after every batch)
END, STOP, ENOUGH = "end", "stop", "enough"  # why a run of the loop ended


@dataclass
class StreamStats:
    """What a run did so far (or in all, once run_stream returns)."""

    ticks: int = 0  # handled by this run
    open_orders: int = 0
    resolved: int = 0  # in the whole stream (earlier runs included, with a spool)
    batches_written: int = 0
    batch_ids: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    stopped: bool = False  # True when the stop event ended the run
    store_url: str = ""
    resumed_at: int = 0  # ticks of the stream handled by earlier runs (0: a new stream)
    pending: int = 0  # resolved deals not yet in a batch
    buffered_ticks: int = 0  # ticks kept for the price files of open and pending deals
    complete: bool = False  # the source ended: with a spool, the stream is done and its spool removed

    @property
    def ticks_per_second(self) -> float:
        return self.ticks / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


def run_stream(
    config: ProjectConfig,
    source: MarketSource,
    store: ObjectStore,
    *,
    max_batches: int | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[StreamStats], None] | None = None,
    progress_every_s: float = 5.0,
    dealer: Dealer | NaiveDealer | None = None,
    spool: Spool | None = None,
    clock: Callable[[], float] = time.time,
) -> StreamStats:
    """Stream ticks through the dealer into batches in `store`; returns what was done.

    `dealer` defaults to a fresh Dealer with the config's stop, limit and point value
    (the benchmark passes a NaiveDealer to compare). `spool`: resume from it and keep it
    up to date (the caller opens and closes it). `clock` gives each batch's T (the export's
    wall-clock time, seconds): a test that needs the same batch ids every run fixes it.
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 (got {max_batches})")
    if dealer is None:
        dealer = Dealer(config.dealer.stop, config.dealer.limit, config.market.point_value)
    return _Stream(config, source, store, dealer, spool, max_batches, stop, progress, progress_every_s, clock).run()


class _Stream:
    """One run of the loop, with what it needs around it: recovery, checkpoints, progress."""

    def __init__(self, config, source, store, dealer, spool, max_batches, stop, progress, progress_every_s, clock):
        self.source: MarketSource = source
        self.dealer: Dealer | NaiveDealer = dealer
        self.spool: Spool | None = spool
        self.exporter = Exporter(
            store,
            batch_size=config.export.batch_size,
            price_lead_seconds=config.export.price_lead_seconds,
            before_upload=spool.record_batch if spool is not None else None,
            clock=clock,
        )
        self.max_batches = max_batches
        self.stop = stop if stop is not None else threading.Event()
        self.progress = progress
        self.progress_every_s = progress_every_s
        self.checkpoint_every_s = config.stream.checkpoint_seconds
        self.stats = StreamStats(store_url=store.url)
        self.position = 0  # ticks of the stream handled (by earlier runs too)
        self.checkpoints_on = spool is not None
        self.started = self.last_report = self.last_checkpoint = time.monotonic()
        # Housekeeping (trimming the price buffer, progress, checkpoints) runs every 256
        # ticks for an unpaced source, and on every tick for a paced one (slow ticks).
        self.housekeeping_mask = 0 if source.speed else 255

    def run(self) -> StreamStats:
        gc_threshold = gc.get_threshold()
        why = None
        try:
            # The loop makes and drops a few small tuples per tick; the collector's default
            # (a young-generation pass every 700 allocations) costs ~20% of the throughput.
            gc.set_threshold(50_000, *gc_threshold[1:])
            ticks, why = self._recover()
            if why is None:
                add_tick = self.exporter.add_tick
                if self.spool is not None and not self.source.resumable:
                    add_tick = self._logging_add_tick()
                why = self._pump(ticks, add_tick)
            self.stats.stopped = why == STOP
            self.stats.complete = why == END
            if self.spool is not None:
                if why == END and self.source.resumable:
                    self.spool.finish()  # nothing that is pending can ever make a batch now
                else:
                    self._checkpoint()
        finally:
            gc.set_threshold(*gc_threshold)
            self.source.close()
        return self._snapshot()

    # Recovery ------------------------------------------------------------------------------

    def _recover(self) -> tuple[Iterator[Tick], str | None]:
        """Restore what the spool holds; returns the source's ticks to go on with, and why
        the run already ended (a stop or enough batches while catching up) or None."""
        spool, source, exporter = self.spool, self.source, self.exporter
        recovery = spool.recovery if spool is not None else None
        if recovery is None or recovery.empty:
            return iter(source), None
        state = recovery.state
        if state is not None:
            self.dealer.restore(state["dealer"])
            exporter.restore(state["exporter"], recovery.decided)
            self.position = self.stats.resumed_at = state["position"]
        else:
            exporter.decided.update(recovery.decided)
        if source.resumable:
            # Restart the source where the price buffer began, re-read the buffer unpaced.
            refill = state["exporter"]["buffered"] if state is not None else 0
            source.resume(self.position - refill, unpaced=refill)
            ticks = iter(source)
            add_tick = exporter.add_tick
            for tick in itertools.islice(ticks, refill):
                add_tick(tick)
            if exporter.buffered_ticks != refill or (refill and list(exporter.last_tick) != state["last_tick"]):
                raise SpoolError(
                    f"spool {spool.path}: the source no longer hands out the ticks it did before "
                    f"(tick {self.position:,} differs); run the version that wrote the spool, or pass --fresh"
                )
            why = self._flush()
        else:
            # A live source: its logged ticks are handled again (not logged again); then it
            # goes on live. No checkpoint until all are handled: the logged ticks sit before
            # any checkpoint appended now, and a restart reads only what follows the last one.
            self.checkpoints_on = False
            why = self._flush() or self._pump(recovery.ticks, exporter.add_tick)
            self.checkpoints_on = True
            if recovery.ticks:
                self._checkpoint()
            ticks = iter(source) if why is None or why == END else iter(())
            why = None if why == END else why
        return ticks, why

    def _flush(self) -> str | None:
        """Write the batches already complete at a checkpoint (ENOUGH if that is max_batches)."""
        if self.exporter.pending >= self.exporter.batch_size:
            return ENOUGH if self._export() else None
        return None

    # The loop ------------------------------------------------------------------------------

    def _pump(self, ticks: Iterable[Tick], add_tick: Callable[[Tick], None]) -> str:
        """Handle ticks until they end (END), the stop event (STOP) or max_batches (ENOUGH)."""
        # The hot loop uses local names only: it runs once per tick.
        on_tick = self.dealer.on_tick
        exporter = self.exporter
        add_deals = exporter.add_deals
        batch_size = exporter.batch_size
        stop_is_set = self.stop.is_set
        mask = self.housekeeping_mask
        n = first = self.position
        try:
            for n, tick in enumerate(ticks, first + 1):
                add_tick(tick)
                resolved = on_tick(tick[0], tick[2])
                if resolved:
                    add_deals(resolved)
                    if exporter.pending >= batch_size:
                        self.position = n
                        if self._export():
                            return ENOUGH
                if not n & mask:
                    self.position = n
                    self._housekeeping()
                if stop_is_set():  # after the tick in hand is handled; no tick is taken and dropped
                    return STOP
            # A paced source ends its wait for the next tick when the stop comes: not the end.
            return STOP if stop_is_set() else END
        finally:
            self.position = n

    def _export(self) -> bool:
        """Write every complete batch; True when max_batches is reached."""
        exporter = self.exporter
        enough = False
        while exporter.pending >= exporter.batch_size:
            exporter.export_batch()
            if self.max_batches is not None and len(exporter.batch_ids) >= self.max_batches:
                enough = True
                break
        exporter.trim(self.dealer.oldest_open_timestamp())
        self._checkpoint()
        return enough

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if not self.position % _TRIM_EVERY:
            self.exporter.trim(self.dealer.oldest_open_timestamp())
        if now - self.last_checkpoint >= self.checkpoint_every_s:
            self._checkpoint()
        if self.progress is not None and now - self.last_report >= self.progress_every_s:
            self.last_report = now
            self.progress(self._snapshot())

    def _logging_add_tick(self) -> Callable[[Tick], None]:
        """add_tick for a source that cannot resume: each tick goes to the spool first."""
        log_tick, buffer_tick = self.spool.log_tick, self.exporter.add_tick

        def add_tick(tick: Tick) -> None:
            log_tick(tick)
            buffer_tick(tick)

        return add_tick

    def _checkpoint(self) -> None:
        if not self.checkpoints_on:
            return
        exporter = self.exporter
        exporter.trim(self.dealer.oldest_open_timestamp())
        last = exporter.last_tick
        self.spool.checkpoint(
            {
                "position": self.position,
                "last_tick": list(last) if last is not None else None,
                "dealer": self.dealer.state(),
                "exporter": exporter.state(with_ticks=not self.source.resumable),
            }
        )
        self.last_checkpoint = time.monotonic()

    def _snapshot(self) -> StreamStats:
        stats, exporter = self.stats, self.exporter
        stats.ticks = self.position - stats.resumed_at
        stats.open_orders = self.dealer.open_orders
        stats.resolved = self.dealer.resolved_count
        stats.pending = exporter.pending
        stats.buffered_ticks = exporter.buffered_ticks
        stats.batches_written = len(exporter.batch_ids)
        stats.elapsed_seconds = time.monotonic() - self.started
        return replace(stats, batch_ids=list(exporter.batch_ids))
