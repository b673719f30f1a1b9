"""The streaming loop: source -> dealer -> exporter, until enough batches, a stop, or the end.

`run_stream` is the one entry point: the `ml-demo stream` command, `ml-demo demo` and the
Dagster side all call it. A batch is written whole or not at all: the stop event is only
looked at between ticks, and whatever is resolved but short of a full batch when the run
ends is left unexported (the next run starts afresh; batches never hold partial data).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ml_demo_dagster.config import ProjectConfig
from ml_demo_dagster.core.store import ObjectStore
from streamer.dealer import Dealer, NaiveDealer
from streamer.exporter import Exporter
from streamer.sources.base import MarketSource

_TRIM_EVERY = 16_384  # ticks between price-buffer trims (besides one after every batch)


@dataclass
class StreamStats:
    """What a run did so far (or in all, once run_stream returns)."""

    ticks: int = 0
    open_orders: int = 0
    resolved: int = 0
    batches_written: int = 0
    batch_ids: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    stopped: bool = False  # True when the stop event ended the run
    store_url: str = ""

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
) -> StreamStats:
    """Stream ticks through the dealer into batches in `store`; returns what was done.

    `dealer` defaults to a fresh Dealer with the config's stop, limit and point value
    (the benchmark passes a NaiveDealer to compare).
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 (got {max_batches})")
    stop = stop if stop is not None else threading.Event()
    if dealer is None:
        dealer = Dealer(config.dealer.stop, config.dealer.limit, config.market.point_value)
    exporter = Exporter(store, batch_size=config.export.batch_size, price_lead_seconds=config.export.price_lead_seconds)
    stats = StreamStats(store_url=store.url)
    started = last_report = time.monotonic()

    def snapshot() -> StreamStats:
        stats.open_orders = dealer.open_orders
        stats.resolved = dealer.resolved_count
        stats.batches_written = len(exporter.batch_ids)
        stats.batch_ids = list(exporter.batch_ids)
        stats.elapsed_seconds = time.monotonic() - started
        return replace(stats, batch_ids=list(stats.batch_ids))

    # The hot loop uses local names only: it runs once per tick. Housekeeping (trimming the
    # price buffer, progress) runs every 256 ticks for an unpaced source, and on every tick
    # for a paced one (slow ticks).
    housekeeping_mask = 0 if source.speed else 255
    on_tick = dealer.on_tick
    add_tick = exporter.add_tick
    add_deals = exporter.add_deals
    stop_is_set = stop.is_set
    batch_size = exporter.batch_size
    clock = time.monotonic
    ticks = 0
    done = False
    gc_threshold = gc.get_threshold()
    try:
        # The loop makes and drops a few small tuples per tick; the collector's default
        # (a young-generation pass every 700 allocations) costs ~20% of the throughput.
        gc.set_threshold(50_000, *gc_threshold[1:])
        for ticks, tick in enumerate(source, 1):
            add_tick(tick)
            resolved = on_tick(tick[0], tick[2])
            if resolved:
                add_deals(resolved)
                if exporter.pending >= batch_size:
                    while exporter.pending >= batch_size:
                        exporter.export_batch()
                        if max_batches is not None and len(exporter.batch_ids) >= max_batches:
                            done = True
                            break
                    exporter.trim(dealer.oldest_open_timestamp())
                    if done:
                        break
            if not ticks & housekeeping_mask:
                if not ticks % _TRIM_EVERY:
                    exporter.trim(dealer.oldest_open_timestamp())
                if progress is not None and clock() - last_report >= progress_every_s:
                    last_report = clock()
                    stats.ticks = ticks
                    progress(snapshot())
            if stop_is_set():  # after the tick in hand is handled; no tick is taken and dropped
                stats.stopped = True
                break
        else:
            stats.stopped = stop_is_set()
    finally:
        gc.set_threshold(*gc_threshold)
        source.close()
        stats.ticks = ticks
    return snapshot()
