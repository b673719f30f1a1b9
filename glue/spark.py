"""Local Spark for the feature job: one settings dict, shared by the Dagster resource and the CLI.

`local_spark_conf()` is what `dagster_pyspark.PySparkResource(spark_config=...)` takes, and
`local_spark_session` builds a session from the same dict for the CLI, tests and
benchmarks. On AWS Glue the session comes from Glue itself; nothing in glue/feature_job.py
depends on this module. The settings are the ones that made the job fast here (see
TOOLCHAIN.md "Spark" and BENCHMARKS.md "Features"): no UI, loopback only, and a driver
JVM tuned for starting fast, because every Dagster run starts its own session and the
job's heavy work runs in Python workers, not in the JVM:
- `-XX:TieredStopAtLevel=1`: the quick (C1) JIT compiler only. The optimising compiler's
  threads competed with the job for the 2 cores at start-up and earned nothing back in a
  JVM that mostly schedules tasks (session start plus first job: 16 s -> 11 s here);
- a class-data-sharing archive of the classes Spark loads (AppCDS), built once per
  virtualenv by `python -m glue.spark --class-archive` (the Makefile runs it after
  installing): the JVM maps them instead of loading and verifying ~10,000 classes from
  the jars (session start 8 s -> 4 s here). Without the archive, Spark starts as usual.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

FAST_START_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"

# pyspark 4.3 warns, the first time a process makes an Arrow or pandas UDF call, that pandas 3
# is not fully supported; the job never uses pandas (see TOOLCHAIN.md "Spark"), so the warning
# only hides real output. Set here, at import, because a Dagster run's session is started by
# dagster-pyspark from local_spark_conf(), not by local_spark_session below.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)

_BASE_CONF: dict[str, str] = {
    "spark.master": "local[*]",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    # The job's data stays in Python workers; the JVM holds task results (counts) only.
    "spark.driver.memory": "2g",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    # Python workers run the interpreter that runs the driver (the project's virtualenv).
    "spark.pyspark.python": sys.executable,
    "spark.pyspark.driver.python": sys.executable,
}


def class_archive_path() -> Path:
    """Where this virtualenv's class archive lives; its name changes with pyspark and Java.

    An archive only fits the JVM binary and class path that wrote it: naming it after
    both means a new pyspark or Java never picks up a stale one (it just is not found).
    """
    import pyspark

    java = _java_binary()
    stat = os.stat(java) if java else None
    identity = f"{pyspark.__version__}|{java}|{stat.st_size if stat else 0}|{stat.st_mtime_ns if stat else 0}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return Path(sys.prefix) / "share" / "ml-demo" / f"spark-classes-{pyspark.__version__}-{digest}.jsa"


def _java_binary() -> str | None:
    home = os.environ.get("JAVA_HOME")
    found = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return os.path.realpath(found) if found and os.path.exists(found) else None


def local_spark_conf() -> dict[str, str]:
    """The local session's settings, with the class archive if this virtualenv has one."""
    options = [FAST_START_JAVA_OPTIONS]
    archive = class_archive_path()
    if archive.is_file():
        # -Xlog:cds*=off: if the archive no longer fits (the JVM checks), start without it quietly.
        options += [f"-XX:SharedArchiveFile={archive}", "-Xlog:cds*=off"]
    return {**_BASE_CONF, "spark.driver.extraJavaOptions": " ".join(options)}


def local_spark_session(app_name: str = "ml-demo-features", conf: dict[str, str] | None = None):
    """A local SparkSession bound to 127.0.0.1, built from local_spark_conf() (plus `conf`)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    for key, value in {**local_spark_conf(), **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _typical_work(spark) -> None:
    """What a feature run does to the JVM: a Python RDD job with results, and DataFrame calls."""
    assert spark.sparkContext.parallelize(range(8), 4).mapPartitions(lambda xs: [sum(xs)]).collect()
    spark.range(100).selectExpr("id % 7 AS k").groupBy("k").count().collect()


def _stop_and_wait_for_jvm(spark) -> int:
    """Stop the session and its JVM; the JVM's exit code (it writes the archive as it exits)."""
    from pyspark import SparkContext

    process = SparkContext._gateway.proc  # set by pyspark.java_gateway.launch_gateway
    spark.stop()
    SparkContext._gateway.shutdown()
    process.stdin.close()  # the gateway JVM exits when its stdin closes
    code = process.wait(timeout=120)
    SparkContext._gateway = SparkContext._jvm = None  # the next session launches a new JVM
    return code


def build_class_archive(target: Path) -> str:
    """Write the class archive to `target` (atomically) and check that a JVM starts with it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    dump = {
        "spark.driver.extraJavaOptions": f"{FAST_START_JAVA_OPTIONS} -XX:ArchiveClassesAtExit={partial} -Xlog:cds*=off"
    }
    try:
        spark = local_spark_session("ml-demo-class-archive", {**_BASE_CONF, **dump})
        _typical_work(spark)
        code = _stop_and_wait_for_jvm(spark)
        if code != 0 or not partial.is_file() or partial.stat().st_size == 0:
            return f"not built: the JVM exited with {code} without writing {partial.name}"
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return f"built {target} ({target.stat().st_size / 2**20:.0f} MiB)"


def _check_archive(target: Path) -> str:
    """Start Spark with the archive in strict mode (fails if it does not fit); remove it if so."""
    strict = {"spark.driver.extraJavaOptions": f"{FAST_START_JAVA_OPTIONS} -XX:SharedArchiveFile={target} -Xshare:on"}
    started = time.perf_counter()
    try:
        spark = local_spark_session("ml-demo-class-archive-check", {**_BASE_CONF, **strict})
        _typical_work(spark)
        _stop_and_wait_for_jvm(spark)
    except Exception as e:  # noqa: BLE001 (any failure means: do not use the archive)
        target.unlink(missing_ok=True)
        return f"removed: Spark did not start with it ({type(e).__name__})"
    return f"checked: Spark started with it and ran a job in {time.perf_counter() - started:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glue.spark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--class-archive", action="store_true", help="build this virtualenv's class archive")
    parser.add_argument("--force", action="store_true", help="rebuild it even if it exists")
    args = parser.parse_args(argv)
    if not args.class_archive:
        parser.print_help()
        return 2
    target = class_archive_path()
    if target.is_file() and not args.force:
        print(f"Spark class archive: {target} exists")
        return 0
    if _java_binary() is None:
        print("Spark class archive: no java found; Spark will start without one")
        return 0
    print(f"Spark class archive: {build_class_archive(target)}")
    if target.is_file():
        print(f"Spark class archive: {_check_archive(target)}")
    return 0  # the archive only makes Spark start faster: never fail an install over it


if __name__ == "__main__":
    sys.exit(main())
