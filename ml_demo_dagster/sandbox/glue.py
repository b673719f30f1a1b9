"""Glue job runs that really run: the job's script, on local Spark, against the sandbox's S3.

moto keeps the job definitions (CreateJob, GetJob); the sandbox adds UpdateJob, which moto
lacks, answers the run calls (StartJobRun, GetJobRun, GetJobRuns, BatchStopJobRun) and
executes each run the way Glue does:
- the script is read from the job's `Command.ScriptLocation` in S3, and each archive in
  `--extra-py-files` too; the archives go on the Python path of the driver (PYTHONPATH) and
  of the Spark workers (`--py-files`), as on Glue;
- `--additional-python-modules` is honoured without a network: each requirement must
  already be installed in the sandbox's environment, else the run fails as Glue's
  installer would;
- the script runs as `python script --JOB_ID .. --JOB_RUN_ID .. --JOB_NAME <job>
  --job-bookmark-option job-bookmark-disable` plus the job's default arguments overridden
  by the run's, with a local Spark session preconfigured through PYSPARK_SUBMIT_ARGS (the
  settings of glue/spark.py), AWS_ENDPOINT_URL pointing at the sandbox and the sandbox's
  own credentials (a Glue job runs as its role, never with the caller's);
- state: STARTING -> RUNNING -> SUCCEEDED, or FAILED with the script's exception line as
  ErrorMessage, or STOPPED (BatchStopJobRun), or TIMEOUT after the run's Timeout minutes;
- stdout and stderr stream to CloudWatch Logs, `/aws-glue/jobs/output` and
  `/aws-glue/jobs/error`, one log stream per run id, while the run goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_demo_dagster.sandbox.clients import InternalClients, split_s3_uri
from ml_demo_dagster.sandbox.protocol import AwsError, now

log = logging.getLogger(__name__)
LOG_GROUP = "/aws-glue/jobs"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED", "TIMEOUT", "ERROR")
_STOP_GRACE_SECONDS = 10
# Environment variables a run inherits from the sandbox (everything else, AWS_* above all, is set here).
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "JAVA_HOME", "TMPDIR", "SPARK_HOME", "USER")


@dataclass
class GlueRun:
    id: str
    job_name: str
    region: str
    arguments: dict[str, str]  # as given to StartJobRun
    job: dict[str, Any]  # the job definition at start
    timeout_minutes: int
    state: str = "STARTING"
    error: str | None = None
    started_on: Any = field(default_factory=now)
    modified_on: Any = field(default_factory=now)
    completed_on: Any = None
    process: subprocess.Popen | None = None
    stop_requested: bool = False

    def describe(self) -> dict[str, Any]:
        out = {
            "Id": self.id,
            "Attempt": 0,
            "JobName": self.job_name,
            "JobMode": "SCRIPT",
            "StartedOn": self.started_on,
            "LastModifiedOn": self.modified_on,
            "JobRunState": self.state,
            "Arguments": dict(self.arguments),
            "PredecessorRuns": [],
            "AllocatedCapacity": self.job.get("NumberOfWorkers", 2),
            "Timeout": self.timeout_minutes,
            "WorkerType": self.job.get("WorkerType", "G.1X"),
            "NumberOfWorkers": self.job.get("NumberOfWorkers", 2),
            "LogGroupName": LOG_GROUP,
            "GlueVersion": self.job.get("GlueVersion", "5.0"),
            "ExecutionClass": "STANDARD",
        }
        if self.completed_on is not None:
            out["CompletedOn"] = self.completed_on
            out["ExecutionTime"] = int((self.completed_on - self.started_on).total_seconds())
        if self.error:
            out["ErrorMessage"] = self.error
        return out


def exception_line(stderr: str) -> str | None:
    """The exception line of the last Python traceback in `stderr` ("Type: message")."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return None
    for line in lines[starts[-1] + 1 :]:
        if line and not line[0].isspace():
            return line.strip()
    return None


