"""The exporter: turns resolved deals and the prices around them into staging batches.

When the resolved, unexported deals reach `export.batch_size`, exactly that many (the
earliest resolved) form a batch, sorted by opening time, and it is written as two objects
(DESIGN §4.1): first `staging/price-<T>.csv` with every tick from the earliest deal's
opening minus `export.price_lead_seconds` to the latest deal's opening tick (inclusive),
then `staging/deals-<T>.csv`. Each is one atomic `store.put_bytes`; the deals file is the
batch's commit mark, so a reader that sees it finds the price file there too.
T is the export's wall-clock time in epoch ms, strictly increasing within a stream and
never one whose files already exist in the store.

Uploads are idempotent. Batches are numbered in the stream (`seq`), and T is decided
before the upload: `before_upload(seq, T)` lets the streamer's spool record it (durably)
first. A batch whose upload failed or was cut short keeps its T (`decided`), so the retry,
in this run or after a restart, overwrites the same two keys with the same bytes instead
of writing a second copy under a new T.

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
from functools import partial
from operator import itemgetter

from ml_demo_dagster.core.staging import DEAL_SCHEMA, PRICE_SCHEMA, deals_key, price_key
from ml_demo_dagster.core.store import ObjectStore, StoreError
from streamer.dealer import Deal
from streamer.formatting import format_csv
from streamer.sources.base import Tick

_timestamp = itemgetter(0)
_make_deal = partial(tuple.__new__, Deal)
_make_tick = partial(tuple.__new__, Tick)


class Exporter:
    """Collects ticks and resolved deals; writes a whole batch when enough deals are resolved."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        batch_size: int,
        price_lead_seconds: float,
        clock: Callable[[], float] = time.time,
        before_upload: Callable[[int, str], None] | None = None,
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
        self._before_upload = before_upload
        self.seq = 0  # batches of the stream uploaded so far (earlier runs included)
        self.decided: dict[int, int] = {}  # seq -> T, decided but not known to be uploaded
        self.batch_ids: list[str] = []  # uploaded by this run
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

    @property
    def last_tick(self) -> Tick | None:
        """The newest tick buffered (every tick handled is, until a later one makes it old)."""
        return self._ticks[-1] if self._ticks else None

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
        batch_id = self._batch_id()
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
        del self.decided[self.seq]
        self.seq += 1
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

    def _batch_id(self) -> str:
        """T of the batch in hand: the one decided before, or a new one, recorded first."""
        t = self.decided.get(self.seq)
        if t is None:
            t = max(int(self._clock() * 1000), self._last_export_ms + 1)
            while self.store.exists(price_key(t)) or self.store.exists(deals_key(t)):
                t += 1
            self._last_export_ms = t
            self.decided[self.seq] = t
            if self._before_upload is not None:
                self._before_upload(self.seq, str(t))
        return str(t)

    def state(self, with_ticks: bool) -> dict:
        """What to start again from, as JSON values. The price buffer's ticks only
        `with_ticks`; otherwise just how many there are (the runner re-reads them)."""
        state = {
            "seq": self.seq,
            "last_export_ms": self._last_export_ms,
            "decided": {str(seq): t for seq, t in self.decided.items()},
            "pending": self._pending,
            "buffered": len(self._ticks),
        }
        if with_ticks:
            state["ticks"] = self._ticks
        return state

    def restore(self, state: dict, decided: dict[int, int]) -> None:
        """Continue from `state()` (the price buffer is refilled by the caller, or taken from
        the state), with the Ts decided since it was taken."""
        self._pending[:] = [_make_deal(d) for d in state["pending"]]
        self._ticks[:] = [_make_tick(t) for t in state.get("ticks", ())]
        self.seq = state["seq"]
        self.decided = {int(seq): t for seq, t in state["decided"].items()}
        self.decided.update((seq, t) for seq, t in decided.items() if seq >= self.seq)
        self._last_export_ms = max([state["last_export_ms"], *self.decided.values()])
