"""Waiting for a remote job the way a person watching it would want.

`wait_for` polls a describe call at the configured interval until the job ends, and:
- logs its progress: every change of status (with what the job says about itself, e.g.
  "3/10 training jobs done"), and a heartbeat at least once a minute;
- gives up at the configured timeout: it stops the job (`stop`) and raises RemoteTimeout
  naming the config key to raise;
- raises RemoteJobFailed with the job's own failure reason when it fails;
- stops the job when the wait is interrupted (a terminated Dagster run raises a
  BaseException such as DagsterExecutionInterruptedError or KeyboardInterrupt in the
  step), then lets the interruption go on.
No Dagster or boto3 imports: the caller passes the calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

HEARTBEAT_SECONDS = 60.0


class RemoteJobError(RuntimeError):
    """A remote job did not end as it should; the message is one line with the job's reason."""


class RemoteJobFailed(RemoteJobError):
    """The job ended Failed or Stopped: its own answer, not retried."""


class RemoteTimeout(RemoteJobError):
    """The job did not end within the configured time; it may still be running."""


def one_line(text: Any, limit: int = 1000) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass
class Job:
    """What to wait for and how to read its state."""

    what: str  # "Glue run jr_... of job ml-demo-dev-features"
    describe: Callable[[], dict[str, Any]]
    status: Callable[[dict[str, Any]], str]
    succeeded: Collection[str]
    failed: Collection[str]
    reason: Callable[[dict[str, Any]], str | None]
    stop: Callable[[], Any] | None = None
    # The request that starts the job, when the caller makes it: made inside the wait, so an
    # interrupt that lands while it is in flight stops the job too.
    start: Callable[[], Any] | None = None
    progress: Callable[[dict[str, Any]], str] | None = None
    timeout_key: str = ""  # the config key that sets the timeout, named in the error


def wait_for(
    job: Job,
    *,
    timeout_seconds: float,
    poll_seconds: float,
    log: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The job's last description once it succeeded; RemoteJobFailed / RemoteTimeout otherwise."""
    started = clock()
    deadline = started + timeout_seconds
    last_status, last_said, last_log = None, None, started
    try:
        if job.start is not None:
            job.start()
        while True:
            description = job.describe()
            status = job.status(description)
            said = job.progress(description) if job.progress else ""
            now = clock()
            if status != last_status or said != last_said or now - last_log >= HEARTBEAT_SECONDS:
                log(f"{job.what}: {status}{f' ({said})' if said else ''}, {now - started:.0f} s")
                last_status, last_said, last_log = status, said, now
            if status in job.succeeded:
                return description
            if status in job.failed:
                reason = job.reason(description) or "no reason given"
                raise RemoteJobFailed(one_line(f"{job.what} {status}: {reason}"))
            if now >= deadline:
                stopped = stop_job(job.what, job.stop, log)
                raise RemoteTimeout(one_line(
                    f"{job.what} still {status} after {timeout_seconds:.0f} s{stopped}; "
                    f"raise {job.timeout_key or 'its timeout'} if it needs longer"
                ))  # fmt: skip
            sleep(min(poll_seconds, max(0.0, deadline - now)) or poll_seconds)
    except Exception:
        raise
    except BaseException:  # interrupted (the Dagster run was terminated): the remote job must not run on
        stop_job(job.what, job.stop, log)
        raise


def stop_job(what: str, stop: Callable[[], Any] | None, log: Callable[[str], None]) -> str:
    """Ask for the job to stop, log what happened; the words for the error message."""
    if stop is None:
        return ""
    try:
        stop()
    except Exception as e:  # noqa: BLE001 (report, and let the original reason stand)
        log(f"{what}: could not stop it: {one_line(e)}")
        return " (could not stop it)"
    log(f"{what}: stop requested")
    return " (stopped it)"
