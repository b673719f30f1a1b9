"""What every market source gives the streamer: a stream of ticks, and a way to stop it.

A tick is one price update of the market, with the fields the seed's streamer subscribed
to (DESIGN §2) in the order of a staging price row (staging.PRICE_COLUMNS), so a tick *is*
a price row and the exporter writes it as it is. Sources differ only in where ticks come
from (simulated, replayed from price files, or IG live in a later issue); pacing in market
time (`speed`) and stopping are shared here. No Dagster or AWS imports.

Resuming after a crash (streamer/spool.py): a source that can hand out its ticks again,
the same ones in the same order, sets `resumable = True` and says in `identity()` what
makes its stream the one it is (replay: the files' contents; sim: seed and start time); the
streamer then restarts it after the ticks it had already handled (`resume`), and spools
nothing per tick. A live feed cannot do that: it leaves `resumable` False, the streamer
writes each of its ticks to the spool as it arrives, and after a restart the feed simply
continues live (the ticks missed while the streamer was down are a gap).
"""

from __future__ import annotations

import itertools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, NamedTuple


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
    #: True when the source can hand out its ticks again from any position, the same ticks in
    #: the same order (see the module docstring). A live feed leaves this False.
    resumable: ClassVar[bool] = False

    def __init__(self, *, speed: float | None = None, stop: threading.Event | None = None):
        if speed is not None and not speed > 0:
            raise SourceError(f"--speed must be > 0 (got {speed})")
        self.speed = speed
        self._stop = stop if stop is not None else threading.Event()
        self._start = 0  # ticks to skip (resume)
        self._unpaced = 0  # of the ticks after those, how many to hand out without pacing

    @abstractmethod
    def _ticks(self) -> Iterator[Tick]:
        """The source's ticks, as fast as they can be made."""

    def _ticks_from(self, start: int) -> Iterator[Tick]:
        """The ticks after the first `start` ones. This default makes and drops those; a
        source that can seek (replay) overrides it."""
        ticks = self._ticks()
        next(itertools.islice(ticks, start, start), None)  # advance `start` ticks in C
        return ticks

    def identity(self) -> dict[str, Any]:
        """What makes this source's stream the one it is: a spool written for a different
        identity is not resumed with this source (JSON values; `source` is the name)."""
        return {"source": self.name}

    def adopt(self, identity: dict[str, Any]) -> None:
        """Take over, from the identity of the stream being resumed, choices the user left
        open (sim: its seed and start time). The default has none."""
        return

    def resume(self, start: int, unpaced: int = 0) -> None:
        """Make the next iteration start after the first `start` ticks, the first `unpaced`
        of those that follow handed out at once (the streamer re-reads them to rebuild its
        price buffer), the rest paced as usual. Only for a resumable source."""
        if not self.resumable:
            raise SourceError(f"source {self.name!r} cannot resume: its ticks cannot be handed out again")
        if start < 0 or unpaced < 0:
            raise ValueError(f"start and unpaced must be >= 0 (got {start}, {unpaced})")
        self._start, self._unpaced = start, unpaced

    def __iter__(self) -> Iterator[Tick]:
        ticks = self._ticks_from(self._start) if self._start else self._ticks()
        if not self.speed:
            return ticks
        if self._unpaced:
            return itertools.chain(itertools.islice(ticks, self._unpaced), paced(ticks, self.speed, self._stop))
        return paced(ticks, self.speed, self._stop)

    def close(self) -> None:
        """Stop the stream: a paced wait ends at once and no further tick is yielded."""
        self._stop.set()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def describe(self) -> str:
        """One line saying what this source streams, for progress and logs."""
        return self.name + (f" at {self.speed:g}x" if self.speed else "")
