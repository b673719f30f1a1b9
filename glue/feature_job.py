"""The feature job as one Spark transform: local `dagster-pyspark` and AWS Glue 5 run this code.

Shape (Spark 3.5 APIs only, so Glue 5 runs it as it is):
1. read every batch's deals CSVs in one scan and every price CSV in another (explicit
   schema, FAILFAST), tag each row with its batch from the file it came from, and union
   the two into one narrow frame (prices: BID, OFFER, MID_OPEN, HIGH, LOW; deals: price,
   stop_price, limit_price, label) with a `seq` column that keeps file order;
2. `repartition(n, key)` so each batch lands whole in a partition of its own (the key is an
   int per batch chosen so that Spark's hash partitioning sends batch i to partition i:
   hashing the batch ids left some partitions empty and others with three batches), then `mapInArrow`
   gathers a partition, splits it by batch, calls the numpy kernel
   (glue.feature_kernel.compute_features) and emits Arrow record batches with the
   features as one `array<float>` column (no pandas, no per-value Python objects);
3. write parquet with dictionary encoding off (wide float data: 4x faster writes) and
   `features` declared `array<float>` with non-null elements, written in Spark's legacy
   two-level list layout (`repeated float array`): parquet-mr then writes one value per
   element instead of a group, field and value (about a quarter less writer CPU here).
   Spark, pyarrow and Athena read it as a list of floats like any other.

Counts come back without a second pass: each task adds its batches' counts to a
dict-valued accumulator while it computes them. Every batch is computed by exactly one
task and a batch's counts are deterministic, so merging by batch key is idempotent: a
retried or speculative task cannot double-count.
No Dagster, no AWS SDK and nothing local-only here: the Glue script calls build_features.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import unquote

import numpy as np
import pyarrow as pa

from glue.contract import DEALS_DDL, OUTPUT_COLUMNS, PRICE_DDL, BatchInput, FeatureReport
from glue.feature_kernel import compute_features, empty_counts

PRICE, DEAL = 0, 1
_CSV_OPTIONS = {"header": "false", "quote": '"', "escape": "\\", "mode": "FAILFAST", "nullValue": ""}
_OUTPUT_CHUNK_ROWS = 8192


class FeatureJobError(RuntimeError):
    """The job's inputs cannot be processed as given (the message says which)."""


def build_features(spark, batches: Sequence[BatchInput], out_uri: str, history_seconds: int) -> FeatureReport:
    """Features of all `batches` as parquet under `out_uri` (overwritten); counts per batch."""
    from pyspark.sql import functions as F

    if not batches:
        raise FeatureJobError("no batches given")
    ids = [b.batch_id for b in batches]
    if len(set(ids)) != len(ids):
        raise FeatureJobError("batch ids are not unique")

    reader = spark.read.options(**_CSV_OPTIONS)
    deals = reader.schema(DEALS_DDL).csv([b.deals_uri for b in batches])
    prices = reader.schema(PRICE_DDL).csv([b.price_uri for b in batches])
    deal_batch = _batch_of_file(deals.inputFiles(), {b.deals_uri: b.batch_id for b in batches})
    price_batch = _batch_of_file(prices.inputFiles(), {b.price_uri: b.batch_id for b in batches})

    slot = dict(zip(ids, partition_keys(len(ids))))

    def tagged(df, files: dict[str, str]):
        batch_of = F.create_map(*[F.lit(x) for kv in files.items() for x in kv])
        key_of = F.create_map(*[F.lit(x) for file, batch in files.items() for x in (file, slot[batch])])
        source = F.input_file_name()
        return df.select(
            "*", batch_of[source].alias("batch"), key_of[source].alias("pkey"),
            F.monotonically_increasing_id().alias("seq"),
        )  # fmt: skip

    no_value = F.lit(None).cast("double")
    price_rows = tagged(prices, price_batch).select(
        "batch", "pkey", F.lit(PRICE).cast("byte").alias("kind"), "seq", F.col("timestamp").alias("ts"),
        F.col("BID").alias("a"), F.col("OFFER").alias("b"), F.col("MID_OPEN").alias("c"),
        F.col("HIGH").alias("d"), F.col("LOW").alias("e"),
    )  # fmt: skip
    deal_rows = (
        tagged(deals, deal_batch)
        .where(F.col("type") == "buy")
        .select(
            "batch", "pkey", F.lit(DEAL).cast("byte").alias("kind"), "seq", F.col("timestamp").alias("ts"),
            F.col("price").alias("a"), F.col("stop_price").alias("b"), F.col("limit_price").alias("c"),
            F.when(F.col("loss_or_profit") == "profit", 1.0).otherwise(0.0).alias("d"), no_value.alias("e"),
        )  # fmt: skip
    )
    counts = spark.sparkContext.accumulator({}, _CountsParam())
    transform = _partition_transform(int(history_seconds), counts)
    features = price_rows.unionByName(deal_rows).repartition(len(batches), "pkey").mapInArrow(transform, output_schema())

    job_conf = {
        "spark.sql.adaptive.coalescePartitions.enabled": "false",  # keep one task per batch
        "spark.sql.parquet.writeLegacyFormat": "true",  # two-level lists, see the banner
    }
    with _session_conf(spark, job_conf):
        features.write.mode("overwrite").option("parquet.enable.dictionary", "false").parquet(out_uri)
    seen = counts.value
    return FeatureReport({b: dict(seen.get(b, empty_counts())) for b in ids})


