"""One batch, from its two staging CSVs to its parquet part file: shared by both faces of the job.

The Spark job (in its tasks) and the single-process job call `run_batch`, which reads the
batch with the staging contract's one strict reader (glue.staging.read_batch: the same
reader ingest uses, so a batch ingest accepted parses here value for value), feeds the
arrays to the kernel and writes the parquet part file. A task never lets an exception out:
`batch_outcome` turns a contract violation or any other failure into a `BatchError` result
(one line, with the file, line and field of a contract violation), so the driver, not a
JVM stack trace, tells the caller what went wrong. No Spark, Dagster or AWS imports.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from glue import files
from glue.contract import OUTPUT_COLUMNS, BatchInput, pack_features
from glue.feature_kernel import KernelResult, compute_features
from glue.staging import StagingFormatError, read_batch

OUTPUT_SCHEMA = pa.schema([
    ("batch", pa.string()), ("timestamp", pa.int64()), ("label", pa.int8()),
    ("duration_ms", pa.int64()), ("duration_known", pa.bool_()), ("features", pa.binary()),
])  # fmt: skip
assert tuple(OUTPUT_SCHEMA.names) == OUTPUT_COLUMNS


def batch_features(
    deals_csv: bytes, price_csv: bytes, history_seconds: int, names: tuple[str, str] = ("deals", "price")
) -> KernelResult:
    """The kernel's result for one batch's deals and price files (bytes), read by the strict reader."""
    batch = read_batch(deals_csv, price_csv, names[0], names[1])
    deals, prices = batch.deals, batch.prices
    buys = deals.filter(pc.equal(deals.column("type"), "buy"))

    def num(table: pa.Table, column: str) -> np.ndarray:
        return table.column(column).to_numpy(zero_copy_only=False)

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
class BatchError:
    """Why one batch's task produced no part file: a contract violation (`problem` says file,
    line, field and reason: the batch is bad) or another failure (`problem` None: may pass on retry)."""

    batch_id: str
    message: str  # one line, naming the batch
    problem: dict | None = None  # {file, line, field, reason}


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
    """Read one batch's staging files, compute its features, write its part file under out_uri.

    Raises StagingFormatError when the batch breaks the staging contract."""
    result = batch_features(
        files.read_bytes(batch.deals_uri), files.read_bytes(batch.price_uri), history_seconds,
        names=(batch.deals_uri, batch.price_uri),
    )  # fmt: skip
    table = pa.Table.from_batches(list(output_batches(batch.batch_id, result)), schema=OUTPUT_SCHEMA)
    part = files.join(out_uri, part_name(index))
    files.write_bytes(part, parquet_buffer(table))
    return PartResult(batch.batch_id, dict(result.counts), part)


def one_line(error: BaseException, limit: int = 400) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    first = next((line.strip() for line in text if line.strip()), "")
    message = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return message if len(message) <= limit else message[: limit - 3] + "..."


def batch_outcome(batch: BatchInput, index: int, out_uri: str, history_seconds: int) -> PartResult | BatchError:
    """run_batch, with any failure returned as a BatchError instead of raised (the task body)."""
    try:
        return run_batch(batch, index, out_uri, history_seconds)
    except StagingFormatError as e:
        return BatchError(batch.batch_id, f"batch {batch.batch_id}: {e}", e.to_dict())
    except Exception as e:  # noqa: BLE001 (reported as a result; the driver raises one clean error)
        return BatchError(batch.batch_id, f"batch {batch.batch_id}: {one_line(e)}")
