"""What every market source gives the streamer: a stream of ticks, and a way to stop it.

A tick is one price update of the market, with the fields the seed's streamer subscribed
to (DESIGN §2) in the order of a staging price row (staging.PRICE_COLUMNS), so a tick *is*
a price row and the exporter writes it as it is. Sources differ only in where ticks come
from (simulated, replayed from price files, or IG live in a later issue); pacing in market
time (`speed`) and stopping are shared here. No Dagster or AWS imports.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import NamedTuple


class Tick(NamedTuple):
    """One price update; field order equals staging.PRICE_COLUMNS."""

    timestamp: int  # epoch ms
    bid: float
    offer: float
    mid_open: float | None
    change: float | None
    change_pct: float | None
    high: float | None
    low: float | None
    update_time: str | None
    market_state: str | None
    market_delay: float | None


class SourceError(ValueError):
    """A source cannot be built from what was asked (unknown name, bad option, missing file)."""


def paced(ticks: Iterable[Tick], speed: float, stop: threading.Event, clock=time.monotonic) -> Iterator[Tick]:
    """Yield ticks no faster than `speed` market seconds per wall second; end early on `stop`.

    Each tick has a deadline on the monotonic clock (start + market time elapsed / speed)
    and the wait is on the stop event, so a stop interrupts a long wait at once and the
    pace does not drift however long each tick takes to handle.
    """
    if not speed > 0:
        raise SourceError(f"speed must be > 0 (got {speed})")
    start_wall = start_market = None
    for tick in ticks:
        if start_market is None:
            start_wall, start_market = clock(), tick[0]
        else:
            deadline = start_wall + (tick[0] - start_market) / 1000.0 / speed
            remaining = deadline - clock()
            while remaining > 0:
                if stop.wait(remaining):
                    return
                remaining = deadline - clock()
        if stop.is_set():
            return
        yield tick


class MarketSource(ABC):
    """An iterable of ticks in non-decreasing time order, optionally paced, that can be closed."""

    name: str = "source"

    def __init__(self, *, speed: float | None = None, stop: threading.Event | None = None):
        if speed is not None and not speed > 0:
            raise SourceError(f"--speed must be > 0 (got {speed})")
        self.speed = speed
        self._stop = stop if stop is not None else threading.Event()

    @abstractmethod
    def _ticks(self) -> Iterator[Tick]:
        """The source's ticks, as fast as they can be made."""

    def __iter__(self) -> Iterator[Tick]:
        ticks = self._ticks()
        return paced(ticks, self.speed, self._stop) if self.speed else ticks

    def close(self) -> None:
        """Stop the stream: a paced wait ends at once and no further tick is yielded."""
        self._stop.set()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def describe(self) -> str:
        """One line saying what this source streams, for progress and logs."""
        return self.name + (f" at {self.speed:g}x" if self.speed else "")
