"""The staging contract (DESIGN §4.1, §4.9): the one strict reader and the writer of batch files.

A batch is two headerless CSV files with the same export time T: a price file and a deals
file. Strings are JSON-quoted, numbers bare, a missing value is an empty field, and a batch
written by the seed's Node.js streamer is accepted as it is (numbers as JavaScript prints
them, some numbers JSON-quoted, no line break after the last line). `format_rows` writes
exactly that (strings through JSON, as `JSON.stringify` does), and the reader decodes it, so
writing and reading round-trip.

Everything that reads a batch reads it here: the ingest assets, the feature job's Spark tasks
(on local Spark and on AWS Glue, which ships glue/ alone), `ml-demo features` and the replay
source. So a batch accepted by ingest is a batch the feature job can read, value for value.

Reading is strict and explains itself: any problem raises StagingFormatError naming the file,
the line (1-based) and the field. What is checked:
- the bytes: not empty, UTF-8, a byte-order mark or Windows (CRLF) line endings accepted and
  reported in `notes` (never silently), a lone CR or a blank line refused;
- the shape: the right number of fields on every line, well-formed JSON strings, no header
  row, a truncated last line named as such;
- the values: 13-digit epoch-ms timestamps, finite numbers, known outcomes and deal types,
  prices > 0 and within ABSURD_FACTOR of the file's median, BID <= OFFER, stop below and
  limit above the deal's price;
- the order: price rows strictly increasing in time (no duplicate timestamps); deals in any
  order (the seed wrote them as they resolved) but never two on one timestamp;
- the batch: every deal's opening tick is a row of the price file.

Speed: pyarrow's CSV reader splits the fields; a few byte counts confirm that the file uses
quoting the fast path reads exactly as JSON would. Files with JSON escapes, odd quoting or a
parse error go through a line-by-line tokenizer that decodes them exactly and names the line.
No Dagster, pydantic or AWS imports.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

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
NULLABLE = frozenset({"MID_OPEN", "CHANGE", "CHANGE_PCT", "HIGH", "LOW", "UPDATE_TIME", "MARKET_STATE", "MARKET_DELAY"})
OUTCOMES = ("loss", "profit")
DEAL_TYPES = ("buy",)
# Price levels (the tick's BID, OFFER, MID_OPEN, HIGH, LOW) farther than this factor from the
# file's median mid are refused as absurd: a misplaced digit is 10x, a day's range of a
# market is a few percent. (The file's own median: no config needed, nothing market-specific.)
ABSURD_FACTOR = 4.0
PRICE_LEVELS = ("BID", "OFFER", "MID_OPEN", "HIGH", "LOW")

BOM = b"\xef\xbb\xbf"
_TIMESTAMP_RE = "^[0-9]{13}$"
# One field: a JSON string, or bare text without quotes, commas or line breaks.
_FIELD = re.compile(r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"|[^",\r\n]*')
_SURROGATE = re.compile("[\ud800-\udfff]")


class StagingFormatError(ValueError):
    """A staging file breaks the contract. `str()` names file, line and field."""

    def __init__(self, source: str, reason: str, line: int | None = None, field: str | None = None):
        self.source, self.reason, self.line, self.field = source, reason, line, field
        where = source + (f" line {line}" if line is not None else "") + (f" field {field}" if field else "")
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # survives pickling (Spark sends task results to the driver)
        return type(self), (self.source, self.reason, self.line, self.field)

    def to_dict(self) -> dict:
        """{file, line, field, reason}: what a quarantine record says."""
        return {"file": self.source, "line": self.line, "field": self.field, "reason": self.reason}


@dataclass(frozen=True)
class ParsedFile:
    """One staging file as a typed table, and what was accepted but worth saying (BOM, CRLF)."""

    table: pa.Table
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StagingBatch:
    """A whole batch, both files valid and consistent with each other."""

    deals: pa.Table
    prices: pa.Table
    notes: tuple[str, ...] = ()


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


def js_string(text: str) -> str:
    """A string the way JavaScript's JSON.stringify prints it (the reader decodes it back)."""
    quoted = json.dumps(text, ensure_ascii=False)
    # JSON.stringify escapes lone surrogates; Python would leave them raw (not UTF-8 encodable).
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def _field(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return js_string(value)
    return js_number(value)  # type: ignore[arg-type]


def format_rows(rows: Iterable[Sequence[object]]) -> bytes:
    """Headerless CSV in the seed's format: strings JSON-quoted, numbers bare, None empty."""
    return "".join(",".join(_field(v) for v in row) + "\n" for row in rows).encode("utf-8")


def deals_rows(table: pa.Table) -> list[tuple]:
    """Rows of a deals table, in DEAL_COLUMNS order, for format_rows."""
    return list(zip(*(table.column(c).to_pylist() for c in DEAL_COLUMNS), strict=False))


def price_rows(table: pa.Table) -> list[tuple]:
    """Rows of a price table, in PRICE_COLUMNS order, for format_rows."""
    return list(zip(*(table.column(c).to_pylist() for c in PRICE_COLUMNS), strict=False))


# ---------------------------------------------------------------- reading: bytes to text fields


def _prepare(data: bytes, source: str) -> tuple[bytes, list[str]]:
    """The bytes after a byte-order mark, and notes on what was accepted; refuses what is not text."""
    if not data:
        raise StagingFormatError(source, "file is empty (0 bytes)")
    notes = []
    if data.startswith(BOM):
        data = data[len(BOM) :]
        notes.append(f"{source}: starts with a UTF-8 byte-order mark (accepted)")
    if data.isspace():  # stops at the first other byte: no pass over a normal file
        raise StagingFormatError(source, "file has no rows (only white space)")
    # Not UTF-8 and blank lines are found by the passes that read the fields (pyarrow checks
    # UTF-8 and keeps blank lines as rows; the exact pass names both): no extra pass here.
    if b"\r" in data:
        crlf = data.count(b"\r\n")
        if crlf != data.count(b"\r"):
            at = re.search(rb"\r(?!\n)", data).start()
            raise StagingFormatError(source, "a carriage return (CR) without a line feed", data[:at].count(b"\n") + 1)
        notes.append(f"{source}: Windows line endings (CRLF) on {crlf} line(s) (accepted)")
    return data, notes


def _fast_quoting_is_exact(data: bytes) -> bool:
    """True when every quote opens or closes a whole field and no field has a JSON escape, so
    pyarrow's CSV fields are exactly the JSON-decoded values (else the tokenizer decides).

    Vectorised over the quote positions: an opening quote follows a comma or a line break,
    a closing one precedes a comma or a line break, and they alternate."""
    if b"\\" in data:
        return False
    raw = np.frombuffer(data, dtype=np.uint8)
    at = np.flatnonzero(raw == ord('"'))
    if len(at) == 0:
        return True
    if len(at) % 2:
        return False
    before = raw[np.maximum(at - 1, 0)]
    after = raw[np.minimum(at + 1, len(raw) - 1)]
    opens = (at == 0) | (before == ord(",")) | (before == ord("\n"))
    closes = (at == len(raw) - 1) | (after == ord(",")) | (after == ord("\n")) | (after == ord("\r"))
    return bool(opens[0::2].all() and closes[1::2].all() and not (opens & closes).any())


def _read_fast(data: bytes, schema: pa.Schema) -> pa.Table | None:
    """The file read by pyarrow with the schema's types (timestamps as text, checked later);
    None when pyarrow cannot be trusted with this file or refuses it (the exact pass decides)."""
    if not _fast_quoting_is_exact(data):
        return None
    types = {f.name: pa.string() if f.name == "timestamp" else f.type for f in schema}
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=schema.names),
            parse_options=pacsv.ParseOptions(newlines_in_values=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    # A quote that survived into a text value was not where a JSON string puts it.
    for f in schema:
        if pa.types.is_string(f.type) and pc.any(pc.match_substring(table.column(f.name), '"')).as_py():
            return None
    return table.combine_chunks()


def _fields_exact(data: bytes, source: str, columns: Sequence[str]) -> list[pa.Array]:
    """Every field as text, line by line: JSON strings decoded, the first problem named exactly."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StagingFormatError(source, "not UTF-8 text", data[: e.start].count(b"\n") + 1) from None
    lines = text.split("\n")
    ends_with_break = text.endswith("\n")
    if ends_with_break:
        lines.pop()
    values: list[list[str]] = [[] for _ in columns]
    last = len(lines)
    for n, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        truncated = n == last and not ends_with_break
        if not line:
            raise StagingFormatError(source, "blank line", n)
        row, pos = [], 0
        while True:
            name = columns[len(row)] if len(row) < len(columns) else None
            m = _FIELD.match(line, pos)
            token = m.group()
            end = m.end()
            if end < len(line) and line[end] != ",":
                if line.startswith('"', pos) or line[end] == '"':
                    what = 'a quote inside a field (strings are JSON-quoted, inner quotes escaped \\")'
                    if line.startswith('"', pos) and truncated:
                        what = "truncated last line: a quoted string is not closed"
                    elif line.startswith('"', pos):
                        what = "a quoted string is not closed, or is not valid JSON"
                    raise StagingFormatError(source, what, n, name)
                raise StagingFormatError(source, f"unexpected character {line[end]!r}", n, name)
            if token.startswith('"'):
                try:
                    token = json.loads(token)
                    token.encode("utf-8")
                except (ValueError, UnicodeEncodeError):
                    raise StagingFormatError(source, "not a valid JSON string", n, name) from None
            row.append(token)
            if end >= len(line):
                break
            pos = end + 1
        if len(row) != len(columns):
            reason = f"expected {len(columns)} fields, found {len(row)}"
            if truncated and len(row) < len(columns):
                reason = f"truncated last line: {reason} and no line break at the end"
            raise StagingFormatError(source, reason, n)
        for column, value in zip(values, row, strict=True):
            column.append(value)
    return [pa.array(v, pa.string()) for v in values]


# ---------------------------------------------------------------- reading: text fields to values


def _first(mask: pa.Array | np.ndarray) -> int | None:
    """0-based index of the first true value, or None."""
    if isinstance(mask, np.ndarray):
        hits = np.flatnonzero(mask)
        return int(hits[0]) if len(hits) else None
    mask = mask.fill_null(False)
    return int(pc.index(mask, True).as_py()) if pc.any(mask).as_py() else None


def _header_check(first: pa.Array, source: str, column: str) -> None:
    if len(first) and str(first[0].as_py()).strip().lower() == column.lower():
        raise StagingFormatError(source, "a header row (staging files have none)", 1, column)


def _from_text(arrays: list[pa.Array], source: str, schema: pa.Schema) -> pa.Table:
    """Text fields (the exact pass) cast like the fast path casts them; the first value that
    does not cast is named. Empty = missing; the timestamp stays text (checked later)."""
    out = []
    for f, col in zip(schema, arrays, strict=True):
        if f.name == "timestamp" or pa.types.is_string(f.type):
            out.append(col)
            continue
        col = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
        try:
            out.append(pc.cast(col, f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad = next(i for i, v in enumerate(col.to_pylist()) if v is not None and not _is_number(v))
            raise StagingFormatError(source, f"{col[bad].as_py()[:40]!r} is not a number", bad + 1, f.name) from None
    return pa.Table.from_arrays(out, names=schema.names)


def _validated(table: pa.Table, source: str, schema: pa.Schema) -> pa.Table:
    """Required values present, timestamps 13 digits, numbers finite; the table with the schema's types."""
    out = []
    for f in schema:
        col = table.column(f.name)
        if f.name not in NULLABLE:
            bad = _first(pc.equal(col, "")) if pa.types.is_string(col.type) else _first_null(col)
            if bad is not None:
                if all(_is_empty(table.column(c)[bad]) for c in schema.names):  # pyarrow keeps blank lines as rows
                    raise StagingFormatError(source, "blank line", bad + 1)
                raise StagingFormatError(source, "required value is empty", bad + 1, f.name)
        if f.name == "timestamp":
            bad = _first(pc.invert(pc.match_substring_regex(col, _TIMESTAMP_RE)))
            if bad is not None:
                raise StagingFormatError(
                    source,
                    f"{col[bad].as_py()[:40]!r} is not an epoch time in milliseconds (13 digits, no fraction)",
                    bad + 1,
                    f.name,
                )
            col = pc.cast(col, pa.int64())
        elif pa.types.is_string(f.type):
            col = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col) if f.name in NULLABLE else col
        elif col.null_count < len(col) and not pc.all(pc.is_finite(col)).as_py():  # nulls are skipped
            bad = _first(pc.invert(pc.is_finite(col)))
            raise StagingFormatError(source, f"{_show(col[bad].as_py())} is not a finite number", bad + 1, f.name)
        out.append(col)
    return pa.Table.from_arrays(out, schema=schema)


