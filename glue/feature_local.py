"""The feature job in one process with pyarrow and numpy: the yardstick for the Spark job.

Same inputs, same per-batch code (glue.batch: pyarrow CSV parsing, the numpy kernel,
Arrow output), same parquet layout (a folder of files with glue.contract.OUTPUT_COLUMNS,
dictionary encoding off, snappy, a `_SUCCESS` marker) as glue.feature_job.build_features,
without Spark. The benchmark runs both side by side and the tests check that they agree.
Local files only. No Dagster or AWS imports.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from glue.batch import OUTPUT_SCHEMA, batch_features, output_batches
from glue.contract import BatchInput, FeatureReport


def build_features_local(
    batches: Sequence[BatchInput], out_path: str | os.PathLike, history_seconds: int
) -> FeatureReport:
    """Features of all `batches` as a folder of parquet files at `out_path` (replaced); counts."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    counts = {}
    try:
        for i, batch in enumerate(batches):
            result = batch_features(batch.deals_uri, batch.price_uri, history_seconds)
            counts[batch.batch_id] = result.counts
            table = pa.Table.from_batches(list(output_batches(batch.batch_id, result)), schema=OUTPUT_SCHEMA)
            pq.write_table(table, staging / f"part-{i:05d}.parquet", use_dictionary=False, compression="snappy")
        (staging / "_SUCCESS").touch()  # the marker Spark writes: consumers wait for it
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return FeatureReport(counts)
