"""The feature job in one process with pyarrow and numpy: the yardstick for the Spark job.

Same inputs, same per-batch code (glue.batch.run_batch: the strict staging reader, the numpy
kernel, the parquet part file), same output layout (a folder of part files with
glue.contract.OUTPUT_COLUMNS and a `_SUCCESS` marker) as glue.feature_job.build_features,
without Spark: the difference between the two is only how the batches are spread over
processes; errors are raised the same way (glue.feature_job.raise_for_errors). The benchmark
runs both side by side and the tests check that they agree. Local files only (the folder is replaced in one rename). No Dagster or AWS imports.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from glue.batch import BatchError, batch_outcome
from glue.contract import BatchInput, FeatureReport
from glue.feature_job import raise_for_errors


def build_features_local(
    batches: Sequence[BatchInput], out_path: str | os.PathLike, history_seconds: int
) -> FeatureReport:
    """Features of all `batches` as a folder of parquet files at `out_path` (replaced); counts."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        outcomes = [batch_outcome(batch, i, str(staging), history_seconds) for i, batch in enumerate(batches)]
        raise_for_errors([o for o in outcomes if isinstance(o, BatchError)])
        counts = {o.batch_id: o.counts for o in outcomes}
        (staging / "_SUCCESS").touch()  # the marker the Spark job writes last: consumers wait for it
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return FeatureReport(counts)
