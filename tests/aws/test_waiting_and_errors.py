"""Waiting for remote jobs (progress, timeout, failure reason, stop on interrupt) and the
one-line explanations of the common setup mistakes. Pure: no AWS, no sandbox."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError
from dagster import DagsterExecutionInterruptedError

from ml_demo_dagster.aws.errors import explain
from ml_demo_dagster.aws.waiting import Job, RemoteJobFailed, RemoteTimeout, wait_for
from ml_demo_dagster.defs.aws_resources import GlueFeatureJob


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def job(states, stops, reason="boom", **kwargs) -> Job:
    states = iter(states)
    return Job(
        what="tuning job t", describe=lambda: {"Status": next(states), "Done": 3}, status=lambda d: d["Status"],
        succeeded=("Completed",), failed=("Failed", "Stopped"), reason=lambda d: reason,
        stop=lambda: stops.append("stop"), progress=lambda d: f"{d['Done']} done", timeout_key="aws.tuning_timeout_minutes",
        **kwargs,
    )  # fmt: skip


def test_waits_logs_each_change_and_returns_the_last_description():
    clock, logs, stops = FakeClock(), [], []
    done = wait_for(job(["InProgress"] * 5 + ["Completed"], stops), timeout_seconds=100, poll_seconds=2,
                    log=logs.append, clock=clock, sleep=clock.sleep)  # fmt: skip
    assert done["Status"] == "Completed" and clock.now == 10 and stops == []
    assert logs == ["tuning job t: InProgress (3 done), 0 s", "tuning job t: Completed (3 done), 10 s"]


def test_a_heartbeat_is_logged_at_least_every_minute():
    clock, logs = FakeClock(), []
    wait_for(job(["InProgress"] * 200 + ["Completed"], []), timeout_seconds=10_000, poll_seconds=1, log=logs.append,
             clock=clock, sleep=clock.sleep)  # fmt: skip
    assert len(logs) == 2 + 200 // 60


def test_failure_raises_with_the_remote_reason_in_one_line():
    clock, stops = FakeClock(), []
    with pytest.raises(RemoteJobFailed, match=r"^tuning job t Failed: All training jobs failed\. AlgorithmError: x$"):
        wait_for(job(["InProgress", "Failed"], stops, reason="All training jobs failed.\nAlgorithmError: x"),
                 timeout_seconds=100, poll_seconds=1, log=lambda m: None, clock=clock, sleep=clock.sleep)  # fmt: skip
    assert stops == []


def test_timeout_stops_the_job_and_names_the_config_key():
    clock, stops = FakeClock(), []
    with pytest.raises(RemoteTimeout, match="still InProgress after 30 s.*stopped it.*aws.tuning_timeout_minutes"):
        wait_for(job(["InProgress"] * 100, stops), timeout_seconds=30, poll_seconds=7, log=lambda m: None,
                 clock=clock, sleep=clock.sleep)  # fmt: skip
    assert stops == ["stop"] and clock.now == 30


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit])
def test_an_interrupted_wait_stops_the_remote_job_and_goes_on_interrupting(interruption):
    clock, stops = FakeClock(), []

    def sleep(seconds):
        raise interruption()

    with pytest.raises(interruption):
        wait_for(job(["InProgress"] * 3, stops), timeout_seconds=30, poll_seconds=1, log=lambda m: None,
                 clock=clock, sleep=sleep)  # fmt: skip
    assert stops == ["stop"]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, DagsterExecutionInterruptedError])
def test_an_interrupt_while_the_start_request_is_in_flight_stops_the_job(interruption):
    calls, logs = [], []

    def start():
        calls.append("start")
        raise interruption()  # the request went out; its answer never came back

    with pytest.raises(interruption):
        wait_for(job(["InProgress"], calls, start=start), timeout_seconds=30, poll_seconds=1, log=logs.append)
    assert calls == ["start", "stop"] and logs == ["tuning job t: stop requested"]


class FakeGlue:
    def __init__(self, runs):
        self.runs, self.stopped = runs, []

    def get_job_runs(self, JobName):  # noqa: N803 (boto3's names)
        return {"JobRuns": self.runs}

    def batch_stop_job_run(self, JobName, JobRunIds):  # noqa: N803
        self.stopped += JobRunIds


def test_a_glue_run_started_just_before_an_interrupt_is_found_by_its_arguments_and_stopped():
    request = {"JobName": "ml-demo-dev-features", "Arguments": {"--batch_id": "7", "--dagster-pipes-context": "abc"}}
    glue, logs = FakeGlue([
        {"Id": "jr_other", "Arguments": {"--batch_id": "7", "--dagster-pipes-context": "an earlier session"}},
        {"Id": "jr_mine", "Arguments": dict(request["Arguments"])},
    ]), []  # fmt: skip
    assert GlueFeatureJob._stop_unfollowed_run(glue, request, logs.append) == "jr_mine"
    assert glue.stopped == ["jr_mine"] and logs == ["Glue run jr_mine of job ml-demo-dev-features: stop requested"]
    assert GlueFeatureJob._stop_unfollowed_run(FakeGlue([]), request, logs.append) is None


def client_error(code: str, message: str, operation: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       operation)  # fmt: skip


@pytest.mark.parametrize(
    "error, service, expected",
    [
        (NoCredentialsError(), "glue", "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID"),
        (NoRegionError(), "sagemaker", "no AWS region: set project.region"),
        (client_error("NoSuchBucket", "The specified bucket does not exist", "PutObject"), "s3",
         "bucket my-bucket does not exist: create it"),
        (client_error("404", "Not Found", "HeadBucket", 404), "s3", "bucket my-bucket does not exist"),
        (client_error("AccessDeniedException", "User: arn:aws:sts::1:assumed-role/dev/x is not authorized to perform: "
                      "glue:StartJobRun on resource: arn:aws:glue:eu-west-2:1:job/j", "StartJobRun"), "glue",
         "StartJobRun: access denied: User: arn:aws:sts::1:assumed-role/dev/x is not authorized"),
        (client_error("ValidationException", "Could not assume role arn:aws:iam::1:role/missing. Please ensure that "
                      "the role exists and allows principal 'sagemaker.amazonaws.com' to assume the role.",
                      "CreateHyperParameterTuningJob"), "sagemaker",
         "the role cannot be used: Could not assume role arn:aws:iam::1:role/missing"),
        (client_error("AccessDeniedException", "User is not authorized to perform: iam:PassRole on resource: "
                      "arn:aws:iam::1:role/glue", "CreateJob"), "glue", "aws.glue_role_arn names an existing IAM role"),
        (client_error("ExpiredTokenException", "The security token included in the request is expired",
                      "GetJobRun"), "glue", "the AWS credentials are not valid (ExpiredTokenException)"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9/"), "s3", "is `ml-demo sandbox` running?"),
        (client_error("ResourceLimitExceeded", "The account-level service limit", "CreateEndpoint"), "sagemaker",
         "CreateEndpoint: ResourceLimitExceeded: The account-level service limit"),
    ],
)  # fmt: skip
def test_common_mistakes_get_one_line_naming_what_to_fix(error, service, expected):
    line = explain(error, service=service, bucket="my-bucket")
    assert expected in line and "\n" not in line
