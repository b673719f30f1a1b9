"""`ml-demo sandbox`: AWS on loopback whose jobs really run.

Glue runs here execute small scripts (no Spark) so that what the sandbox does with a run
is tested quickly: the arguments as Glue passes them, --extra-py-files, failure with the
script's error, logs in CloudWatch, stop. The feature job itself runs in the sandbox in
test_aws_target.py. SageMaker: a tuning job from the request alone, transform jobs and
endpoints that serve the model with the local endpoint code, and the faults tests use.
"""

from __future__ import annotations

import io
import json
import signal
import zipfile

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import REGION, ROLES, start_sandbox, stop_sandbox, wait_until

from ml_demo_dagster.aws import requests as rq
from ml_demo_dagster.config import load_config
from ml_demo_dagster.core.linear_learner import train
from ml_demo_dagster.sandbox.training import pack_artifact

GLUE_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED", "TIMEOUT")


def clients():
    return (boto3.client(s, region_name=REGION) for s in ("s3", "glue", "sagemaker", "logs"))


def glue_job(s3, glue, bucket: str, name: str, script: str, default_arguments: dict | None = None) -> None:
    s3.put_object(Bucket=bucket, Key=f"scripts/{name}.py", Body=script.encode())
    glue.create_job(
        Name=name, Role=ROLES["ML_DEMO__AWS__GLUE_ROLE_ARN"], GlueVersion="5.0", WorkerType="G.1X", NumberOfWorkers=2,
        Command={"Name": "glueetl", "ScriptLocation": f"s3://{bucket}/scripts/{name}.py", "PythonVersion": "3"},
        DefaultArguments=default_arguments or {}, ExecutionProperty={"MaxConcurrentRuns": 2},
    )  # fmt: skip


def finished(glue, name: str, run_id: str) -> dict:
    def state():
        run = glue.get_job_run(JobName=name, RunId=run_id)["JobRun"]
        return run if run["JobRunState"] in GLUE_TERMINAL else None

    return wait_until(state, timeout=60, what=f"Glue run {run_id}")


def log_lines(logs, group: str, stream: str) -> list[str]:
    def lines():
        try:
            return [e["message"] for e in logs.get_log_events(logGroupName=group, logStreamName=stream)["events"]]
        except logs.exceptions.ResourceNotFoundException:
            return None

    return wait_until(lines, timeout=10, what=f"log stream {group}/{stream}")


ECHO = """
import json, sys, os
import boto3
from helper import greeting
print(greeting())
args = sys.argv[1:]
boto3.client("s3").put_object(Bucket=os.environ["OUT_BUCKET"] if "OUT_BUCKET" in os.environ else args[args.index("--out_bucket") + 1],
                              Key="echo.json", Body=json.dumps({"argv": args, "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
                              "key": os.environ.get("AWS_ACCESS_KEY_ID")}))
"""


def test_glue_run_runs_the_script_from_s3_with_glues_arguments(bucket):
    s3, glue, _, logs = clients()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("helper.py", "def greeting():\n    return 'hello from the extra-py-files zip'\n")
    s3.put_object(Bucket=bucket, Key="lib/helper.zip", Body=archive.getvalue())
    glue_job(
        s3, glue, bucket, "echo-job", ECHO, {"--extra-py-files": f"s3://{bucket}/lib/helper.zip", "--mode": "default"}
    )

    run_id = glue.start_job_run(JobName="echo-job", Arguments={"--out_bucket": bucket, "--mode": "run"})["JobRunId"]
    run = finished(glue, "echo-job", run_id)

    assert run["JobRunState"] == "SUCCEEDED", run.get("ErrorMessage")
    assert run["Arguments"] == {"--out_bucket": bucket, "--mode": "run"}
    echo = json.loads(s3.get_object(Bucket=bucket, Key="echo.json")["Body"].read())
    argv = echo["argv"]
    pairs = dict(zip(argv[::2], argv[1::2], strict=True))
    assert pairs["--JOB_NAME"] == "echo-job" and pairs["--JOB_RUN_ID"] == run_id
    assert pairs["--mode"] == "run"  # the run's argument overrides the job's default
    assert pairs["--extra-py-files"] == f"s3://{bucket}/lib/helper.zip"
    # The script talks to the sandbox, with the sandbox's credentials, never the caller's.
    assert echo["endpoint"].startswith("http://127.0.0.1:") and echo["key"] != "sandbox-test"
    assert "hello from the extra-py-files zip" in log_lines(logs, "/aws-glue/jobs/output", run_id)


