"""Replay: ticks from price files in the staging format (DESIGN §4.1), for reproducing a
batch, testing the dealer against known prices, and measuring the streamer.

All files are read and validated up front with `staging.read_prices`, before a single
tick is handed out, so bad input stops the run with the file, line and field at fault and
nothing written. Ticks come from the parsed Arrow table, turned into Python values a
chunk of rows at a time (the hot path of the replay benchmark), as fast as possible or
paced at `speed` market seconds per wall second.

A replay can resume (after a crash) from any tick: the streamer restarts it at a row of
the merged table. Its identity is the SHA-256 of each file, so a spool is never resumed
against different prices.

Several files are merged in time order. Price files of neighbouring batches overlap (each
starts `export.price_lead_seconds` before its earliest deal), so a row that repeats a row
of an earlier file at the same timestamp is replayed once.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ml_demo_dagster.core.staging import PRICE_COLUMNS, read_prices
from streamer.sources.base import MarketSource, SourceError, Tick

_new_tick = partial(tuple.__new__, Tick)  # Tick from a row tuple, without _make's Python frame


_CHUNK = 65_536  # rows turned into Python values at a time: memory stays near the Arrow table's


def _column_list(column: pa.ChunkedArray | pa.Array) -> list:
    if column.null_count == 0 and not pa.types.is_string(column.type):
        return column.to_numpy().tolist()  # much faster than to_pylist, same Python values
    return column.to_pylist()


def _merge(tables: list[pa.Table]) -> pa.Table:
    """All tables' rows in stable time order, rows repeated from an earlier file dropped."""
    if len(tables) == 1:
        table = tables[0]
        ts = table.column("timestamp")
        if len(ts) > 1 and pc.any(pc.less(ts[1:], ts[:-1])).as_py():
            table = table.take(pc.sort_indices(table, [("timestamp", "ascending")]))
        return table
    combined = pa.concat_tables(tables).append_column(
        "_file", pa.array([i for i, t in enumerate(tables) for _ in range(t.num_rows)], pa.int32())
    )
    combined = combined.take(pc.sort_indices(combined, [("timestamp", "ascending"), ("_file", "ascending")]))
    columns = [_column_list(combined.column(c)) for c in PRICE_COLUMNS]
    files = combined.column("_file").to_pylist()
    keep: list[int] = []
    seen: dict[tuple, int] = {}  # rows at the current timestamp -> the file they came from
    current = None
    for i, (row, file) in enumerate(zip(zip(*columns, strict=True), files, strict=True)):
        if row[0] != current:
            current, seen = row[0], {}
        earlier = seen.get(row)
        if earlier is not None and earlier != file:
            continue
        seen.setdefault(row, file)
        keep.append(i)
    return combined.drop_columns(["_file"]).take(pa.array(keep, pa.int64()))


class ReplaySource(MarketSource):
    """Ticks from one or more staging price files, merged in time order."""

    name = "replay"
    resumable = True

    def __init__(
        self,
        files: Sequence[str | os.PathLike[str]],
        *,
        speed: float | None = None,
        stop: threading.Event | None = None,
    ):
        super().__init__(speed=speed, stop=stop)
        if not files:
            raise SourceError("replay needs at least one price file (--replay-file)")
        self.files = [Path(f) for f in files]
        tables = []
        for path in self.files:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise SourceError(f"replay file {path}: not found") from None
            except IsADirectoryError:
                raise SourceError(f"replay file {path}: is a directory, expected a price CSV") from None
            except OSError as e:
                raise SourceError(f"replay file {path}: cannot read: {e.strerror}") from None
            tables.append(read_prices(data, source=str(path)))  # StagingFormatError: file, line, field
        self._table = _merge(tables)

    def __len__(self) -> int:
        return self._table.num_rows

    def describe(self) -> str:
        names = self.files[0].name if len(self.files) == 1 else f"{len(self.files)} files"
        return f"replay of {names} ({len(self):,} ticks)" + (f" at {self.speed:g}x" if self.speed else "")

    def identity(self) -> dict:
        # Hashed here, not when read: only a run with a spool pays for it (~0.4 s per 100 MB).
        # The contents, not the names: the same prices under another name are the same stream.
        digests = []
        for path in self.files:
            try:
                with path.open("rb") as f:
                    digests.append(hashlib.file_digest(f, "sha256").hexdigest())
            except OSError as e:
                raise SourceError(f"replay file {path}: cannot read: {e.strerror}") from None
        return {"source": self.name, "sha256": digests}

    def _ticks(self) -> Iterator[Tick]:
        return self._ticks_from(0)

    def _ticks_from(self, start: int) -> Iterator[Tick]:
        for offset in range(start, self._table.num_rows, _CHUNK):
            chunk = self._table.slice(offset, _CHUNK)
            yield from map(_new_tick, zip(*(_column_list(chunk.column(c)) for c in PRICE_COLUMNS), strict=True))