def output_schema():
    """The output's Spark schema (glue.contract.OUTPUT_COLUMNS), features without null elements."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField("batch", T.StringType()), T.StructField("timestamp", T.LongType()),
        T.StructField("label", T.ByteType()), T.StructField("duration_ms", T.LongType()),
        T.StructField("duration_known", T.BooleanType()),
        T.StructField("features", T.ArrayType(T.FloatType(), containsNull=False)),
    ])  # fmt: skip


@contextmanager
def _session_conf(spark, conf: dict[str, str]):
    """Set SQL settings for the duration of the job, then put the session's own back."""
    previous = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def _murmur3_int(value: int, seed: int = 42) -> int:
    """Spark's Murmur3 hash of an IntegerType value (what `hash(col)` and hash partitioning use)."""

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF

    k1 = rotl((value & 0xFFFFFFFF) * 0xCC9E2D51 & 0xFFFFFFFF, 15) * 0x1B873593 & 0xFFFFFFFF
    h1 = (rotl(seed ^ k1, 13) * 5 + 0xE6546B64) & 0xFFFFFFFF
    h1 ^= 4
    h1 = ((h1 ^ (h1 >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
    h1 = ((h1 ^ (h1 >> 13)) * 0xC2B2AE35) & 0xFFFFFFFF
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 >= 1 << 31 else h1


def partition_keys(n: int) -> list[int]:
    """n int keys that Spark's `repartition(n, key)` sends to partitions 0..n-1, one each."""
    keys: list[int | None] = [None] * n
    missing, candidate = n, 0
    while missing:
        slot = _murmur3_int(candidate) % n  # Python's % is Spark's pmod for n > 0
        if keys[slot] is None:
            keys[slot] = candidate
            missing -= 1
        candidate += 1
    return keys  # type: ignore[return-value]


def _canonical(uri: str) -> str:
    """One spelling per file: decoded, `file:` and bare local paths as absolute paths."""
    text = unquote(uri)
    if text.startswith("file:"):
        return posixpath.normpath("/" + text[len("file:") :].lstrip("/"))
    if "://" not in text:
        return os.path.abspath(text)
    return text


def _batch_of_file(spark_files: Sequence[str], batch_of_uri: dict[str, str]) -> dict[str, str]:
    """Spark's own spelling of each input file -> its batch; every given file must be found."""
    wanted = {_canonical(uri): batch for uri, batch in batch_of_uri.items()}
    if len(wanted) != len(batch_of_uri):
        raise FeatureJobError("the same file is given for two batches")
    found = {}
    for name in spark_files:
        batch = wanted.get(_canonical(name))
        if batch is None:
            raise FeatureJobError(f"{name} is not one of the given files (a folder given as a file?)")
        found[name] = batch
    missing = set(wanted.values()) - set(found.values())
    if missing:
        raise FeatureJobError(f"input files of batches {sorted(missing)} were not found")
    return found


class _CountsParam:
    """Accumulator of {batch: counts}; merging by key makes a re-run task harmless."""

    def zero(self, value: dict) -> dict:
        return {}

    def addInPlace(self, a: dict, b: dict) -> dict:  # noqa: N802 (Spark's name)
        a.update(b)
        return a


def _partition_transform(history_seconds: int, counts):
    def transform(record_batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        parts = [rb for rb in record_batches if rb.num_rows]
        if not parts:
            return
        table = pa.Table.from_batches(parts)
        if table.column("batch").null_count:
            raise FeatureJobError("an input row has no batch: Spark spelled an input file unexpectedly")
        batch_col = table.column("batch").to_numpy(zero_copy_only=False)
        kind = table.column("kind").to_numpy()
        seq = table.column("seq").to_numpy()
        ts = table.column("ts").to_numpy()
        a, b, c, d, e = (table.column(x).to_numpy(zero_copy_only=False) for x in "abcde")
        for batch_id in np.unique(batch_col):
            mine = batch_col == batch_id
            p = np.flatnonzero(mine & (kind == PRICE))
            p = p[np.argsort(seq[p], kind="stable")]
            q = np.flatnonzero(mine & (kind == DEAL))
            q = q[np.argsort(seq[q], kind="stable")]
            result = compute_features(
                ts[p], a[p], b[p], c[p], d[p], e[p],
                ts[q], a[q], b[q], c[q], d[q],
                history_seconds=history_seconds,
            )  # fmt: skip
            counts.add({str(batch_id): result.counts})
            yield from _record_batches(str(batch_id), result)

    return transform


def _record_batches(batch_id: str, result) -> Iterator[pa.RecordBatch]:
    """The kernel's output as Arrow record batches matching output_schema()."""
    n, width = result.features.shape
    for start in range(0, n, _OUTPUT_CHUNK_ROWS):
        stop = min(n, start + _OUTPUT_CHUNK_ROWS)
        offsets = pa.array(np.arange(0, (stop - start + 1) * width, width, dtype=np.int32))
        values = pa.array(result.features[start:stop].ravel())
        yield pa.RecordBatch.from_arrays(
            [
                pa.array([batch_id] * (stop - start), pa.string()),
                pa.array(result.timestamp[start:stop]),
                pa.array(result.label[start:stop]),
                pa.array(result.duration_ms[start:stop]),
                pa.array(result.duration_known[start:stop]),
                pa.ListArray.from_arrays(offsets, values),
            ],
            names=list(OUTPUT_COLUMNS),
        )
