"""One local Spark session for every feature test that needs one."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def spark():
    """A local SparkSession (glue.spark.local_spark_session), shared by the whole test session."""
    from glue.spark import local_spark_session

    session = local_spark_session("ml-demo-tests", conf={"spark.master": "local[2]"})
    try:
        yield session
    finally:
        session.stop()