class LogShipper:
    """Lines of one stream of one run, sent to CloudWatch Logs every half second."""

    def __init__(self, clients: InternalClients, region: str, group: str, stream: str):
        self._logs = clients("logs", region)
        self.group, self.stream = group, stream
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._ready = False
        self._thread = threading.Thread(target=self._loop, name=f"glue-logs-{stream[:10]}", daemon=True)
        self._thread.start()

    def add(self, line: str) -> None:
        with self._lock:
            self._pending.append({"timestamp": int(time.time() * 1000), "message": line.rstrip("\n") or " "})

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._done.wait(0.5):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            events, self._pending = self._pending, []
        if not events:
            return
        try:
            if not self._ready:
                for call, kwargs in (
                    (self._logs.create_log_group, {"logGroupName": self.group}),
                    (self._logs.create_log_stream, {"logGroupName": self.group, "logStreamName": self.stream}),
                ):
                    with contextlib.suppress(self._logs.exceptions.ResourceAlreadyExistsException):
                        call(**kwargs)
                self._ready = True
            for i in range(0, len(events), 5000):
                self._logs.put_log_events(
                    logGroupName=self.group, logStreamName=self.stream, logEvents=events[i : i + 5000]
                )
        except Exception:  # noqa: BLE001 (logs are best effort; the run goes on)
            log.exception("cannot ship Glue logs to %s/%s", self.group, self.stream)


def spark_submit_args(py_files: list[str]) -> str:
    """PYSPARK_SUBMIT_ARGS for a local session with the project's Spark settings."""
    from glue.spark import local_spark_conf

    conf = dict(local_spark_conf())
    conf.pop("spark.pyspark.driver.python", None)
    args = ["--master", conf.pop("spark.master", "local[*]")]
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    if py_files:
        args += ["--py-files", ",".join(py_files)]
    return " ".join(shlex.quote(a) for a in args) + " pyspark-shell"


