"""Staging CSV, written fast: `staging.format_rows`, byte for byte, vectorised with Arrow.

The exporter writes every tick and every deal once (ticks in the price lead twice), so
formatting is the replay benchmark's hot spot: `format_rows` spends ~1 µs per field in
Python. Here the rows become Arrow columns in one conversion, numbers are printed by
Arrow's shortest round-trip formatter, columns with few distinct values (daily
MID_OPEN/HIGH/LOW, MARKET_STATE, stop, limit, outcome) are printed once per distinct
value, and lines are joined by Arrow kernels into one buffer.

Arrow and Python (so format_rows, which follows JavaScript's JSON.stringify) print the
same digits but switch to exponent notation at different magnitudes: plain text is the
same for 1e-4 <= |x| < 1e10, zero, and missing or non-finite values (both empty). Any
value outside that is printed by format_rows itself, and rows with anything unexpected
(a string needing a JSON escape, a fraction in an integer column, a value of another type)
are formatted by format_rows whole, so the output never differs; tests compare the two.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml_demo_dagster.core.staging import format_rows

_PLAIN_LOW, _PLAIN_HIGH = 1e-4, 1e10
_EXACT_INT = 2.0**53
_NEEDS_ESCAPING = r'["\\\x00-\x1f]'  # what JSON.stringify escapes (format_rows does it)
_REFUSED = (TypeError, ValueError, OverflowError, pa.ArrowInvalid, pa.ArrowTypeError)


class _Fallback(Exception):
    """Something here would print differently from format_rows."""


def _reference(value: object) -> str:
    return format_rows([(value,)]).decode("utf-8")[:-1]


def _mostly_repeats(values: np.ndarray) -> bool:
    """True when neighbouring values are mostly equal (cheap proxy for few distinct values)."""
    return len(values) > 8 and np.count_nonzero(values[1:] != values[:-1]) * 4 < len(values)


def _per_distinct(array: pa.Array, text_of, repeats: bool) -> pa.Array:
    """text_of(array), computed once per distinct value when the values repeat a lot."""
    if not repeats:
        return text_of(array)
    encoded = pc.dictionary_encode(array)
    return pc.take(text_of(encoded.dictionary), encoded.indices)


def _float_text(column: pa.Array, rows: Sequence[Sequence[object]], index: int, suffix: str) -> pa.Array:
    numbers = column.to_numpy(zero_copy_only=False)  # missing -> nan
    magnitude = np.abs(numbers)
    odd = ~((magnitude >= _PLAIN_LOW) & (magnitude < _PLAIN_HIGH)) & np.isfinite(numbers) & (numbers != 0)
    blank = ~np.isfinite(numbers)  # None, nan, inf: an empty field
    zero = numbers == 0
    any_blank = blank.any()
    if any_blank or zero.any():
        numbers = numbers.copy()
        numbers[blank | zero] = 0.0  # also turns -0.0 (Arrow: "-0") into 0.0

    def text_of(a: pa.Array) -> pa.Array:
        text = pc.cast(a, pa.string())
        return pc.binary_join_element_wise(text, suffix, "") if suffix else text

    text = _per_distinct(pa.array(numbers), text_of, _mostly_repeats(numbers))
    if any_blank:
        text = pc.if_else(pa.array(blank), suffix, text)
    if odd.any():
        patched = text.to_pylist()
        for i in np.flatnonzero(odd).tolist():
            patched[i] = _reference(rows[i][index]) + suffix
        text = pa.array(patched, pa.string())
    return text


def _int_text(column: pa.Array, suffix: str) -> pa.Array:
    # Read as float64 (see format_csv): whole numbers below 2**53 are exact and print as ints.
    if column.null_count:
        raise _Fallback
    numbers = column.to_numpy()
    if not (np.all(np.abs(numbers) < _EXACT_INT) and np.all(numbers == np.floor(numbers))):
        raise _Fallback
    text = pc.cast(pa.array(numbers.astype(np.int64)), pa.string())
    return pc.binary_join_element_wise(text, suffix, "") if suffix else text


def _string_text(column: pa.Array, suffix: str) -> pa.Array:
    encoded = pc.dictionary_encode(column)
    distinct = encoded.dictionary
    if pc.any(pc.match_substring_regex(distinct, _NEEDS_ESCAPING)).as_py():
        raise _Fallback
    quoted = pc.binary_join_element_wise('"', distinct, '"' + suffix, "")
    return pc.take(quoted, encoded.indices).fill_null(suffix)


def format_csv(rows: Sequence[Sequence[object]], schema: pa.Schema) -> bytes:
    """staging.format_rows over the first len(schema) fields of each row, byte for byte."""
    if not rows:
        return b""
    width = len(schema)
    # Integer columns are read as float64: Arrow would silently truncate 0.5 into an int64.
    fields = [(f.name, pa.float64() if pa.types.is_integer(f.type) else f.type) for f in schema]
    fields += [(f"_extra{k}", pa.float64()) for k in range(len(rows[0]) - width)]
    try:
        table = pa.array(rows, type=pa.struct(fields))
        texts = []
        for i, field in enumerate(schema):
            column = table.field(i)
            suffix = "\n" if i == width - 1 else ""  # the line's end rides on its last field
            if pa.types.is_integer(field.type):
                texts.append(_int_text(column, suffix))
            elif pa.types.is_floating(field.type):
                texts.append(_float_text(column, rows, i, suffix))
            else:
                texts.append(_string_text(column, suffix))
    except (_Fallback, *_REFUSED):
        return format_rows([r[:width] for r in rows])
    lines = pc.binary_join_element_wise(*texts, ",")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return lines.buffers()[2].to_pybytes()[start:end]