def _first_null(col: pa.ChunkedArray | pa.Array) -> int | None:
    return _first(pc.is_null(col)) if col.null_count else None


def _is_empty(value: pa.Scalar) -> bool:
    return not value.is_valid or value.as_py() == ""


def _read(data: bytes, source: str, schema: pa.Schema) -> tuple[pa.Table, list[str]]:
    data, notes = _prepare(data, source)
    table = _read_fast(data, schema)
    if table is None:
        fields = _fields_exact(data, source, schema.names)
        _header_check(fields[0], source, schema.names[0])
        table = _from_text(fields, source, schema)
    return _validated(table, source, schema), notes


def _is_number(text: str) -> bool:
    """Whether Arrow reads `text` as a float64 (the error path: one value at a time)."""
    try:
        pc.cast(pa.array([text]), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _show(x: float) -> str:
    x = float(x)
    return js_number(x) if math.isfinite(x) else repr(x)


def _check_levels(table: pa.Table, source: str) -> None:
    bid, offer = table.column("BID").to_numpy(), table.column("OFFER").to_numpy()
    for name, values in (("BID", bid), ("OFFER", offer)):
        bad = _first(~(values > 0))
        if bad is not None:
            raise StagingFormatError(source, f"{_show(values[bad])} is not a price (must be > 0)", bad + 1, name)
    bad = _first(bid > offer)
    if bad is not None:
        raise StagingFormatError(source, f"BID {_show(bid[bad])} is above OFFER {_show(offer[bad])}", bad + 1, "BID")
    median = float(np.median((bid + offer) / 2))
    lo, hi = median / ABSURD_FACTOR, median * ABSURD_FACTOR
    for name in PRICE_LEVELS:
        values = table.column(name).to_numpy(zero_copy_only=False)
        bad = _first(~np.isnan(values) & ((values < lo) | (values > hi)))
        if bad is not None:
            raise StagingFormatError(
                source,
                f"{_show(values[bad])} is absurd: more than {ABSURD_FACTOR:g}x away from the file's median mid {median:g}",
                bad + 1,
                name,
            )


def _check_price_order(ts: np.ndarray, source: str) -> None:
    bad = _first(ts[1:] <= ts[:-1])
    if bad is not None:
        line = bad + 2
        what = "repeats" if ts[bad + 1] == ts[bad] else "is before"
        raise StagingFormatError(
            source,
            f"{ts[bad + 1]} {what} the timestamp of line {line - 1} ({ts[bad]}): price rows must be in time "
            "order, one row per timestamp",
            line,
            "timestamp",
        )


def _check_deals(table: pa.Table, source: str) -> None:
    for name, allowed in (("loss_or_profit", OUTCOMES), ("type", DEAL_TYPES)):
        col = table.column(name)
        bad = _first(pc.invert(pc.is_in(col, pa.array(allowed))))
        if bad is not None:
            raise StagingFormatError(source, f"{col[bad].as_py()!r} is not one of {', '.join(allowed)}", bad + 1, name)
    for name in ("stop", "limit", "price"):
        values = table.column(name).to_numpy()
        bad = _first(~(values > 0))
        if bad is not None:
            raise StagingFormatError(source, f"{_show(values[bad])} is not > 0", bad + 1, name)
    price = table.column("price").to_numpy()
    for name, wrong in (("stop_price", np.greater_equal), ("limit_price", np.less_equal)):
        values = table.column(name).to_numpy()
        bad = _first(wrong(values, price))
        if bad is not None:
            side = "below" if name == "stop_price" else "above"
            raise StagingFormatError(
                source, f"{_show(values[bad])} is not {side} price {_show(price[bad])}", bad + 1, name
            )
    ts = table.column("timestamp").to_numpy()
    order = np.argsort(ts, kind="stable")
    repeats = np.flatnonzero(ts[order][1:] == ts[order][:-1])
    if len(repeats):
        lines = sorted(int(i) + 1 for i in order[repeats[:1].tolist() + (repeats[:1] + 1).tolist()])
        raise StagingFormatError(
            source,
            f"{ts[lines[1] - 1]} is also the timestamp of line {lines[0]}: one deal per tick",
            lines[1],
            "timestamp",
        )


def parse_prices(data: bytes, source: str = "price") -> ParsedFile:
    """A price file, validated (values, levels, time order), as a PRICE_SCHEMA table and notes."""
    table, notes = _read(data, source, PRICE_SCHEMA)
    _check_levels(table, source)
    _check_price_order(table.column("timestamp").to_numpy(), source)
    return ParsedFile(table, tuple(notes))


def parse_deals(data: bytes, source: str = "deals") -> ParsedFile:
    """A deals file, validated (values, outcomes, levels, one deal per tick), as a DEAL_SCHEMA table and notes."""
    table, notes = _read(data, source, DEAL_SCHEMA)
    _check_deals(table, source)
    return ParsedFile(table, tuple(notes))


def read_prices(data: bytes, source: str = "price") -> pa.Table:
    """parse_prices, the table only."""
    return parse_prices(data, source).table


def read_deals(data: bytes, source: str = "deals") -> pa.Table:
    """parse_deals, the table only."""
    return parse_deals(data, source).table


def read_batch(
    deals_data: bytes, price_data: bytes, deals_source: str = "deals", price_source: str = "price"
) -> StagingBatch:
    """Both files of a batch, each validated, and every deal's opening tick found in the price file.

    The price file is read first (the exporter writes it first); the first problem found
    raises StagingFormatError naming its file, line and field.
    """
    prices = parse_prices(price_data, price_source)
    deals = parse_deals(deals_data, deals_source)
    price_ts = prices.table.column("timestamp").to_numpy()  # strictly increasing: checked
    deal_ts = deals.table.column("timestamp").to_numpy()
    at = np.minimum(np.searchsorted(price_ts, deal_ts), len(price_ts) - 1)
    bad = _first(price_ts[at] != deal_ts)
    if bad is not None:
        missing = int((price_ts[at] != deal_ts).sum())
        raise StagingFormatError(
            deals_source,
            f"no row of {price_source} has timestamp {deal_ts[bad]} (the deal's opening tick; "
            f"{missing} of {len(deal_ts)} deals have no tick, prices span {price_ts[0]}..{price_ts[-1]})",
            bad + 1,
            "timestamp",
        )
    return StagingBatch(deals.table, prices.table, prices.notes + deals.notes)
