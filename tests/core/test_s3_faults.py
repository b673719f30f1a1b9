"""S3 throttling and 5xx answers are retried with backoff, by boto3 (core/store.py) and by
pyarrow (glue/files.py): a fault-injecting proxy on 127.0.0.1 answers chosen requests with
503 SlowDown, 500 InternalError or 503 ServiceUnavailable in front of moto's server."""

from __future__ import annotations

import boto3
import pytest
from fault_proxy import FaultProxy

from glue import files
from ml_demo_dagster.core import store as store_module
from ml_demo_dagster.core.store import StoreError, open_store

BUCKET = "faults"


@pytest.fixture
def proxy(moto_endpoint, monkeypatch):
    s3 = boto3.client("s3", region_name="eu-west-2", endpoint_url=moto_endpoint)
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    proxy = FaultProxy(moto_endpoint).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    files.s3_filesystem.cache_clear()
    try:
        yield proxy
    finally:
        proxy.stop()
        files.s3_filesystem.cache_clear()


def _is(method, marker=""):
    return lambda m, path: m == method and marker in path


def test_store_retries_throttling_and_server_errors(proxy):
    store = open_store(f"s3://{BUCKET}/team", region="eu-west-2")
    assert store._client.meta.config.retries["mode"] == "standard"
    steps = [
        ("PUT", lambda: store.put_bytes("staging/deals-1700000000001.csv", b"d1")),
        ("GET", lambda: store.get_bytes("staging/deals-1700000000001.csv")),
        ("HEAD", lambda: store.exists("staging/deals-1700000000001.csv")),
        ("GET", lambda: list(store.list_keys("staging/"))),
        ("DELETE", lambda: store.delete("staging/deals-1700000000001.csv")),
    ]
    results = []
    for method, call in steps:
        proxy.fail(1, "SlowDown", _is(method))
        proxy.fail(1, "InternalError", _is(method))
        before = len(proxy.log)
        results.append(call())
        arrivals = proxy.log[before:]
        assert [a.injected for a in arrivals] == ["SlowDown", "InternalError", None], method
        assert arrivals[1].at > arrivals[0].at and arrivals[2].at > arrivals[1].at  # retried later, not at once
    assert results[1] == b"d1" and results[2] is True and results[3] == ["staging/deals-1700000000001.csv"]


def test_store_gives_up_after_its_attempts_with_one_clear_error(proxy, monkeypatch):
    monkeypatch.setattr(store_module, "S3_MAX_ATTEMPTS", 3)
    store = open_store(f"s3://{BUCKET}", region="eu-west-2")
    proxy.fail(100, "ServiceUnavailable", _is("PUT"))
    with pytest.raises(StoreError) as caught:
        store.put_bytes("a/b", b"x")
    assert len(proxy.injected()) == 3
    message = str(caught.value)
    assert f"s3://{BUCKET}" in message and "'a/b'" in message and "ServiceUnavailable" in message
    assert len(message.splitlines()) == 1


def test_feature_job_files_retry_throttling_and_server_errors(proxy):
    base = f"s3://{BUCKET}/features/1"
    # A read lands in a buffer of the object's size, so the object must hold an error body
    # (an S3 error answer is ~200 bytes; real part files are megabytes).
    payload = bytes(range(256)) * 16
    proxy.fail(2, "SlowDown", _is("PUT"))
    files.write_bytes(files.join(base, "part-00000.parquet"), payload)
    proxy.fail(1, "InternalError", _is("GET"))
    proxy.fail(1, "SlowDown", _is("GET"))
    assert files.read_bytes(files.join(base, "part-00000.parquet")) == payload
    proxy.fail(1, "ServiceUnavailable", _is("DELETE"))
    assert files.clear_folder(base) == 1
    assert [a.injected for a in proxy.injected()] == [
        "SlowDown", "SlowDown", "InternalError", "SlowDown", "ServiceUnavailable"
    ]  # fmt: skip
