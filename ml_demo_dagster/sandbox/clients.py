"""boto3 clients with which the sandbox's executors call the sandbox itself.

An executor reads a Glue script, a model artifact or a channel from S3, writes outputs and
logs, and looks up models and endpoint configs, through the same API as any client (so it
never depends on moto's internals). These requests carry a header that exempts them from
fault injection: the faults are meant for the aws target, not for the harness.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from ml_demo_dagster.sandbox.protocol import INTERNAL_HEADER

SANDBOX_ACCESS_KEY = "sandbox"  # any value works; these never leave the machine


class InternalClients:
    """One client per (service, region), made on first use; boto3 clients are thread-safe."""

    def __init__(self, url: str):
        self.url = url
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], Any] = {}

    def __call__(self, service: str, region: str) -> Any:
        with self._lock:
            client = self._clients.get((service, region))
            if client is None:
                client = boto3.session.Session().client(
                    service,
                    region_name=region,
                    endpoint_url=self.url,
                    aws_access_key_id=SANDBOX_ACCESS_KEY,
                    aws_secret_access_key=SANDBOX_ACCESS_KEY,
                    config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=120),
                )
                client.meta.events.register("before-send", _mark_internal)
                self._clients[(service, region)] = client
            return client


def _mark_internal(request, **_: Any) -> None:
    request.headers[INTERNAL_HEADER] = "1"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of s3://bucket/key."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def list_keys(s3, uri: str) -> list[str]:
    """Every key under an S3 prefix, in order (S3DataType S3Prefix semantics)."""
    bucket, prefix = split_s3_uri(uri)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", []) if not item["Key"].endswith("/")]
    return keys
