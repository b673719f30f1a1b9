"""The staging contract (DESIGN §4.1): the boundary between the streamer and the pipeline.

A batch is the pair `staging/price-<T>.csv` + `staging/deals-<T>.csv` (T = export time,
epoch ms, 13 digits), complete only when both exist. Files are headerless CSV, strings
JSON-quoted, numbers bare; a batch written by the seed's Node.js streamer is accepted as
it is (numbers as JavaScript prints them, some numbers JSON-quoted, empty = missing).

Reading is strict and explains itself: any problem raises StagingFormatError naming the
file, the line (1-based) and the field. Parsing runs through pyarrow's CSV reader; when
that rejects a file, a line-by-line pass finds the exact place to report.
No Dagster or AWS imports.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

STAGING_PREFIX = "staging/"
DEALS_PREFIX = STAGING_PREFIX + "deals-"
PRICE_PREFIX = STAGING_PREFIX + "price-"
_KEY_RE = re.compile(r"^staging/(deals|price)-(\d{13})\.csv$")

DEAL_COLUMNS = ("timestamp", "loss_or_profit", "type", "stop", "limit", "price", "stop_price", "limit_price")
PRICE_COLUMNS = (
    "timestamp", "BID", "OFFER", "MID_OPEN", "CHANGE", "CHANGE_PCT", "HIGH", "LOW",
    "UPDATE_TIME", "MARKET_STATE", "MARKET_DELAY",
)  # fmt: skip
DEAL_SCHEMA = pa.schema(
    [("timestamp", pa.int64()), ("loss_or_profit", pa.string()), ("type", pa.string())]
    + [(c, pa.float64()) for c in DEAL_COLUMNS[3:]]
)
PRICE_SCHEMA = pa.schema(
    [("timestamp", pa.int64())]
    + [(c, pa.float64()) for c in PRICE_COLUMNS[1:8]]
    + [("UPDATE_TIME", pa.string()), ("MARKET_STATE", pa.string()), ("MARKET_DELAY", pa.float64())]
)
# Fields that may be empty (a missing value); all others are required on every line.
_NULLABLE = {"MID_OPEN", "CHANGE", "CHANGE_PCT", "HIGH", "LOW", "UPDATE_TIME", "MARKET_STATE", "MARKET_DELAY"}
OUTCOMES = ("loss", "profit")
DEAL_TYPES = ("buy",)
MIN_EPOCH_MS, MAX_EPOCH_MS = 10**12, 10**13 - 1  # 13 digits: 2001-09-09 .. 2286-11-20


class StagingFormatError(ValueError):
    """A staging file breaks the contract. `str()` names file, line and field."""

    def __init__(self, source: str, reason: str, line: int | None = None, field: str | None = None):
        self.source, self.reason, self.line, self.field = source, reason, line, field
        where = source + (f" line {line}" if line is not None else "") + (f" field {field}" if field else "")
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class BatchKey:
    """One file of a batch, parsed from its key."""

    kind: str  # "deals" | "price"
    export_ms: int

    @property
    def batch_id(self) -> str:
        return str(self.export_ms)


def deals_key(batch_id: str | int) -> str:
    return f"{DEALS_PREFIX}{batch_id}.csv"


def price_key(batch_id: str | int) -> str:
    return f"{PRICE_PREFIX}{batch_id}.csv"


def parse_key(key: str) -> BatchKey | None:
    """The batch file a key names, or None for anything else under staging/."""
    m = _KEY_RE.match(key)
    return BatchKey(m.group(1), int(m.group(2))) if m else None


# ---------------------------------------------------------------- writing


def js_number(x: float | int) -> str:
    """A number the way JavaScript's JSON.stringify prints it (integers without '.0')."""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return ""  # JSON has no NaN: a missing value is an empty field
    if x.is_integer() and abs(x) < 1e21:
        return str(int(x))
    return repr(x)


