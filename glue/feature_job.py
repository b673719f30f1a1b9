"""The feature job as one Spark transform: local `dagster-pyspark` and AWS Glue 5 run this code.

Shape (Spark 3.5 APIs only, so Glue 5 runs it as it is):
1. read all batches' staging files in one `binaryFile` scan: one row per file (a batch
   file is a few MB), tagged with its batch and kind from its path (matched to the given
   URIs on the driver from a listing of the scan's `path` column, so that no spelling of
   a path, `file:/x` or `file:///x`, is assumed);
2. `repartition(n, key)` so each batch's two files land in a partition of their own (the
   key is an int per batch chosen so that Spark's hash partitioning sends batch i to
   partition i; hashing the batch ids left some partitions empty and others with three
   batches), then `mapInArrow` parses each batch's CSVs with pyarrow (explicit types, the
   same code as the single-process job: glue.batch), calls the numpy kernel
   (glue.feature_kernel) and emits Arrow record batches with the features as one
   `features` column (no pandas, no per-value Python objects). Shuffling whole files
   instead of parsed rows moved 2 rows per batch instead of 20,000, and parsing in pyarrow
   instead of Spark's CSV reader took most of the JVM's CPU out of the input side;
3. write parquet with dictionary encoding off (wide float data: 4x faster writes) and
   `features` packed as one binary value per row (glue.contract.pack_features): parquet-mr
   then writes one value per row instead of 605, which made the write about 6x cheaper
   than an `array<float>` column here. `glue.contract.features_matrix` decodes it.

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

import pyarrow as pa

from glue.batch import batch_features, output_batches
from glue.contract import BatchInput, FeatureReport
from glue.feature_kernel import empty_counts

PRICE, DEAL = "price", "deals"


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
    role = {b.deals_uri: (b.batch_id, DEAL) for b in batches}
    role.update({b.price_uri: (b.batch_id, PRICE) for b in batches})
    if len(role) != 2 * len(batches):
        raise FeatureJobError("the same file is given twice")

    files = spark.read.format("binaryFile").load([uri for b in batches for uri in (b.deals_uri, b.price_uri)])
    slot = dict(zip(ids, partition_keys(len(ids)), strict=True))
    # The exact spelling of each file in the `path` column (a listing only: no content read).
    found = _role_of_file([r.path for r in files.select("path").collect()], role)

    def lookup(values: dict[str, object]):
        return F.create_map(*[F.lit(x) for kv in values.items() for x in kv])[F.col("path")]

    tagged = files.select(
        lookup({f: batch for f, (batch, _) in found.items()}).alias("batch"),
        lookup({f: kind for f, (_, kind) in found.items()}).alias("kind"),
        lookup({f: slot[batch] for f, (batch, _) in found.items()}).alias("pkey"),
        "path", "content",
    )  # fmt: skip
    counts = spark.sparkContext.accumulator({}, _CountsParam())
    transform = _partition_transform(int(history_seconds), counts)
    features = tagged.repartition(len(batches), "pkey").mapInArrow(transform, output_schema())

    job_conf = {
        "spark.sql.adaptive.coalescePartitions.enabled": "false",  # keep one task per batch
    }
    with _session_conf(spark, job_conf):
        features.write.mode("overwrite").option("parquet.enable.dictionary", "false").parquet(out_uri)
    seen = counts.value
    return FeatureReport({b: dict(seen.get(b, empty_counts())) for b in ids})


def output_schema():
    """The output's Spark schema (glue.contract.OUTPUT_COLUMNS): features packed as binary."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField("batch", T.StringType()), T.StructField("timestamp", T.LongType()),
        T.StructField("label", T.ByteType()), T.StructField("duration_ms", T.LongType()),
        T.StructField("duration_known", T.BooleanType()),
        T.StructField("features", T.BinaryType(), nullable=False),
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


def _role_of_file(spark_files: Sequence[str], role_of_uri: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Spark's own spelling of each input file -> (batch, kind); every given file must be found."""
    wanted = {_canonical(uri): role for uri, role in role_of_uri.items()}
    if len(wanted) != len(role_of_uri):
        raise FeatureJobError("the same file is given twice")
    found = {}
    for name in spark_files:
        role = wanted.get(_canonical(name))
        if role is None:
            raise FeatureJobError(f"{name} is not one of the given files (a folder given as a file?)")
        found[name] = role
    missing = set(wanted.values()) - set(found.values())
    if missing:
        raise FeatureJobError(f"input files not found: {sorted(missing)}")
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
        files: dict[str, dict[str, tuple[str, bytes]]] = {}
        for rb in record_batches:
            columns = (rb.column(c).to_pylist() for c in ("batch", "kind", "path", "content"))
            for batch, kind, path, content in zip(*columns, strict=True):
                if batch is None:
                    raise FeatureJobError(f"{path}: Spark spelled this input file unexpectedly (no batch)")
                files.setdefault(batch, {})[kind] = (path, content)
        for batch_id, mine in sorted(files.items()):
            if set(mine) != {DEAL, PRICE}:
                raise FeatureJobError(f"batch {batch_id}: its files did not meet in one task")
            (deals_path, deals), (price_path, prices) = mine[DEAL], mine[PRICE]
            result = batch_features(deals, prices, history_seconds, names=(deals_path, price_path))
            counts.add({batch_id: result.counts})
            yield from output_batches(batch_id, result)

    return transform
