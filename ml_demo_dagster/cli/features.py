"""`ml-demo features DEALS.csv PRICE.csv --out FILE.parquet`: the feature job on one batch.

A thin shell around glue.feature_job.build_features on local Spark: it reads both files
with the staging contract's strict reader first (glue.staging.read_batch, the one ingest
and the job use; a bad file is reported by file, line and field, and nothing is written),
runs the job into a scratch folder, and writes one parquet file
with the columns `timestamp`, `label`, `f0`..`f<W-1>` (the feature array expanded,
W = 5 + features.history_seconds from the config), replacing FILE only when complete.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ml_demo_dagster.cli.common import UserError
from ml_demo_dagster.config import load_config
from ml_demo_dagster.core.staging import read_batch


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "features",
        help="build the features of one batch with the Spark feature job (local Spark)",
        description="Run the feature job (DESIGN §4.2) on one batch's staging files and write one parquet "
        "file with columns timestamp, label, f0..f604; prints the counts of deals kept and dropped.",
    )
    parser.add_argument("deals", metavar="DEALS.csv", help="the batch's deals file (staging format)")
    parser.add_argument("price", metavar="PRICE.csv", help="the batch's price file (staging format)")
    parser.add_argument("--out", metavar="FILE.parquet", required=True, help="parquet file to write (replaced)")
    parser.set_defaults(handler=run)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (IsADirectoryError, PermissionError) as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def expand_features(table: pa.Table) -> pa.Table:
    """The job's output (features as one array column) as timestamp, label, f0..f<W-1>, by time."""
    table = table.sort_by("timestamp")
    from glue.contract import features_matrix

    matrix = features_matrix(table.column("features"))
    width = matrix.shape[1]
    names = ["timestamp", "label"] + [f"f{i}" for i in range(width)]
    arrays = [table.column("timestamp"), table.column("label")] + [pa.array(matrix[:, i]) for i in range(width)]
    return pa.Table.from_arrays(arrays, names=names)


def run(args: argparse.Namespace) -> int:
    config = load_config()  # not the cached default: the environment may have changed since
    history = config.features.history_seconds
    checked = read_batch(_read(args.deals), _read(args.price), args.deals, args.price)
    deals, prices = checked.deals, checked.prices
    for note in checked.notes:
        print(f"ml-demo features: note: {note}", file=sys.stderr)
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder, expected a file name")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")

    from pyspark.sql import SparkSession

    from glue.contract import BatchInput
    from glue.feature_job import BatchDataError, build_features
    from glue.spark import local_spark_session

    owned = SparkSession.getActiveSession() is None
    spark = local_spark_session("ml-demo-features")
    try:
        with tempfile.TemporaryDirectory(prefix=".features-", dir=out.parent) as scratch:
            batch = BatchInput(Path(args.deals).stem, os.path.abspath(args.deals), os.path.abspath(args.price))
            try:
                report = build_features(spark, [batch], os.path.join(scratch, "job"), history)
            except BatchDataError as e:  # the files changed since they were read above
                raise UserError(str(e)) from None
            table = expand_features(pq.read_table(os.path.join(scratch, "job")))
            partial = os.path.join(scratch, "out.parquet")
            pq.write_table(table, partial, use_dictionary=False)
            os.replace(partial, out)
    finally:
        if owned:
            spark.stop()
    counts = report.totals()
    print(
        f"{args.deals}: {deals.num_rows} deals, {prices.num_rows} price rows -> {out}: {counts['rows']} rows "
        f"x {5 + history} features (dropped: no_tick {counts['no_tick']}, "
        f"missing_tick_values {counts['missing_tick_values']}, no_history {counts['no_history']})"
    )
    return 0