def test_glue_run_fails_with_the_scripts_error_in_errormessage_and_logs(bucket):
    s3, glue, _, logs = clients()
    glue_job(
        s3, glue, bucket, "failing-job", "print('working')\nraise ValueError('batch 17: line 3 field type: bad')\n"
    )
    run_id = glue.start_job_run(JobName="failing-job")["JobRunId"]
    run = finished(glue, "failing-job", run_id)
    assert run["JobRunState"] == "FAILED"
    assert run["ErrorMessage"] == "ValueError: batch 17: line 3 field type: bad"
    assert any("Traceback" in line for line in log_lines(logs, "/aws-glue/jobs/error", run_id))


def test_glue_run_stops_on_batch_stop_job_run(bucket):
    s3, glue, _, _ = clients()
    script = "import time\nprint('started', flush=True)\ntime.sleep(600)\n"
    glue_job(s3, glue, bucket, "slow-job", script)
    run_id = glue.start_job_run(JobName="slow-job")["JobRunId"]
    wait_until(lambda: glue.get_job_run(JobName="slow-job", RunId=run_id)["JobRun"]["JobRunState"] == "RUNNING")
    answer = glue.batch_stop_job_run(JobName="slow-job", JobRunIds=[run_id, "jr_unknown"])
    assert [s["JobRunId"] for s in answer["SuccessfulSubmissions"]] == [run_id]
    assert answer["Errors"][0]["JobRunId"] == "jr_unknown"
    assert finished(glue, "slow-job", run_id)["JobRunState"] == "STOPPED"


def test_glue_run_fails_when_additional_python_modules_are_not_installed(bucket):
    s3, glue, _, _ = clients()
    glue_job(s3, glue, bucket, "modules-job", "print('never')\n",
             {"--additional-python-modules": "numpy,no-such-package-ml-demo==1.0"})  # fmt: skip
    run = finished(glue, "modules-job", glue.start_job_run(JobName="modules-job")["JobRunId"])
    assert run["JobRunState"] == "FAILED"
    assert "no-such-package-ml-demo==1.0" in run["ErrorMessage"] and "numpy" not in run["ErrorMessage"]


def _data(rng, n: int, d: int = 605) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] + 0.7 * rng.normal(size=n) > 0).astype(np.int8)
    return X, y


def _csv(X, y=None) -> bytes:
    rows = X if y is None else np.column_stack([y, X])
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows).encode()


@pytest.fixture
def tuning_setup(bucket):
    rng = np.random.default_rng(3)
    s3 = boto3.client("s3", region_name=REGION)
    for name, n in (("train", 600), ("validation", 300)):
        X, y = _data(rng, n)
        s3.put_object(Bucket=bucket, Key=f"ds/{name}/{name}.csv", Body=_csv(X, y))
    config = load_config(environ={**ROLES, "ML_DEMO__TUNING__MAX_JOBS": "3", "ML_DEMO__TUNING__STRATEGY": "Random",
                                  "ML_DEMO__TUNING__STATIC__EPOCHS": "3"})  # fmt: skip
    return bucket, config


def _tune(sagemaker, config, bucket: str, name: str) -> dict:
    request = rq.tuning_job(
        config, name, f"s3://{bucket}/ds/train/", f"s3://{bucket}/ds/validation/", f"s3://{bucket}/out"
    )
    sagemaker.create_hyper_parameter_tuning_job(**request)

    def ended():
        d = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        return d if d["HyperParameterTuningJobStatus"] not in ("InProgress", "Stopping") else None

    return wait_until(ended, timeout=180, interval=0.5, what=f"tuning job {name}")