def _field(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return js_number(value)  # type: ignore[arg-type]


def format_rows(rows: Iterable[Sequence[object]]) -> bytes:
    """Headerless CSV in the seed's format: strings JSON-quoted, numbers bare, None empty."""
    return "".join(",".join(_field(v) for v in row) + "\n" for row in rows).encode("utf-8")


# ---------------------------------------------------------------- reading


def _locate(data: bytes, source: str, columns: Sequence[str], schema: pa.Schema) -> StagingFormatError:
    """Find the first line and field that break the contract (the slow, exact pass)."""
    text = data.decode("utf-8", errors="replace")
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if len(row) != len(columns):
            return StagingFormatError(source, f"expected {len(columns)} fields, found {len(row)}", n)
        for name, value in zip(columns, row, strict=False):
            kind = schema.field(name).type
            if value == "":
                if name not in _NULLABLE:
                    return StagingFormatError(source, "required value is empty", n, name)
                continue
            if pa.types.is_string(kind):
                continue
            try:
                number = float(value)
            except ValueError:
                return StagingFormatError(source, f"{value[:40]!r} is not a number", n, name)
            if pa.types.is_integer(kind) and not number.is_integer():
                return StagingFormatError(source, f"{value[:40]!r} is not a whole number", n, name)
    return StagingFormatError(source, "not readable as CSV")


def _read(data: bytes, source: str, columns: Sequence[str], schema: pa.Schema) -> pa.Table:
    if not data.strip():
        raise StagingFormatError(source, "file is empty")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise StagingFormatError(source, "not UTF-8 text", line) from None
    # The seed's streamer JSON-quoted some numbers; read every field as text, then cast.
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=list(columns)),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid:
        raise _locate(data, source, columns, schema) from None
    if table.num_rows == 0:
        raise StagingFormatError(source, "file has no rows")
    arrays = []
    for name in columns:
        col = table.column(name)
        empty = pc.equal(col, "")
        if name not in _NULLABLE and pc.any(empty).as_py():
            line = int(pc.index(empty, True).as_py()) + 1
            raise StagingFormatError(source, "required value is empty", line, name)
        col = pc.if_else(empty, pa.scalar(None, pa.string()), col)
        kind = schema.field(name).type
        if not pa.types.is_string(kind):
            try:
                as_float = pc.cast(col, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise _locate(data, source, columns, schema) from None
            if pa.types.is_integer(kind):
                try:
                    col = pc.cast(as_float, kind)  # refuses fractions and overflow
                except pa.ArrowInvalid:
                    raise _locate(data, source, columns, schema) from None
            else:
                col = as_float
        arrays.append(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
    return pa.Table.from_arrays(arrays, schema=schema)


def _first_bad(mask: pa.Array | pa.ChunkedArray) -> int | None:
    if not pc.any(mask).as_py():
        return None
    return int(pc.index(mask, True).as_py()) + 1


def _check_epoch(table: pa.Table, source: str) -> None:
    ts = table.column("timestamp")
    line = _first_bad(pc.or_(pc.less(ts, MIN_EPOCH_MS), pc.greater(ts, MAX_EPOCH_MS)))
    if line is not None:
        value = ts[line - 1].as_py()
        raise StagingFormatError(source, f"{value} is not an epoch time in milliseconds (13 digits)", line, "timestamp")


def read_deals(data: bytes, source: str = "deals") -> pa.Table:
    """Parse and validate a deals file into a table with DEAL_SCHEMA (rows in file order)."""
    table = _read(data, source, DEAL_COLUMNS, DEAL_SCHEMA)
    _check_epoch(table, source)
    for name, allowed in (("loss_or_profit", OUTCOMES), ("type", DEAL_TYPES)):
        line = _first_bad(pc.invert(pc.is_in(table.column(name), pa.array(allowed))))
        if line is not None:
            value = table.column(name)[line - 1].as_py()
            raise StagingFormatError(source, f"{value!r} is not one of {', '.join(allowed)}", line, name)
    for name in ("stop", "limit", "price"):
        line = _first_bad(pc.invert(pc.greater(table.column(name), 0)))
        if line is not None:
            raise StagingFormatError(source, f"{table.column(name)[line - 1].as_py()} is not > 0", line, name)
    price = table.column("price")
    for name, op in (("stop_price", pc.greater_equal), ("limit_price", pc.less_equal)):
        line = _first_bad(op(table.column(name), price))
        if line is not None:
            side = "below" if name == "stop_price" else "above"
            raise StagingFormatError(source, f"{table.column(name)[line - 1].as_py()} is not {side} price", line, name)
    return table


def read_prices(data: bytes, source: str = "price") -> pa.Table:
    """Parse and validate a price file into a table with PRICE_SCHEMA (rows in file order)."""
    table = _read(data, source, PRICE_COLUMNS, PRICE_SCHEMA)
    _check_epoch(table, source)
    for name in ("BID", "OFFER"):
        col = table.column(name)
        line = _first_bad(pc.invert(pc.is_finite(col)))
        if line is not None:
            raise StagingFormatError(source, f"{col[line - 1].as_py()} is not a finite price", line, name)
    return table


def deals_rows(table: pa.Table) -> list[tuple]:
    """Rows of a deals table, in DEAL_COLUMNS order, for format_rows."""
    return list(zip(*(table.column(c).to_pylist() for c in DEAL_COLUMNS), strict=False))


def price_rows(table: pa.Table) -> list[tuple]:
    """Rows of a price table, in PRICE_COLUMNS order, for format_rows."""
    return list(zip(*(table.column(c).to_pylist() for c in PRICE_COLUMNS), strict=False))
