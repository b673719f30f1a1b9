"""Fixtures shared by the whole suite: an isolated environment, and moto's S3 server."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# Tests never talk to real AWS: dummy credentials, and a region, for every test.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-2")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.pop("AWS_PROFILE", None)
for name in list(os.environ):
    if name.startswith("ML_DEMO__") or name == "ML_DEMO_CONFIG":
        del os.environ[name]
# Streamer spools (one per source and store) go to a temporary folder, never the repository's.
_SPOOLS = tempfile.mkdtemp(prefix="ml-demo-test-spools-")
atexit.register(shutil.rmtree, _SPOOLS, ignore_errors=True)
os.environ["ML_DEMO__STREAM__SPOOL"] = os.path.join(_SPOOLS, "{source}-{store}.spool")


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's S3 (and friends) server on 127.0.0.1, for the whole test session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_endpoint, monkeypatch):
    """Point boto3 at moto for one test; returns the endpoint URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return moto_endpoint
