"""Local Spark for the feature job: one settings dict, shared by the Dagster resource and the CLI.

`LOCAL_SPARK_CONF` is what `dagster_pyspark.PySparkResource(spark_config=...)` takes, and
`local_spark_session` builds a session from the same dict for the CLI, tests and
benchmarks. On AWS Glue the session comes from Glue itself; nothing in glue/feature_job.py
depends on this module. The settings are the ones that made the job fast here (see
TOOLCHAIN.md "Spark"): Arrow on, few shuffle partitions, adaptive partition coalescing off
(it would merge the per-batch tasks into one on a 2-core machine), no UI, loopback only.
"""

from __future__ import annotations

import os
import sys
import warnings

LOCAL_SPARK_CONF: dict[str, str] = {
    "spark.master": "local[*]",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    # Room for a few 10,000-deal batches of 605 float columns in flight on a 24 GiB machine.
    "spark.driver.memory": "6g",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    # Python workers run the interpreter that runs the driver (the project's virtualenv).
    "spark.pyspark.python": sys.executable,
    "spark.pyspark.driver.python": sys.executable,
}


def local_spark_session(app_name: str = "ml-demo-features", conf: dict[str, str] | None = None):
    """A local SparkSession bound to 127.0.0.1, built from LOCAL_SPARK_CONF (plus `conf`)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # pyspark 4.3 warns on every Arrow call that pandas 3 is not fully supported; the job
    # never uses pandas (see TOOLCHAIN.md "Spark"), so the warning only hides real output.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    for key, value in {**LOCAL_SPARK_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
