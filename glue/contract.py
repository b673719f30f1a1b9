"""What the feature job reads, writes and reports, shared by its Spark and pyarrow faces.

The staging files' columns come from glue.staging, the contract's one definition (glue/ is
shipped to AWS Glue on its own, so the contract lives here, not in the rest of the project).
No Spark, Dagster or AWS imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from glue.feature_kernel import COUNT_KEYS, empty_counts
from glue.staging import DEAL_COLUMNS, PRICE_COLUMNS  # noqa: F401  (re-exported: the job's inputs)

# batch string, timestamp int64, label int8, duration_ms int64, duration_known bool, features binary.
# `features` packs a row's 5 + H values as little-endian float32 into one binary value:
# parquet writes one value per row instead of one per float (measured here: a 100k x 605
# write took 1 s packed against 6 s as array<float>). `features_matrix` decodes it.
OUTPUT_COLUMNS = ("batch", "timestamp", "label", "duration_ms", "duration_known", "features")
FEATURE_DTYPE = np.dtype("<f4")


def pack_features(matrix: np.ndarray) -> pa.BinaryArray:
    """Rows of a float matrix as one binary value each (little-endian float32)."""
    rows, width = matrix.shape
    data = np.ascontiguousarray(matrix, dtype=FEATURE_DTYPE)
    row_bytes = width * FEATURE_DTYPE.itemsize
    offsets = np.arange(0, (rows + 1) * row_bytes, row_bytes, dtype=np.int32)
    return pa.BinaryArray.from_buffers(pa.binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def features_matrix(column: pa.Array | pa.ChunkedArray, where: str = "features") -> np.ndarray:
    """A `features` column (packed binary, or a list of floats) as a float32 [rows, width] matrix.

    Every row must have the same width; a null row or a ragged one is a ValueError naming it.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise ValueError(f"{where}: {array.null_count} row(s) have no features")
    if len(array) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        offsets = np.frombuffer(
            array.buffers()[1], dtype=np.int64 if pa.types.is_large_binary(array.type) else np.int32
        )
        offsets = offsets[array.offset : array.offset + len(array) + 1]
        lengths = np.diff(offsets) // FEATURE_DTYPE.itemsize
        raw = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        values = raw.view(FEATURE_DTYPE)
    elif pa.types.is_fixed_size_list(array.type):
        return (
            array.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(array), array.type.list_size)
        )
    else:
        lengths = np.diff(array.offsets.to_numpy())
        values = array.flatten().to_numpy(zero_copy_only=False)
    width = int(lengths[0])
    bad = np.flatnonzero(lengths != width)
    if len(bad):
        raise ValueError(f"{where}: row {int(bad[0])} has {int(lengths[bad[0]])} features, row 0 has {width}")
    return values.astype(np.float32, copy=False).reshape(len(array), width)


@dataclass(frozen=True)
class BatchInput:
    """One batch's two staging files (local paths, file: or s3:// URIs)."""

    batch_id: str
    deals_uri: str
    price_uri: str


@dataclass(frozen=True)
class FeatureReport:
    """Counts per batch (deals, rows, no_history, no_tick, missing_tick_values) and in total."""

    batches: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def totals(self) -> dict[str, int]:
        """The counts summed over all batches."""
        total = empty_counts()
        for counts in self.batches.values():
            for key in COUNT_KEYS:
                total[key] += counts[key]
        return total

    def to_dict(self) -> dict:
        """Plain JSON-ready form: {"batches": {id: counts}, "total": counts}."""
        return {"batches": {b: dict(c) for b, c in self.batches.items()}, "total": self.totals()}