def test_tuning_job_runs_its_trials_from_the_request_and_names_the_best(tuning_setup):
    bucket, config = tuning_setup
    s3, _, sagemaker, _ = clients()
    job = _tune(sagemaker, config, bucket, "tune-ok")
    assert job["HyperParameterTuningJobStatus"] == "Completed", job.get("FailureReason")
    assert job["TrainingJobStatusCounters"]["Completed"] == 3
    summaries = sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="tune-ok", SortBy="FinalObjectiveMetricValue", SortOrder="Descending"
    )["TrainingJobSummaries"]
    assert len(summaries) == 3
    values = [s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for s in summaries]
    assert values == sorted(values, reverse=True)
    assert job["BestTrainingJob"]["TrainingJobName"] == summaries[0]["TrainingJobName"]
    ranges = {r.name if hasattr(r, "name") else k: r for k, r in config.tuning.ranges.items()}
    for summary in summaries:
        tuned = summary["TunedHyperParameters"]
        assert set(tuned) == set(ranges)
        assert ranges["mini_batch_size"].min <= int(tuned["mini_batch_size"]) <= ranges["mini_batch_size"].max
        assert ranges["l1"].min <= float(tuned["l1"]) <= ranges["l1"].max
        training = sagemaker.describe_training_job(TrainingJobName=summary["TrainingJobName"])
        assert training["HyperParameters"]["epochs"] == "3" and training["HyperParameters"]["feature_dim"] == "605"
        artifact = training["ModelArtifacts"]["S3ModelArtifacts"]
        assert artifact == f"s3://{bucket}/out/{summary['TrainingJobName']}/output/model.tar.gz"
        assert s3.head_object(Bucket=bucket, Key=artifact.split("/", 3)[3])["ContentLength"] > 0
        metrics = {m["MetricName"]: m["Value"] for m in training["FinalMetricDataList"]}
        assert metrics["validation:precision"] == summary["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]


def test_tuning_job_fault_fails_it_with_the_reason(tuning_setup, aws_env):
    bucket, config = tuning_setup
    aws_env.fault(job="tuning_fails", reason="out of memory (injected)")
    job = _tune(boto3.client("sagemaker", region_name=REGION), config, bucket, "tune-fails")
    assert job["HyperParameterTuningJobStatus"] == "Failed"
    assert "All training jobs failed" in job["FailureReason"] and "out of memory (injected)" in job["FailureReason"]
    assert aws_env.control("GET", "faults")["injected"] == {"tuning_fails": 1}


def test_tuning_job_on_a_missing_channel_fails_with_a_client_error(tuning_setup):
    bucket, config = tuning_setup
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    request = rq.tuning_job(
        config, "tune-nodata", f"s3://{bucket}/nothing/", f"s3://{bucket}/ds/validation/", "s3://x/o"
    )
    sagemaker.create_hyper_parameter_tuning_job(**request)
    job = wait_until(lambda: (d := sagemaker.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="tune-nodata"))["HyperParameterTuningJobStatus"] == "Failed" and d)  # fmt: skip
    assert "No S3 objects found" in job["FailureReason"]


def test_tuning_request_outside_what_sagemaker_accepts_is_a_validation_error(tuning_setup):
    bucket, config = tuning_setup
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    request = rq.tuning_job(config, "tune-bad", f"s3://{bucket}/ds/train/", f"s3://{bucket}/ds/validation/", "s3://x/o")
    request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["Type"] = "Minimize"
    with pytest.raises(ClientError, match="must be used with Type Maximize"):
        sagemaker.create_hyper_parameter_tuning_job(**request)


@pytest.fixture
def two_models(bucket):
    """Two trained models as SageMaker models in the sandbox, and rows to score."""
    rng = np.random.default_rng(5)
    X, y = _data(rng, 400)
    Xv, yv = _data(rng, 200)
    s3, sagemaker = boto3.client("s3", region_name=REGION), boto3.client("sagemaker", region_name=REGION)
    config = load_config(environ=ROLES)
    models = []
    for i, l1 in enumerate((0.0, 0.05)):
        model = train(X, y, Xv, yv, {**config.static_hyperparameters(), "epochs": 2, "l1": l1}, seed=i)
        s3.put_object(Bucket=bucket, Key=f"models/{i}/model.tar.gz", Body=pack_artifact(model.to_bytes()))
        name = f"{bucket}-m{i}"
        sagemaker.create_model(**rq.model(config, name, f"s3://{bucket}/models/{i}/model.tar.gz"))
        sagemaker.create_endpoint_config(**rq.endpoint_config(config, f"{bucket}-c{i}", name))
        models.append((name, model))
    return config, models, _data(rng, 37)[0]


def test_transform_job_scores_every_row_with_the_named_model(bucket, two_models):
    config, models, rows = two_models
    s3, sagemaker = boto3.client("s3", region_name=REGION), boto3.client("sagemaker", region_name=REGION)
    s3.put_object(Bucket=bucket, Key="score/in/rows.csv", Body=_csv(rows))
    name, model = models[1]
    sagemaker.create_transform_job(**rq.transform_job(config, f"{bucket}-t", name, f"s3://{bucket}/score/in/",
                                                      f"s3://{bucket}/score/out"))  # fmt: skip
    job = wait_until(lambda: (d := sagemaker.describe_transform_job(TransformJobName=f"{bucket}-t"))[
        "TransformJobStatus"] != "InProgress" and d)  # fmt: skip
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    lines = s3.get_object(Bucket=bucket, Key="score/out/rows.csv.out")["Body"].read().decode().splitlines()
    scores, labels = model.predict(rows)
    assert [json.loads(line) for line in lines] == [
        {"score": float(s), "predicted_label": int(p)} for s, p in zip(scores, labels, strict=True)]  # fmt: skip


