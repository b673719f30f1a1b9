"""The training dataset: the newest batches' features, split in time order with a purge gap.

Neighbouring deals overlap in time (a deal stays open until its stop or limit is hit), so
a random split, or a time split without a gap, lets the outcome of a training deal be
decided by the very prices a validation or test deal is labelled on. Here:

- the window's rows are concatenated and sorted by opening time (stable, so equal
  timestamps keep their batch order);
- they are cut by row fractions (train/validation/test, in time order);
- the gap is the longest deal in the window (max `duration_ms`); the first rows of the
  validation split whose opening time is < (last opening time in train) + gap are dropped
  and counted, and likewise between validation and test. Every training deal is then
  resolved before the first validation deal opens. No other row is ever dropped.

`duration_ms` is a lower bound for deals whose resolution fell after the end of their
batch's price file (`duration_known` false); the summary counts them.

Channels are written as SageMaker linear-learner reads them (CSV, label first, no header,
content type text/csv), plus one columnar parquet copy with a `split` column, which also
reads back into an identical TrainingDataset. No Dagster or AWS imports.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from glue.contract import features_matrix
from ml_demo_dagster.core.store import ObjectStore

SPLITS = ("train", "validation", "test")
REQUIRED_COLUMNS = ("batch", "timestamp", "label", "duration_ms", "duration_known", "features")
CHANNEL_CONTENT_TYPE = "text/csv"
DATASET_FORMAT_VERSION = 1
_META_KEY = b"ml_demo.dataset"
_CSV_CHUNK_ROWS = 2000


@dataclass
class Split:
    """One channel's rows, in time order."""

    X: np.ndarray  # float32 [n, d]
    y: np.ndarray  # int8 [n]
    timestamp: np.ndarray  # int64 [n], deal opening, epoch ms
    batch: np.ndarray  # str objects [n], the batch each row came from

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def summary(self) -> dict[str, Any]:
        n = len(self)
        return {
            "rows": n,
            "positives": int(self.y.sum()),
            "positive_rate": float(self.y.mean()) if n else 0.0,
            "first_timestamp": int(self.timestamp[0]) if n else None,
            "last_timestamp": int(self.timestamp[-1]) if n else None,
        }


@dataclass
class TrainingDataset:
    """Train/validation/test splits of the window, the purge gap and what it dropped."""

    train: Split
    validation: Split
    test: Split
    gap_ms: int
    purged: dict[str, int]  # rows dropped at the start of "validation" and "test"
    batches: list[str]  # the window's batch ids, in the order given
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    unknown_durations: int = 0  # rows whose duration_ms is only a lower bound
    feature_dim: int = 0

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def summary(self) -> dict[str, Any]:
        """Rows, positive rate and time range per split, the gap and the purged counts."""
        return {
            "batches": list(self.batches),
            "feature_dim": self.feature_dim,
            "split": list(self.split),
            "gap_ms": int(self.gap_ms),
            "purged": dict(self.purged),
            "unknown_durations": int(self.unknown_durations),
            "rows": {name: len(s) for name, s in self.splits().items()},
            "positive_rate": {name: s.summary()["positive_rate"] for name, s in self.splits().items()},
            "time_range": {
                name: [s.summary()["first_timestamp"], s.summary()["last_timestamp"]]
                for name, s in self.splits().items()
            },
        }


def _check_table(table: pa.Table, where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}; have {', '.join(table.column_names)}")


def _split_sizes(n: int, split: Sequence[float]) -> tuple[int, int]:
    if len(split) != 3 or any(f <= 0 for f in split) or abs(sum(split) - 1.0) > 1e-9:
        raise ValueError(f"split must be three positive fractions summing to 1, got {tuple(split)}")
    n_train = int(round(n * split[0]))
    n_val = int(round(n * (split[0] + split[1]))) - n_train
    return n_train, n_val


