"""The feature job as one Spark job: local `dagster-pyspark` and AWS Glue 5 run this code.

Shape (Spark 3.5 APIs only, so Glue 5 runs it as it is): the batches are independent, so
the job spreads them over Spark tasks and each task does whole batches end to end:
1. `parallelize` the list of batches (ids and file URIs, not data) into a few slices per
   core (`sparkContext.defaultParallelism`: the local cores, or all executor cores on Glue);
2. in each task, for each of its batches, `glue.batch.run_batch`: read the two staging
   CSVs (glue.files: local paths or s3://), parse them with the staging contract's strict
   reader (glue.staging, the one ingest uses), call the numpy kernel (glue.feature_kernel)
   and write the batch's parquet part file
   (`part-<index>.parquet`, dictionary encoding off, `features` packed as one binary value
   per row: glue.contract.pack_features);
3. each task returns only its batches' counts; the driver collects them (the FeatureReport:
   no second pass over the data) and writes `_SUCCESS` last.

Why not Spark's readers and writer: the features are 2.4 GB per million deals. Shipping
them through the JVM (Arrow from Python, Arrow to rows, parquet-mr) cost more than the
computation itself; so did shuffling the staging files to bring a batch's two files
together. Measured at 1M deals on 2 cores: that shape took 42-54 s of job time, this one
15 s (BENCHMARKS.md, Features). Spark still does what it is for here: it spreads the batches
over every core of every worker, retries a failed task and reports the job.

Failure and retries: a part file's name depends only on the batch's position and its
bytes only on the batch, and each is written whole (glue.files.write_bytes), so a retried
or speculative task rewrites the same file. The output folder is emptied first (the old
`_SUCCESS` with it) and `_SUCCESS` is written only when every batch is done, so a reader
never takes a half-written output for a finished one.

Errors: a task never raises. Each batch's outcome is a result (glue.batch.batch_outcome), and
the driver raises one clean exception with one line: BatchDataError when a batch breaks the
staging contract (its `problems` name the batch, file, line, field and reason: the batch is
bad, a retry cannot help), FeatureJobError for anything else (storage, Spark: worth a retry).
A failure of Spark itself (a lost worker) is reduced to one line too, never a Py4J trace.
No Dagster, no AWS SDK and nothing local-only here: the Glue script calls build_features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from glue import files
from glue.batch import BatchError, PartResult, batch_outcome, one_line
from glue.contract import BatchInput, FeatureReport

SUCCESS = "_SUCCESS"
# Slices per core: with more than one, a core that finishes early takes over the work of a
# slow one; each task costs about 0.1 s of Python-worker overhead, so not one per batch.
SLICES_PER_CORE = 2


class FeatureJobError(RuntimeError):
    """The job failed; the message is one line saying which batch and why."""


class BatchDataError(FeatureJobError):
    """One or more batches break the staging contract; `problems` maps batch id -> {file, line, field, reason}."""

    def __init__(self, message: str, problems: dict[str, dict]):
        super().__init__(message)
        self.problems = problems

    def __reduce__(self):
        return type(self), (str(self), self.problems)


def build_features(spark, batches: Sequence[BatchInput], out_uri: str, history_seconds: int) -> FeatureReport:
    """Features of all `batches` as parquet part files under `out_uri` (replaced); counts per batch."""
    if not batches:
        raise FeatureJobError("no batches given")
    ids = [b.batch_id for b in batches]
    if len(set(ids)) != len(ids):
        raise FeatureJobError("batch ids are not unique")
    batches = [BatchInput(b.batch_id, _absolute(b.deals_uri), _absolute(b.price_uri)) for b in batches]
    uris = [u for b in batches for u in (b.deals_uri, b.price_uri)]
    if len(set(uris)) != len(uris):
        raise FeatureJobError("the same file is given twice")
    out_uri = _absolute(out_uri)

    sc = spark.sparkContext
    slices = min(len(batches), max(1, SLICES_PER_CORE * sc.defaultParallelism))
    files.clear_folder(out_uri)
    try:
        try:
            outcomes = sc.parallelize(list(enumerate(batches)), slices).mapPartitions(
                _batch_task(out_uri, int(history_seconds))
            ).collect()  # fmt: skip
        except Exception as e:  # Spark itself failed (a lost worker): one line, never the JVM trace
            raise FeatureJobError(f"the Spark job failed: {_spark_line(e)}") from None
        raise_for_errors([o for o in outcomes if isinstance(o, BatchError)])
        files.write_bytes(files.join(out_uri, SUCCESS), b"")
    except BaseException:
        files.clear_folder(out_uri)
        raise
    done = {o.batch_id: o.counts for o in outcomes}
    return FeatureReport({b: done[b] for b in ids})


def raise_for_errors(errors: Sequence[BatchError]) -> None:
    """Raise one clean exception for the batches that failed: BatchDataError if any broke the contract."""
    if not errors:
        return
    bad = [e for e in errors if e.problem is not None]
    first = (bad or errors)[0]
    more = f" (and {len(errors) - 1} more batches)" if len(errors) > 1 else ""
    if bad:
        raise BatchDataError(first.message + more, {e.batch_id: e.problem for e in bad})
    raise FeatureJobError(first.message + more)


def _spark_line(error: BaseException) -> str:
    java = getattr(error, "java_exception", None)
    if java is not None:
        try:
            return one_line(RuntimeError(java.toString()))
        except Exception:  # noqa: BLE001 (the gateway may be gone)
            pass
    return one_line(error)


def _batch_task(
    out_uri: str, history_seconds: int
) -> Callable[[Iterable[tuple[int, BatchInput]]], Iterator[PartResult | BatchError]]:
    """The task body: each batch of the slice end to end, every outcome a result (never raised)."""

    def task(items: Iterable[tuple[int, BatchInput]]) -> Iterator[PartResult | BatchError]:
        for index, batch in items:
            yield batch_outcome(batch, index, out_uri, history_seconds)

    return task


def _absolute(uri: str) -> str:
    """A local file as an absolute path, resolved on the driver (tasks may run elsewhere); URIs as given."""
    return files.local_path(uri) or uri
