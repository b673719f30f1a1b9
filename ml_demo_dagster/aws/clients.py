"""boto3 clients for the aws target: one place for the region, retries and timeouts.

Every call retries with botocore's `standard` mode: throttling (ThrottlingException,
SlowDown, ...) and 5xx answers are retried up to `aws.max_attempts` times with exponential
backoff and jitter, so a busy moment of S3, Glue or SageMaker costs seconds, not the run.
The endpoint is boto3's usual one, or AWS_ENDPOINT_URL (the sandbox) when set: nothing
here knows which.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

_lock = threading.Lock()
_clients: dict[tuple[str, str, int, str], Any] = {}


def retry_config(region: str, max_attempts: int) -> Config:
    return Config(
        region_name=region,
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=70,
    )


def client(service: str, region: str, max_attempts: int = 8) -> Any:
    """A shared client per (service, region, attempts, AWS_ENDPOINT_URL); boto3 clients are thread-safe."""
    key = (service, region, max_attempts, os.environ.get("AWS_ENDPOINT_URL", ""))
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _clients[key] = boto3.session.Session().client(service, config=retry_config(region, max_attempts))
        return found


def forget() -> None:
    """Drop the cached clients (their endpoint and credentials were read when they were made)."""
    with _lock:
        _clients.clear()