def missing_requirements(spec: str) -> list[str]:
    """The requirements of `--additional-python-modules` that this environment does not satisfy."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement

    missing = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        try:
            requirement = Requirement(item)
            installed = version(requirement.name)
        except (InvalidRequirement, PackageNotFoundError):
            missing.append(item)
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            missing.append(f"{item} (installed: {installed})")
    return missing


class GlueRuns:
    """The sandbox's Glue job runs, by job and run id."""

    def __init__(self, clients: InternalClients, url: str):
        self.clients, self.url = clients, url
        self._lock = threading.Lock()
        self._runs: dict[str, GlueRun] = {}

    # --- API -------------------------------------------------------------------------------

    def start_job_run(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("JobName")
        if not name:
            raise AwsError("InvalidInputException", "JobName is required")
        glue = self.clients("glue", region)
        try:
            job = glue.get_job(JobName=name)["Job"]
        except glue.exceptions.EntityNotFoundException:
            raise AwsError("EntityNotFoundException", f"Job with name: {name} not found.") from None
        if job.get("Command", {}).get("Name") not in ("glueetl", "pythonshell"):
            raise AwsError("InvalidInputException", f"Job {name}: unsupported command {job.get('Command')}")
        limit = int(job.get("ExecutionProperty", {}).get("MaxConcurrentRuns", 1))
        with self._lock:
            running = [r for r in self._runs.values() if r.job_name == name and r.state not in TERMINAL]
            if len(running) >= limit:
                raise AwsError(
                    "ConcurrentRunsExceededException",
                    f"Concurrent runs exceeded for {name}: {len(running)} of MaxConcurrentRuns {limit}",
                )
            run = GlueRun(
                id="jr_" + hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
                job_name=name,
                region=region,
                arguments={str(k): str(v) for k, v in (body.get("Arguments") or {}).items()},
                job=job,
                timeout_minutes=int(body.get("Timeout") or job.get("Timeout") or 2880),
            )
            self._runs[run.id] = run
        threading.Thread(target=self._execute, args=(run,), name=f"glue-{run.id[:11]}", daemon=True).start()
        return {"JobRunId": run.id}

    def update_job(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        """UpdateJob (moto lacks it): the job's definition is replaced by JobUpdate, as in Glue;
        its name and tags stay."""
        name, update = body["JobName"], dict(body["JobUpdate"])
        glue = self.clients("glue", region)
        try:
            glue.get_job(JobName=name)
        except glue.exceptions.EntityNotFoundException:
            raise AwsError("EntityNotFoundException", f"Job with name: {name} not found.") from None
        arn = f"arn:aws:glue:{region}:123456789012:job/{name}"
        tags = glue.get_tags(ResourceArn=arn).get("Tags") or {}
        with self._lock:  # no run may start from a half-replaced definition
            glue.delete_job(JobName=name)
            glue.create_job(Name=name, **update, **({"Tags": tags} if tags else {}))
        return {"JobName": name}

    def get_job_run(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"JobRun": self._run(body.get("JobName"), body.get("RunId")).describe()}

    def get_job_runs(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            runs = [r for r in self._runs.values() if r.job_name == body.get("JobName")]
        runs.sort(key=lambda r: r.started_on, reverse=True)
        return {"JobRuns": [r.describe() for r in runs]}

    def batch_stop_job_run(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("JobName")
        done, errors = [], []
        for run_id in body.get("JobRunIds") or []:
            with self._lock:
                run = self._runs.get(run_id)
            if run is None or run.job_name != name:
                errors.append({"JobName": name, "JobRunId": run_id, "ErrorDetail": {
                    "ErrorCode": "EntityNotFoundException", "ErrorMessage": f"Job run {run_id} not found"}})  # fmt: skip
            elif run.state in TERMINAL:
                errors.append({"JobName": name, "JobRunId": run_id, "ErrorDetail": {
                    "ErrorCode": "InvalidInputException", "ErrorMessage": f"Job run {run_id} is {run.state}"}})  # fmt: skip
            else:
                self._stop(run)
                done.append({"JobName": name, "JobRunId": run_id})
        return {"SuccessfulSubmissions": done, "Errors": errors}

    def _run(self, name: str | None, run_id: str | None) -> GlueRun:
        with self._lock:
            run = self._runs.get(run_id or "")
        if run is None or run.job_name != name:
            raise AwsError("EntityNotFoundException", f"Job run {run_id} of job {name} not found")
        return run

    def stop_all(self) -> None:
        with self._lock:
            runs = [r for r in self._runs.values() if r.state not in TERMINAL]
        for run in runs:
            self._stop(run)

    def _stop(self, run: GlueRun) -> None:
        run.stop_requested = True
        self._set(run, "STOPPING")
        process = run.process
        if process is not None and process.poll() is None:
            _kill_group(process, signal.SIGTERM)

    # --- execution -------------------------------------------------------------------------

    def _set(self, run: GlueRun, state: str, error: str | None = None) -> None:
        with self._lock:
            if run.state in TERMINAL:
                return
            run.state = state
            run.modified_on = now()
            if error:
                run.error = error
            if state in TERMINAL:
                run.completed_on = run.modified_on

    def _execute(self, run: GlueRun) -> None:
        workdir = Path(tempfile.mkdtemp(prefix=f"sandbox-glue-{run.id[:11]}-"))
        shippers = [LogShipper(self.clients, run.region, f"{LOG_GROUP}/{kind}", run.id) for kind in ("output", "error")]
        try:
            self._set(run, "RUNNING")
            state, error = self._run_script(run, workdir, shippers)
            self._set(run, state, error)
        except Exception as e:  # noqa: BLE001 (whatever goes wrong is the run's failure, not the server's)
            log.exception("Glue run %s", run.id)
            self._set(run, "FAILED", f"{type(e).__name__}: {e}")
        finally:
            for shipper in shippers:
                shipper.close()
            shutil.rmtree(workdir, ignore_errors=True)

    def _arguments(self, run: GlueRun) -> dict[str, str]:
        merged = {str(k): str(v) for k, v in (run.job.get("DefaultArguments") or {}).items()}
        merged.update(run.arguments)
        return merged

    def _fetch(self, run: GlueRun, uri: str, folder: Path) -> Path:
        bucket, key = split_s3_uri(uri)
        target = folder / key.replace("/", "_")
        s3 = self.clients("s3", run.region)
        try:
            target.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            raise FileNotFoundError(f"{uri} does not exist") from None
        return target

    def _run_script(self, run: GlueRun, workdir: Path, shippers: list[LogShipper]) -> tuple[str, str | None]:
        arguments = self._arguments(run)
        try:
            script = self._fetch(run, run.job["Command"]["ScriptLocation"], workdir)
            extra = [
                str(self._fetch(run, uri.strip(), workdir))
                for uri in arguments.get("--extra-py-files", "").split(",")
                if uri.strip()
            ]
        except (FileNotFoundError, ValueError) as e:
            return "FAILED", f"Script or module not found: {e}"
        missing = missing_requirements(arguments.get("--additional-python-modules", ""))
        if missing:
            return "FAILED", (
                "ImportError: --additional-python-modules could not be installed: " + ", ".join(missing)
                + " (the sandbox installs nothing: install them in its environment)"
            )  # fmt: skip
        argv = ["--JOB_ID", f"j_{hashlib.sha256(run.job_name.encode()).hexdigest()[:32]}", "--JOB_RUN_ID", run.id,
                "--JOB_NAME", run.job_name, "--job-bookmark-option", "job-bookmark-disable"]  # fmt: skip
        for key, value in arguments.items():
            argv += [key, value]
        env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        env.update(
            AWS_ENDPOINT_URL=self.url,
            AWS_ACCESS_KEY_ID="sandbox-glue-role",
            AWS_SECRET_ACCESS_KEY="sandbox-glue-role",
            AWS_DEFAULT_REGION=run.region,
            AWS_REGION=run.region,
            PYTHONPATH=os.pathsep.join(extra),
            PYTHONUNBUFFERED="1",
            PYSPARK_PYTHON=sys.executable,
            PYSPARK_SUBMIT_ARGS=spark_submit_args(extra),
            SPARK_LOCAL_IP="127.0.0.1",
            GLUE_VERSION=str(run.job.get("GlueVersion", "5.0")),
        )
        if run.stop_requested:
            return "STOPPED", None
        process = subprocess.Popen(
            [sys.executable, str(script), *argv], cwd=workdir, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True,
        )  # fmt: skip
        run.process = process
        if run.stop_requested:  # a stop that came while the process started
            _kill_group(process, signal.SIGTERM)
        stderr: list[str] = []
        readers = [
            threading.Thread(target=_pump, args=(process.stdout, shippers[0], None), daemon=True),
            threading.Thread(target=_pump, args=(process.stderr, shippers[1], stderr), daemon=True),
        ]
        for reader in readers:
            reader.start()
        timed_out = False
        try:
            process.wait(timeout=run.timeout_minutes * 60)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process, signal.SIGTERM)
        _wait_or_kill(process)
        for reader in readers:
            reader.join(timeout=30)
        if timed_out:
            return "TIMEOUT", f"Job run timed out after {run.timeout_minutes} minutes"
        if run.stop_requested:
            return "STOPPED", None
        if process.returncode == 0:
            return "SUCCEEDED", None
        text = "".join(stderr)
        return "FAILED", exception_line(text) or _last_line(text) or f"the script exited with code {process.returncode}"


def _pump(stream, shipper: LogShipper, keep: list[str] | None) -> None:
    for line in stream:
        shipper.add(line)
        if keep is not None:
            keep.append(line)
            if len(keep) > 5000:
                del keep[:1000]
    stream.close()


def _last_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(process.pid, sig)


def _wait_or_kill(process: subprocess.Popen) -> None:
    """Wait for the run's process group to end; SIGKILL it after a grace period."""
    try:
        process.wait(timeout=_STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        _kill_group(process, signal.SIGKILL)
        process.wait()
    # The Spark JVM is in the same process group; make sure nothing of the run outlives it.
    _kill_group(process, signal.SIGKILL)
