"""glue.spark: the local session's settings, with and without this virtualenv's class archive."""

from __future__ import annotations

import sys

from glue import spark as local_spark


def test_the_class_archive_is_used_only_when_it_exists(tmp_path, monkeypatch):
    archive = tmp_path / "spark-classes.jsa"
    monkeypatch.setattr(local_spark, "class_archive_path", lambda: archive)
    options = local_spark.local_spark_conf()["spark.driver.extraJavaOptions"].split()
    assert options == ["-XX:TieredStopAtLevel=1"]
    archive.write_bytes(b"archive")
    options = local_spark.local_spark_conf()["spark.driver.extraJavaOptions"].split()
    assert options == ["-XX:TieredStopAtLevel=1", f"-XX:SharedArchiveFile={archive}", "-Xlog:cds*=off"]


def test_the_archive_is_named_after_pyspark_and_java_and_lives_in_the_virtualenv():
    import pyspark

    path = local_spark.class_archive_path()
    assert path.is_relative_to(sys.prefix) and path.suffix == ".jsa"
    assert f"-{pyspark.__version__}-" in path.name
    assert local_spark.class_archive_path() == path  # stable from call to call


def test_local_sessions_stay_on_loopback_and_use_this_interpreter():
    conf = local_spark.local_spark_conf()
    assert conf["spark.driver.bindAddress"] == conf["spark.driver.host"] == "127.0.0.1"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.pyspark.python"] == sys.executable