def _endpoint_status(sagemaker, name: str, leaving: str) -> dict:
    return wait_until(lambda: (d := sagemaker.describe_endpoint(EndpointName=name))["EndpointStatus"] != leaving and d,
                      what=f"endpoint {name} leaving {leaving}")  # fmt: skip


def _invoke(runtime, name: str, rows) -> list[dict]:
    answer = runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=_csv(rows))
    return json.loads(answer["Body"].read())["predictions"]


def test_endpoint_serves_its_config_and_update_switches_models(bucket, two_models, aws_env):
    config, models, rows = two_models
    sagemaker, runtime = (
        boto3.client("sagemaker", region_name=REGION),
        boto3.client("sagemaker-runtime", region_name=REGION),
    )
    name = f"{bucket}-ep"
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{bucket}-c0")
    assert _endpoint_status(sagemaker, name, "Creating")["EndpointStatus"] == "InService"
    predictions = _invoke(runtime, name, rows)
    assert len(predictions) == len(rows)
    assert [p["score"] for p in predictions] == pytest.approx(models[0][1].scores(rows).tolist(), abs=1e-12)

    sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=f"{bucket}-c1")
    done = _endpoint_status(sagemaker, name, "Updating")
    assert (done["EndpointStatus"], done["EndpointConfigName"]) == ("InService", f"{bucket}-c1")
    assert [p["score"] for p in _invoke(runtime, name, rows)] == pytest.approx(models[1][1].scores(rows).tolist())

    # A failed update rolls back: the old model serves on, and the reason is given.
    aws_env.fault(job="endpoint_fails", reason="the container ran out of memory (injected)")
    sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=f"{bucket}-c0")
    rolled = _endpoint_status(sagemaker, name, "Updating")
    assert (rolled["EndpointStatus"], rolled["EndpointConfigName"]) == ("InService", f"{bucket}-c1")
    assert "ran out of memory" in rolled["FailureReason"]

    # An endpoint that never reaches InService stays Creating.
    aws_env.fault(job="endpoint_stuck")
    sagemaker.create_endpoint(EndpointName=f"{name}-stuck", EndpointConfigName=f"{bucket}-c0")
    assert sagemaker.describe_endpoint(EndpointName=f"{name}-stuck")["EndpointStatus"] == "Creating"
    with pytest.raises(ClientError, match="not in service"):
        _invoke(runtime, f"{name}-stuck", rows)
    with pytest.raises(ClientError, match="expected 605"):
        runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=b"1,2,3\n")
    for endpoint in (name, f"{name}-stuck"):
        sagemaker.delete_endpoint(EndpointName=endpoint)


def test_request_faults_are_retried_by_standard_retries_and_counted(bucket, aws_env):
    aws_env.fault(service="s3", error="throttle", count=2)
    aws_env.fault(service="sagemaker", error="5xx", count=1, operation="ListEndpoints")
    retrying = Config(retries={"mode": "standard", "max_attempts": 5})
    s3 = boto3.client("s3", region_name=REGION, config=retrying)
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert boto3.client("sagemaker", region_name=REGION, config=retrying).list_endpoints()["Endpoints"] is not None
    assert aws_env.control("GET", "faults")["injected"] == {"s3:throttle": 2, "sagemaker:5xx": 1}

    # More faults than attempts: the throttling reaches the caller, in the service's own words.
    aws_env.fault(service="glue", error="throttle", count=10)
    glue = boto3.client("glue", region_name=REGION, config=Config(retries={"mode": "standard", "max_attempts": 2}))
    with pytest.raises(ClientError, match="ThrottlingException"):
        glue.get_jobs()


def test_cli_prints_the_endpoint_first_and_stops_cleanly_on_sigterm(tmp_path):
    started = start_sandbox(tmp_path / "sandbox.log")
    try:
        assert started.control("GET", "health")["status"] == "ok"
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=started.url, aws_access_key_id="any",
                          aws_secret_access_key="thing")  # fmt: skip
        s3.create_bucket(Bucket="b", CreateBucketConfiguration={"LocationConstraint": REGION})
    finally:
        code = stop_sandbox(started)
    assert code == 0
    assert "stopped" in started.log.read_text()
    assert signal.SIGTERM  # stopped by SIGTERM, exit code 0
