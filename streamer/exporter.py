"""The exporter: turns resolved deals and the prices around them into staging batches.

When the resolved, unexported deals reach `export.batch_size`, exactly that many (the
earliest resolved) form a batch, sorted by opening time, and it is written as two objects
(DESIGN §4.1): first `staging/price-<T>.csv` with every tick from the earliest deal's
opening minus `export.price_lead_seconds` to the latest deal's opening tick (inclusive),
then `staging/deals-<T>.csv`. Each is one atomic `store.put_bytes`; the deals file is the
batch's commit mark, so a reader that sees it finds the price file there too.
T is the export's wall-clock time in epoch ms, strictly increasing within a run and never
one whose files already exist in the store.

Memory stays bounded: the price buffer keeps only ticks a pending deal's price file can
still need (from the oldest open or unexported deal's opening minus the lead, to now).
Files are formatted by `streamer.formatting.format_csv`: byte for byte what
`staging.format_rows` writes, at a fraction of the cost.
"""

from __future__ import annotations

import contextlib
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from operator import itemgetter

from ml_demo_dagster.core.staging import DEAL_SCHEMA, PRICE_SCHEMA, deals_key, price_key
from ml_demo_dagster.core.store import ObjectStore, StoreError
from streamer.dealer import Deal
from streamer.formatting import format_csv
from streamer.sources.base import Tick

_timestamp = itemgetter(0)


class Exporter:
    """Collects ticks and resolved deals; writes a whole batch when enough deals are resolved."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        batch_size: int,
        price_lead_seconds: float,
        clock: Callable[[], float] = time.time,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        self.store = store
        self.batch_size = batch_size
        self.price_lead_ms = int(round(price_lead_seconds * 1000))
        self._clock = clock
        self._ticks: list[Tick] = []
        self._pending: list[Deal] = []  # resolved, not yet exported, in resolution order
        self._last_export_ms = 0
        self.batch_ids: list[str] = []
        # The hot path binds these directly; trimming edits the lists in place.
        self.add_tick: Callable[[Tick], None] = self._ticks.append
        self.add_deals: Callable[[Iterable[Deal]], None] = self._pending.extend

    @property
    def pending(self) -> int:
        """Resolved deals waiting for a batch."""
        return len(self._pending)

    @property
    def buffered_ticks(self) -> int:
        return len(self._ticks)

    @property
    def oldest_buffered_ms(self) -> int | None:
        """Timestamp of the oldest tick still buffered for a future price file."""
        return self._ticks[0][0] if self._ticks else None

    def ready(self) -> bool:
        """True when a whole batch can be written."""
        return len(self._pending) >= self.batch_size

    def export_batch(self) -> str:
        """Write the next batch (price file, then deals file); returns its id T."""
        if not self.ready():
            raise RuntimeError(f"only {len(self._pending)} of {self.batch_size} deals are resolved")
        batch = self._pending[: self.batch_size]
        batch.sort(key=_timestamp)  # stable: equal opening times stay in resolution order
        lo = bisect_left(self._ticks, batch[0].timestamp - self.price_lead_ms, key=_timestamp)
        hi = bisect_right(self._ticks, batch[-1].timestamp, key=_timestamp)
        price_data = format_csv(self._ticks[lo:hi], PRICE_SCHEMA)
        deals_data = format_csv(batch, DEAL_SCHEMA)
        batch_id = self._next_batch_id()
        self.store.put_bytes(price_key(batch_id), price_data)
        try:
            self.store.put_bytes(deals_key(batch_id), deals_data)
        except BaseException:
            # Without its deals file the batch is incomplete: take the price file back.
            # If that fails too, the sensor still never runs it: it waits for the deals file.
            with contextlib.suppress(StoreError):
                self.store.delete(price_key(batch_id))
            raise
        del self._pending[: self.batch_size]
        self.batch_ids.append(batch_id)
        return batch_id

    def trim(self, oldest_open_ms: int | None) -> None:
        """Drop ticks no pending or still-open deal's price file can need."""
        if not self._ticks:
            return
        needed = self._ticks[-1][0] if oldest_open_ms is None else oldest_open_ms
        if self._pending:
            needed = min(needed, min(map(_timestamp, self._pending)))
        cut = bisect_left(self._ticks, needed - self.price_lead_ms, key=_timestamp)
        if cut:
            del self._ticks[:cut]

    def _next_batch_id(self) -> str:
        t = max(int(self._clock() * 1000), self._last_export_ms + 1)
        while self.store.exists(price_key(t)) or self.store.exists(deals_key(t)):
            t += 1
        self._last_export_ms = t
        return str(t)
