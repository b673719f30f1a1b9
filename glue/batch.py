"""One batch, from its two staging CSVs to its parquet part file: shared by both faces of the job.

The Spark job (in its tasks) and the single-process job call `run_batch`, so they parse
the seed's CSV format the same way (explicit types: quoted numbers such as "0" parse, an
empty field is a missing value), feed the same arrays to the kernel and write the same
parquet. No Spark, Dagster or AWS imports.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from glue import files
from glue.contract import DEAL_COLUMNS, OUTPUT_COLUMNS, PRICE_COLUMNS, BatchInput, pack_features
from glue.feature_kernel import KernelResult, compute_features

_STRINGS = {"loss_or_profit", "type", "UPDATE_TIME", "MARKET_STATE"}
OUTPUT_SCHEMA = pa.schema([
    ("batch", pa.string()), ("timestamp", pa.int64()), ("label", pa.int8()),
    ("duration_ms", pa.int64()), ("duration_known", pa.bool_()), ("features", pa.binary()),
])  # fmt: skip
assert tuple(OUTPUT_SCHEMA.names) == OUTPUT_COLUMNS


class BatchFormatError(ValueError):
    """A staging file the job cannot parse (the message names the file)."""


def read_staging_csv(source: bytes | str | os.PathLike, columns: Sequence[str], name: str = "") -> pa.Table:
    """A headerless staging CSV (bytes or a path) as a typed table; empty numbers are null."""
    types = {c: pa.int64() if c == "timestamp" else pa.string() if c in _STRINGS else pa.float64() for c in columns}
    data = pa.BufferReader(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        return pacsv.read_csv(
            data,
            read_options=pacsv.ReadOptions(column_names=list(columns)),
            convert_options=pacsv.ConvertOptions(column_types=types, include_columns=list(columns)),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise BatchFormatError(f"{name or source}: {e}") from None


def batch_features(deals_csv, price_csv, history_seconds: int, names: tuple[str, str] = ("", "")) -> KernelResult:
    """The kernel's result for one batch's deals and price CSVs (bytes or paths)."""
    deals = read_staging_csv(deals_csv, DEAL_COLUMNS, names[0])
    prices = read_staging_csv(price_csv, PRICE_COLUMNS, names[1])
    buys = deals.filter(pc.equal(deals.column("type"), "buy"))

    def num(table: pa.Table, column: str) -> np.ndarray:
        return table.column(column).to_numpy()

    return compute_features(
        num(prices, "timestamp"), num(prices, "BID"), num(prices, "OFFER"),
        num(prices, "MID_OPEN"), num(prices, "HIGH"), num(prices, "LOW"),
        num(buys, "timestamp"), num(buys, "price"), num(buys, "stop_price"), num(buys, "limit_price"),
        buys.column("loss_or_profit").to_numpy(zero_copy_only=False),
        history_seconds=history_seconds,
    )  # fmt: skip


def output_batches(batch_id: str, result: KernelResult, chunk_rows: int = 8192) -> Iterator[pa.RecordBatch]:
    """The result as Arrow record batches with OUTPUT_SCHEMA, at most chunk_rows rows each."""
    n, width = result.features.shape
    for start in range(0, max(n, 1), chunk_rows):
        stop = min(n, start + chunk_rows)
        rows = stop - start
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(np.full(rows, batch_id, dtype=object), pa.string()),
                pa.array(result.timestamp[start:stop]),
                pa.array(result.label[start:stop]),
                pa.array(result.duration_ms[start:stop]),
                pa.array(result.duration_known[start:stop]),
                pack_features(result.features[start:stop].reshape(rows, width)),
            ],
            schema=OUTPUT_SCHEMA,
        )


@dataclass(frozen=True)
class PartResult:
    """What one batch's task did: its counts and the part file it wrote."""

    batch_id: str
    counts: dict[str, int]
    part_uri: str


def part_name(index: int) -> str:
    """The part file of the index-th batch of a job (deterministic: a retried task overwrites it)."""
    return f"part-{index:05d}.parquet"


def parquet_buffer(table: pa.Table) -> pa.Buffer:
    """The output table as parquet in memory: dictionary encoding off (wide float data), snappy."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, use_dictionary=False, compression="snappy")
    return sink.getvalue()


def run_batch(batch: BatchInput, index: int, out_uri: str, history_seconds: int) -> PartResult:
    """Read one batch's staging files, compute its features, write its part file under out_uri."""
    result = batch_features(
        files.read_bytes(batch.deals_uri), files.read_bytes(batch.price_uri), history_seconds,
        names=(batch.deals_uri, batch.price_uri),
    )  # fmt: skip
    table = pa.Table.from_batches(list(output_batches(batch.batch_id, result)), schema=OUTPUT_SCHEMA)
    part = files.join(out_uri, part_name(index))
    files.write_bytes(part, parquet_buffer(table))
    return PartResult(batch.batch_id, dict(result.counts), part)