def _segments(n: int, split: Sequence[float], validation_chunks: int) -> list[tuple[str, int, int]]:
    """(split, first row, end row) of each contiguous segment, in time order: the validation
    rows in `validation_chunks` pieces spread evenly over the rows before the test split, each
    after its share of the training rows (1 chunk: train, then validation), then the test split."""
    if validation_chunks < 1:
        raise ValueError(f"validation_chunks must be at least 1, got {validation_chunks}")
    n_train, n_val = _split_sizes(n, split)
    fit = n_train + n_val
    segments = []
    for k in range(validation_chunks):
        lo, hi = fit * k // validation_chunks, fit * (k + 1) // validation_chunks
        val_lo = hi - (n_val * (k + 1) // validation_chunks - n_val * k // validation_chunks)
        segments += [("train", lo, val_lo), ("validation", val_lo, hi)]
    segments.append(("test", fit, n))
    return [seg for seg in segments if seg[2] > seg[1]]


def assemble_dataset(
    tables: Sequence[pa.Table] | pa.Table, split: Sequence[float] = (0.6, 0.2, 0.2), validation_chunks: int = 1
) -> TrainingDataset:
    """Concatenate the window, sort by time, split by row fractions with a purge gap between
    segments; the validation rows in `validation_chunks` pieces spread over the training time."""
    if isinstance(tables, pa.Table):
        tables = [tables]
    if not tables:
        raise ValueError("no feature tables to assemble (the window is empty)")
    for i, t in enumerate(tables):
        _check_table(t, f"feature table {i}")
    columns = list(REQUIRED_COLUMNS)
    combined = pa.concat_tables([t.select(columns) for t in tables], promote_options="permissive")
    n = combined.num_rows
    if n == 0:
        raise ValueError(f"the window of {len(tables)} batch(es) has no feature rows")

    X = features_matrix(combined.column("features"), "features")
    timestamp = combined.column("timestamp").to_numpy().astype(np.int64)
    y = combined.column("label").to_numpy().astype(np.int8)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(X).all():
        raise ValueError(f"features contain {int((~np.isfinite(X)).sum())} NaN or infinite values")
    duration = combined.column("duration_ms").to_numpy().astype(np.int64)
    if (duration < 0).any():
        raise ValueError(f"duration_ms is negative in {int((duration < 0).sum())} row(s)")
    known = combined.column("duration_known").to_numpy(zero_copy_only=False).astype(bool)
    batch = np.asarray(combined.column("batch").to_pylist(), dtype=object)

    order = np.argsort(timestamp, kind="stable")
    X, timestamp, y, duration, known, batch = (a[order] for a in (X, timestamp, y, duration, known, batch))
    gap = int(duration.max())

    purged = {name: 0 for name in SPLITS}
    kept: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    previous_end: int | None = None  # opening time of the last row kept in the segment before
    for name, start, end in _segments(n, split, validation_chunks):
        first_kept = start
        if previous_end is not None:
            # Rows are sorted, so the rows to purge are a prefix of the segment.
            cutoff = previous_end + gap
            first_kept = start + int(np.searchsorted(timestamp[start:end], cutoff, side="left"))
        purged[name] += first_kept - start
        if first_kept < end:
            kept[name].append(np.arange(first_kept, end))
            previous_end = int(timestamp[end - 1])
        elif previous_end is None:
            raise ValueError(_empty_message(name, n, gap, split, purged))
    indices = {name: np.concatenate(parts) if parts else np.zeros(0, np.int64) for name, parts in kept.items()}
    for name in SPLITS:
        if len(indices[name]) == 0:
            raise ValueError(_empty_message(name, n, gap, split, purged))

    def take(idx: np.ndarray) -> Split:
        return Split(X=X[idx], y=y[idx], timestamp=timestamp[idx], batch=batch[idx])

    seen: dict[str, None] = {}
    for t in tables:
        for b in t.column("batch").unique().to_pylist():
            seen.setdefault(str(b), None)
    return TrainingDataset(
        train=take(indices["train"]),
        validation=take(indices["validation"]),
        test=take(indices["test"]),
        gap_ms=gap,
        purged=purged,
        batches=list(seen),
        split=tuple(float(f) for f in split),
        unknown_durations=int((~known).sum()),
        feature_dim=int(X.shape[1]),
    )


def _empty_message(name: str, n: int, gap: int, split: Sequence[float], purged: dict[str, int]) -> str:
    return (
        f"the {name} split is empty: {n} row(s) in the window, split {tuple(split)}, purge gap {gap} ms "
        f"(the longest deal), purged so far {purged}; the window needs more deals, or deals spanning "
        "more time than the longest deal"
    )


def _csv_rows(y: np.ndarray, X: np.ndarray) -> bytes:
    columns = [pa.array(y.astype(np.int8))] + [pa.array(X[:, j]) for j in range(X.shape[1])]
    table = pa.Table.from_arrays(columns, names=[f"c{j}" for j in range(len(columns))])
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return sink.getvalue()


def _csv_channels(ds: TrainingDataset) -> dict[str, bytes]:
    """Each split as label-first, headerless CSV (linear-learner's text/csv).

    Formatting floats is the slow part and pyarrow releases the GIL while doing it, so row
    chunks are encoded on all cores and joined (headerless CSV concatenates).
    """
    jobs = [
        (name, s.y[i : i + _CSV_CHUNK_ROWS], s.X[i : i + _CSV_CHUNK_ROWS])
        for name, s in ds.splits().items()
        for i in range(0, max(len(s), 1), _CSV_CHUNK_ROWS)
    ]
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        encoded = list(pool.map(lambda job: _csv_rows(job[1], job[2]), jobs))
    out: dict[str, list[bytes]] = {name: [] for name in SPLITS}
    for (name, _, _), data in zip(jobs, encoded, strict=False):
        out[name].append(data)
    return {name: b"".join(parts) for name, parts in out.items()}


def channel_keys(prefix: str) -> dict[str, str]:
    """Where write_dataset puts each channel and the columnar copy."""
    prefix = prefix.rstrip("/")
    keys = {name: f"{prefix}/{name}/{name}.csv" for name in SPLITS}
    keys["parquet"] = f"{prefix}/dataset.parquet"
    return keys


def to_table(ds: TrainingDataset) -> pa.Table:
    """All rows of the dataset in one table with a `split` column, dataset facts in the schema metadata."""
    parts = []
    d = ds.feature_dim
    for name, s in ds.splits().items():
        flat = pa.array(s.X.reshape(-1).astype(np.float32, copy=False), type=pa.float32())
        features = pa.FixedSizeListArray.from_arrays(flat, d) if d else pa.array([[]] * len(s), pa.list_(pa.float32()))
        parts.append(
            pa.table(
                {
                    "split": pa.array([name] * len(s), type=pa.string()),
                    "batch": pa.array(s.batch.tolist(), type=pa.string()),
                    "timestamp": pa.array(s.timestamp, type=pa.int64()),
                    "label": pa.array(s.y, type=pa.int8()),
                    "features": features.cast(pa.list_(pa.float32())),
                }
            )
        )
    table = pa.concat_tables(parts)
    meta = {
        "version": DATASET_FORMAT_VERSION,
        "gap_ms": int(ds.gap_ms),
        "purged": ds.purged,
        "batches": ds.batches,
        "split": list(ds.split),
        "unknown_durations": int(ds.unknown_durations),
        "feature_dim": d,
    }
    return table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})


