"""Fault injection: what tests switch on through `POST /_sandbox/faults`.

Request faults answer the next `count` matching requests (by service, optionally by
operation) with an error instead of passing them on, the way AWS does when it throttles
or has a bad moment:
- `throttle`: S3 `503 SlowDown`, other services `400 ThrottlingException`;
- `5xx`: S3 `500 InternalError`, other services `503 ServiceUnavailable`.
Requests the sandbox makes to itself (its executors reading S3) are never faulted.

Job faults change how the next job of a kind behaves:
- `tuning_fails` (with `reason`): every training job of the next tuning job fails with that
  algorithm error, so the tuning job fails;
- `endpoint_stuck`: the next endpoint created or updated never leaves Creating/Updating;
- `endpoint_fails` (with `reason`): the next endpoint created or updated fails.
`GET /_sandbox/faults` shows what is pending and how many faults were injected.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from ml_demo_dagster.sandbox.protocol import AwsError, AwsRequest

REQUEST_ERRORS = ("throttle", "5xx")
JOB_FAULTS = ("tuning_fails", "endpoint_stuck", "endpoint_fails")
SERVICES = ("s3", "glue", "sagemaker", "sagemaker-runtime", "logs", "sts")


@dataclass
class RequestFault:
    service: str
    error: str
    count: int
    operation: str | None = None


@dataclass
class JobFault:
    job: str
    count: int
    reason: str


class Faults:
    """The pending faults and counters; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RequestFault] = []
        self._jobs: list[JobFault] = []
        self.injected: dict[str, int] = {}

    def add(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Add one fault from its JSON description; ValueError says what is wrong with it."""
        count = spec.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise ValueError("count must be a whole number >= 1")
        with self._lock:
            if "job" in spec:
                if spec["job"] not in JOB_FAULTS:
                    raise ValueError(f"job must be one of {', '.join(JOB_FAULTS)}")
                fault = JobFault(spec["job"], count, str(spec.get("reason") or "fault injected by ml-demo sandbox"))
                self._jobs.append(fault)
            else:
                if spec.get("service") not in SERVICES:
                    raise ValueError(f"service must be one of {', '.join(SERVICES)}")
                if spec.get("error") not in REQUEST_ERRORS:
                    raise ValueError(f"error must be one of {', '.join(REQUEST_ERRORS)}")
                fault = RequestFault(spec["service"], spec["error"], count, spec.get("operation"))
                self._requests.append(fault)
            return asdict(fault)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._jobs.clear()
            self.injected.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": [asdict(f) for f in self._requests],
                "jobs": [asdict(f) for f in self._jobs],
                "injected": dict(self.injected),
            }

    def for_request(self, request: AwsRequest) -> AwsError | None:
        """The error to answer `request` with, if a pending fault matches it (and uses it up)."""
        if request.internal or not request.service:
            return None
        with self._lock:
            for fault in self._requests:
                if fault.service != request.service:
                    continue
                if fault.operation and fault.operation != request.operation:
                    continue
                fault.count -= 1
                if fault.count == 0:
                    self._requests.remove(fault)
                key = f"{fault.service}:{fault.error}"
                self.injected[key] = self.injected.get(key, 0) + 1
                return _error(request.service, fault.error)
        return None

    def take_job(self, job: str | tuple[str, ...]) -> JobFault | None:
        """The next pending job fault of these kinds, used up; None if there is none."""
        kinds = (job,) if isinstance(job, str) else job
        with self._lock:
            for fault in self._jobs:
                if fault.job in kinds:
                    fault.count -= 1
                    if fault.count == 0:
                        self._jobs.remove(fault)
                    self.injected[fault.job] = self.injected.get(fault.job, 0) + 1
                    return JobFault(fault.job, 1, fault.reason)
        return None


def _error(service: str, kind: str) -> AwsError:
    if service == "s3":
        if kind == "throttle":
            return AwsError("SlowDown", "Please reduce your request rate.", 503)
        return AwsError("InternalError", "We encountered an internal error. Please try again.", 500)
    if kind == "throttle":
        return AwsError("ThrottlingException", "Rate exceeded", 400)
    return AwsError("ServiceUnavailable", "Service is unavailable, try again later.", 503)
