"""The feature job in one process with pyarrow and numpy: the yardstick for the Spark job.

Same inputs, same kernel (glue.feature_kernel), same parquet layout (a folder of files
with the columns of glue.contract.OUTPUT_COLUMNS, dictionary encoding off) as
glue.feature_job.build_features, without Spark. The benchmark runs both side by side and
the tests check that they agree. Local files only. No Dagster or AWS imports.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from glue.contract import DEAL_COLUMNS, PRICE_COLUMNS, BatchInput, FeatureReport
from glue.feature_kernel import KernelResult, compute_features

_STRINGS = {"loss_or_profit", "type", "UPDATE_TIME", "MARKET_STATE"}
OUTPUT_SCHEMA = pa.schema([
    ("batch", pa.string()), ("timestamp", pa.int64()), ("label", pa.int8()),
    ("duration_ms", pa.int64()), ("duration_known", pa.bool_()), ("features", pa.list_(pa.float32())),
])  # fmt: skip


def read_staging_csv(path: str | os.PathLike, columns: Sequence[str]) -> pa.Table:
    """A headerless staging CSV as a typed table (quoted numbers parse, empty numbers are null)."""
    types = {c: pa.int64() if c == "timestamp" else pa.string() if c in _STRINGS else pa.float64() for c in columns}
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=list(columns)),
        convert_options=pacsv.ConvertOptions(column_types=types, include_columns=list(columns)),
    )


def batch_features(deals_path: str | os.PathLike, price_path: str | os.PathLike, history_seconds: int) -> KernelResult:
    """The kernel's result for one batch's two staging files."""
    deals = read_staging_csv(deals_path, DEAL_COLUMNS)
    prices = read_staging_csv(price_path, PRICE_COLUMNS)
    buys = deals.filter(pa.compute.equal(deals.column("type"), "buy"))

    def num(table: pa.Table, name: str) -> np.ndarray:
        return table.column(name).to_numpy()

    return compute_features(
        num(prices, "timestamp"), num(prices, "BID"), num(prices, "OFFER"),
        num(prices, "MID_OPEN"), num(prices, "HIGH"), num(prices, "LOW"),
        num(buys, "timestamp"), num(buys, "price"), num(buys, "stop_price"), num(buys, "limit_price"),
        buys.column("loss_or_profit").to_numpy(zero_copy_only=False),
        history_seconds=history_seconds,
    )  # fmt: skip


def result_table(batch_id: str, result: KernelResult) -> pa.Table:
    """A kernel result as a table with the job's output schema."""
    n, width = result.features.shape
    features = pa.FixedSizeListArray.from_arrays(pa.array(result.features.ravel()), width).cast(pa.list_(pa.float32()))
    return pa.Table.from_arrays(
        [
            pa.array(np.full(n, batch_id, dtype=object), pa.string()),
            pa.array(result.timestamp),
            pa.array(result.label),
            pa.array(result.duration_ms),
            pa.array(result.duration_known),
            features,
        ],
        schema=OUTPUT_SCHEMA,
    )


def build_features_local(batches: Sequence[BatchInput], out_path: str | os.PathLike, history_seconds: int) -> FeatureReport:
    """Features of all `batches` as a folder of parquet files at `out_path` (replaced); counts."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    counts = {}
    try:
        for i, batch in enumerate(batches):
            result = batch_features(batch.deals_uri, batch.price_uri, history_seconds)
            counts[batch.batch_id] = result.counts
            pq.write_table(
                result_table(batch.batch_id, result),
                staging / f"part-{i:05d}.parquet",
                use_dictionary=False,
                compression="snappy",
            )
        (staging / "_SUCCESS").touch()  # the marker Spark writes: consumers wait for it
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return FeatureReport(counts)