def write_dataset(ds: TrainingDataset, store: ObjectStore, prefix: str) -> dict[str, str]:
    """Write the CSV channels and the parquet copy; returns {train, validation, test, parquet} -> key."""
    keys = channel_keys(prefix)
    # Everything is encoded before the first write, so a failure leaves nothing half-written.
    payloads = _csv_channels(ds)
    sink = io.BytesIO()
    pq.write_table(to_table(ds), sink, use_dictionary=["split", "batch"], compression="zstd")
    payloads["parquet"] = sink.getvalue()
    for name, data in payloads.items():
        store.put_bytes(keys[name], data)
    return keys


def from_table(table: pa.Table, source: str = "dataset") -> TrainingDataset:
    """Inverse of to_table."""
    raw = (table.schema.metadata or {}).get(_META_KEY)
    if raw is None:
        raise ValueError(f"{source}: not a training dataset (no {_META_KEY.decode()} metadata)")
    meta = json.loads(raw)
    if meta.get("version") != DATASET_FORMAT_VERSION:
        raise ValueError(f"{source}: dataset format version {meta.get('version')!r} is not supported")
    d = int(meta["feature_dim"])
    split_col = np.asarray(table.column("split").to_pylist(), dtype=object)
    X_all = features_matrix(table.column("features"), f"{source}: features")
    if X_all.size == 0:
        X_all = np.zeros((table.num_rows, d), dtype=np.float32)
    y_all = table.column("label").to_numpy().astype(np.int8)
    ts_all = table.column("timestamp").to_numpy().astype(np.int64)
    batch_all = np.asarray(table.column("batch").to_pylist(), dtype=object)
    splits = {}
    for name in SPLITS:
        idx = np.flatnonzero(split_col == name)
        splits[name] = Split(X=X_all[idx], y=y_all[idx], timestamp=ts_all[idx], batch=batch_all[idx])
    return TrainingDataset(
        **splits,
        gap_ms=int(meta["gap_ms"]),
        purged={k: int(v) for k, v in meta["purged"].items()},
        batches=[str(b) for b in meta["batches"]],
        split=tuple(float(f) for f in meta["split"]),
        unknown_durations=int(meta["unknown_durations"]),
        feature_dim=d,
    )


def read_dataset(store: ObjectStore, prefix: str) -> TrainingDataset:
    """Read a dataset back from its parquet copy (exact round trip of write_dataset)."""
    key = channel_keys(prefix)["parquet"]
    table = pq.read_table(io.BytesIO(store.get_bytes(key)))
    return from_table(table, source=store.uri(key))
