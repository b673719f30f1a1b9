"""The AWS sandbox for the aws tests: one `ml-demo sandbox` process per test session.

Started as a user would start it (the CLI, port 0, its first stdout line read for the
URL), stopped with SIGTERM at the end of the session. `aws_env` points one test's boto3
calls and config at it (AWS_ENDPOINT_URL, dummy credentials, role ARNs, short waits);
`sandbox.fault(...)` switches faults on through the sandbox's control path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

REGION = "eu-west-2"
ROLES = {
    "ML_DEMO__AWS__GLUE_ROLE_ARN": "arn:aws:iam::123456789012:role/ml-demo-test-glue",
    "ML_DEMO__AWS__SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/ml-demo-test-sagemaker",
}


def wait_until(condition, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
    """Poll `condition()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class SandboxProcess:
    url: str
    process: subprocess.Popen
    log: Path

    def control(self, method: str, path: str, doc: dict | None = None) -> dict:
        data = json.dumps(doc).encode() if doc is not None else None
        request = urllib.request.Request(f"{self.url}/_sandbox/{path}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def fault(self, **spec) -> dict:
        return self.control("POST", "faults", spec)

    def clear_faults(self) -> dict:
        return self.control("DELETE", "faults")


def start_sandbox(log: Path) -> SandboxProcess:
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "ml_demo_dagster.cli", "sandbox", "--port", "0"],
            stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
        )  # fmt: skip
    first = process.stdout.readline().strip()  # the CLI prints it as soon as it listens
    if not first.startswith("AWS_ENDPOINT_URL=http://127.0.0.1:"):
        process.kill()
        raise RuntimeError(f"sandbox did not start: {first!r}; log: {log.read_text()[-2000:]}")
    return SandboxProcess(first.split("=", 1)[1], process, log)


def stop_sandbox(sandbox: SandboxProcess) -> int:
    sandbox.process.send_signal(signal.SIGTERM)
    try:
        return sandbox.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(sandbox.process.pid, signal.SIGKILL)
        raise


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    handle = start_sandbox(tmp_path_factory.mktemp("sandbox") / "sandbox.log")
    try:
        yield handle
    finally:
        stop_sandbox(handle)


@pytest.fixture
def aws_env(sandbox, monkeypatch):
    """This test's AWS calls and aws config go to the sandbox, with short waits; no faults pending."""
    sandbox.clear_faults()
    for name, value in {
        "AWS_ENDPOINT_URL": sandbox.url, "AWS_ACCESS_KEY_ID": "sandbox-test", "AWS_SECRET_ACCESS_KEY": "sandbox-test",
        "AWS_DEFAULT_REGION": REGION, "ML_DEMO__PROJECT__REGION": REGION,
        "ML_DEMO__AWS__POLL_INTERVAL_SECONDS": "0.3", **ROLES,
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield sandbox
    sandbox.clear_faults()


@pytest.fixture
def bucket(aws_env) -> str:
    """A fresh bucket in the sandbox for one test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return name


# Small and quick, with a learnable regime (momentum) so that a first model beats chance.
LEARNABLE_SMALL = {
    "ML_DEMO__EXPORT__BATCH_SIZE": "4000",
    "ML_DEMO__SIM__VOLATILITY": "5",
    "ML_DEMO__SIM__MOMENTUM": "6",
    "ML_DEMO__TUNING__MAX_JOBS": "2",
    "ML_DEMO__TUNING__MAX_PARALLEL_JOBS": "2",
    "ML_DEMO__TUNING__STATIC__EPOCHS": "5",
    # Ranges where every trial learns (two trials only: a diverging one must not be all there is).
    "ML_DEMO__TUNING__RANGES__LEARNING_RATE__MIN": "0.0001",
    "ML_DEMO__TUNING__RANGES__LEARNING_RATE__MAX": "0.01",
    "ML_DEMO__TUNING__RANGES__L1__MAX": "0.001",
    "ML_DEMO__TUNING__RANGES__WD__MAX": "0.001",
    "ML_DEMO__AWS__POLL_INTERVAL_SECONDS": "0.3",
}

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SMALL_BATCHES = {"ML_DEMO__EXPORT__BATCH_SIZE": "2000", "ML_DEMO__SIM__VOLATILITY": "5"}


def stream_batches(bucket: str, count: int, seed: int = 7, fixed_ids: bool = False) -> list[str]:
    """`count` simulated batches, in the seed's staging format, into s3://bucket/staging/; their ids.

    A batch's id is the export's wall-clock time, so the sandbox's tuning (seeded by the
    request, whose channel URIs hold the id) searches differently on each run. `fixed_ids`:
    the ids are one day after the market's start, the same every run (for a test whose
    SageMaker job names cannot meet another test's: its own environment)."""
    from ml_demo_dagster.config import load_config
    from ml_demo_dagster.core.store import open_store
    from streamer.runner import run_stream
    from streamer.sources import make_source

    config = load_config(environ={**SMALL_BATCHES, **os.environ})  # what the test set wins
    store = open_store(f"s3://{bucket}", region=REGION)
    # A fixed start: the same seed gives the same ticks and deals.
    source = make_source("sim", config, seed=seed, start_ms=START_MS)
    clock = (lambda: (START_MS + 86_400_000) / 1000) if fixed_ids else time.time
    stats = run_stream(config, source, store, max_batches=count, clock=clock)
    return list(stats.batch_ids)
