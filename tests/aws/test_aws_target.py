"""The aws target end to end on one machine: `ml-demo pipeline --target aws` against
`ml-demo sandbox`, which really runs the Glue job, the tuning job, the transform jobs and
the endpoint. One pipeline invocation over two seed-format batches (with throttling and
5xx injected on S3, Glue and SageMaker) is shared by the tests of this module; then three
failures, each a Dagster run that must fail with the remote reason and deploy nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import dagster as dg
import numpy as np
import pytest
from conftest import LEARNABLE_SMALL, REGION, ROLES, stream_batches

from glue.contract import BatchInput, features_matrix
from glue.feature_local import build_features_local
from ml_demo_dagster.aws import requests as rq
from ml_demo_dagster.config import load_config
from ml_demo_dagster.core.layout import read_features
from ml_demo_dagster.core.registry import ModelRegistry
from ml_demo_dagster.core.staging import deals_key, price_key
from ml_demo_dagster.core.store import open_store
from ml_demo_dagster.defs.partitions import batches as batches_partitions
from ml_demo_dagster.defs.resources import StoreResource, resources_for

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SETTINGS = LEARNABLE_SMALL
# Faults on the calls each step cannot do without; every one must be retried away.
FAULTS = [
    {"service": "s3", "error": "throttle", "count": 2, "operation": "PUT"},
    {"service": "s3", "error": "5xx", "count": 1, "operation": "GET"},
    {"service": "glue", "error": "throttle", "count": 1, "operation": "StartJobRun"},
    {"service": "glue", "error": "5xx", "count": 2, "operation": "GetJobRun"},
    {"service": "sagemaker", "error": "throttle", "count": 1, "operation": "CreateHyperParameterTuningJob"},
    {"service": "sagemaker", "error": "5xx", "count": 1, "operation": "CreateTransformJob"},
    {"service": "sagemaker", "error": "throttle", "count": 2, "operation": "DescribeEndpoint"},
]


@dataclass
class Run:
    bucket: str
    batches: list[str]
    env: dict[str, str]
    code: int
    summary: dict
    stdout: str
    stderr: str
    faults: dict
    secret: str
    key_id: str

    @property
    def config(self):
        return load_config(environ=self.env)


@pytest.fixture(scope="module")
def run(sandbox, tmp_path_factory) -> Run:
    secret, key_id = f"secret{uuid.uuid4().hex}", f"AKIA{uuid.uuid4().hex[:16].upper()}"
    # A fixed name: the sandbox seeds a tuning job's search by what it asks for, channel URIs
    # included, so the same data gives the same trials, models and gate decisions every time.
    bucket = "aws-target-e2e"
    env = {
        **os.environ, **ROLES, **SETTINGS, "AWS_ENDPOINT_URL": sandbox.url, "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": REGION, "ML_DEMO__PROJECT__REGION": REGION,
        "ML_DEMO__AWS__ENDPOINT_NAME": f"{bucket}-endpoint",
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        batches = stream_batches(bucket, 2, seed=5)
    sandbox.clear_faults()
    for fault in FAULTS:
        sandbox.fault(**fault)
    done = subprocess.run(
        [sys.executable, "-m", "ml_demo_dagster.cli", "pipeline", "--target", "aws", "--store", f"s3://{bucket}",
         "--json", "--verbose"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    faults = sandbox.control("GET", "faults")
    sandbox.clear_faults()
    summary = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    return Run(bucket, batches, env, done.returncode, summary, done.stdout, done.stderr, faults, secret, key_id)


@pytest.fixture
def as_run(run, monkeypatch):
    """This test's boto3 and config see what the pipeline saw."""
    for name, value in run.env.items():
        monkeypatch.setenv(name, value)
    return run


def rows(run: Run) -> list[dict]:
    assert run.code == 0, run.stderr[-4000:]
    return run.summary["batches"]


def test_pipeline_succeeds_and_names_the_glue_run_tuning_job_best_training_job_and_endpoint(run):
    found = rows(run)
    assert [r["batch"] for r in found] == run.batches and all(r["status"] == "trained" for r in found)
    for row in found:
        assert row["glue_job_run"].startswith("jr_")
        artifact = row["model_artifact"]
        assert artifact["kind"] == "sagemaker" and artifact["tuning_job"].startswith("ml-demo-dev-t-" + row["batch"])
        assert artifact["best_training_job"].startswith(artifact["tuning_job"] + "-")
        assert row["trials"] == 2  # one per training job of the tuning job
    deployed = [r for r in found if r["decision"] == "deployed"]
    assert deployed, [r["decision_reason"] for r in found]
    assert deployed[-1]["endpoint"] == f"{run.bucket}-endpoint"


def test_the_target_made_the_glue_job_itself_from_config_and_each_run_names_its_batch(as_run):
    glue = boto3.client("glue", region_name=REGION)
    config = as_run.config
    job = glue.get_job(JobName=config.glue_job_name)["Job"]
    assert job["Role"] == ROLES["ML_DEMO__AWS__GLUE_ROLE_ARN"] and job["GlueVersion"] == "5.0"
    assert job["Command"]["ScriptLocation"].startswith(f"s3://{as_run.bucket}/code/")
    for row in rows(as_run):
        glue_run = glue.get_job_run(JobName=config.glue_job_name, RunId=row["glue_job_run"])["JobRun"]
        assert glue_run["JobRunState"] == "SUCCEEDED"
        assert glue_run["Arguments"]["--batch_id"] == row["batch"]
        assert glue_run["Arguments"]["--deals_uri"] == f"s3://{as_run.bucket}/{deals_key(row['batch'])}"


def test_features_written_by_the_glue_script_equal_the_local_targets(as_run, tmp_path):
    store = open_store(f"s3://{as_run.bucket}", region=REGION)
    batch = as_run.batches[0]
    for key in (deals_key(batch), price_key(batch)):
        (tmp_path / Path(key).name).write_bytes(store.get_bytes(key))
    local_dir = tmp_path / "local-features"
    build_features_local(
        [BatchInput(batch, str(tmp_path / Path(deals_key(batch)).name), str(tmp_path / Path(price_key(batch)).name))],
        local_dir, as_run.config.features.history_seconds,
    )  # fmt: skip
    import pyarrow.parquet as pq

    local = pq.read_table(local_dir).sort_by("timestamp")
    remote = read_features(store, batch)
    assert remote.num_rows == local.num_rows > 0
    assert remote.column("timestamp").to_pylist() == local.column("timestamp").to_pylist()
    assert remote.column("label").to_pylist() == local.column("label").to_pylist()
    np.testing.assert_allclose(features_matrix(remote.column("features")), features_matrix(local.column("features")),
                               atol=1e-4, rtol=0)  # fmt: skip


def test_the_tuning_job_request_carries_the_configured_ranges_limits_and_objective(as_run):
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    config = as_run.config
    for row in rows(as_run):
        job = sagemaker.describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=row["model_artifact"]["tuning_job"]
        )
        asked = job["HyperParameterTuningJobConfig"]
        assert asked["ParameterRanges"] == rq.parameter_ranges(config)
        assert asked["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2}
        assert asked["HyperParameterTuningJobObjective"] == {
            "Type": config.tuning.objective_type, "MetricName": config.tuning.objective_metric}  # fmt: skip
        assert asked["Strategy"] == config.tuning.strategy
        static = job["TrainingJobDefinition"]["StaticHyperParameters"]
        assert static["epochs"] == "5" and static["feature_dim"] == str(config.feature_dim)
        assert job["HyperParameterTuningJobStatus"] == "Completed"
        assert job["BestTrainingJob"]["TrainingJobName"] == row["model_artifact"]["best_training_job"]


def test_the_endpoint_is_in_service_and_answers_one_prediction_per_row(as_run):
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    runtime = boto3.client("sagemaker-runtime", region_name=REGION)
    name = f"{as_run.bucket}-endpoint"
    assert sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    store = open_store(f"s3://{as_run.bucket}", region=REGION)
    X = features_matrix(read_features(store, as_run.batches[-1]).column("features"))[:7]
    body = "".join(",".join(repr(float(v)) for v in row) + "\n" for row in X)
    answer = runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=body)
    predictions = json.loads(answer["Body"].read())["predictions"]
    assert len(predictions) == 7 and all(p["predicted_label"] in (0, 1) and 0 <= p["score"] <= 1 for p in predictions)
    serving = ModelRegistry(store).champion_pointer()["version"]
    assert serving == [r for r in rows(as_run) if r["decision"] == "deployed"][-1]["batch"]


def test_every_injected_throttle_and_5xx_was_retried(run):
    rows(run)
    assert run.faults["requests"] == []  # all used up
    wanted: dict[str, int] = {}
    for fault in FAULTS:
        key = f"{fault['service']}:{fault['error']}"
        wanted[key] = wanted.get(key, 0) + fault["count"]
    assert run.faults["injected"] == wanted


def test_credentials_appear_in_no_log_line_error_or_metadata(as_run, sandbox):
    rows(as_run)
    logs = boto3.client("logs", region_name=REGION)
    texts = [as_run.stdout, as_run.stderr, sandbox.log.read_text()]
    for row in rows(as_run):
        for group in ("/aws-glue/jobs/output", "/aws-glue/jobs/error"):
            try:
                events = logs.get_log_events(logGroupName=group, logStreamName=row["glue_job_run"])["events"]
            except logs.exceptions.ResourceNotFoundException:
                continue
            texts += [e["message"] for e in events]
    s3 = boto3.client("s3", region_name=REGION)
    for item in s3.list_objects_v2(Bucket=as_run.bucket, Prefix="pipes/").get("Contents", []):
        texts.append(s3.get_object(Bucket=as_run.bucket, Key=item["Key"])["Body"].read().decode(errors="replace"))
    assert "Glue run jr_" in as_run.stderr  # the Dagster log was captured
    for text in texts:
        assert as_run.secret not in text and as_run.key_id not in text


def _materialize(run: Run, assets: list, batch: str, store_url: str):
    from ml_demo_dagster.definitions import ASSETS

    config = load_config(environ=run.env)
    resources = resources_for(config, "aws")
    resources["store"] = StoreResource(url=store_url, region=REGION)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(batches_partitions.name, [batch])
    selected = [a for a in ASSETS if a.key.to_user_string() in assets]
    return dg.materialize(selected, partition_key=batch, instance=instance, resources=resources, raise_on_error=False)


def _failure(result) -> str:
    from ml_demo_dagster.headless import first_error

    assert not result.success
    return first_error(result)


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


DOWNSTREAM = ["batch_features", "training_dataset", "tuned_model", "live_precision", "deployed_model"]


def test_a_glue_run_that_fails_fails_the_run_with_its_reason_and_deploys_nothing(as_run):
    store = open_store(f"s3://{as_run.bucket}", region=REGION)
    good = as_run.batches[-1]
    bad = str(int(good) + 1)
    lines = store.get_bytes(deals_key(good)).splitlines(keepends=True)
    lines[1] = b"not-a-time" + lines[1][lines[1].index(b",") :]
    store.put_bytes(deals_key(bad), b"".join(lines))
    store.put_bytes(price_key(bad), store.get_bytes(price_key(good)))
    before = ModelRegistry(store).champion_pointer()

    result = _materialize(as_run, DOWNSTREAM, bad, f"s3://{as_run.bucket}")
    error = _failure(result)
    assert error.startswith("batch_features: Glue run jr_") and " FAILED: " in error, error
    assert f"deals-{bad}.csv" in error and as_run.secret not in error
    assert _materialized(result) == set()
    assert ModelRegistry(store).champion_pointer() == before


def test_a_tuning_job_that_fails_fails_the_run_with_its_reason_and_deploys_nothing(as_run, sandbox):
    store = open_store(f"s3://{as_run.bucket}", region=REGION)
    before = ModelRegistry(store).champion_pointer()
    sandbox.fault(job="tuning_fails", reason="Please ensure the training data is valid (injected)")
    result = _materialize(as_run, ["tuned_model", "deployed_model"], as_run.batches[-1], f"s3://{as_run.bucket}")
    error = _failure(result)
    assert error.startswith("tuned_model: tuning job ml-demo-dev-t-") and " Failed: All training jobs failed" in error
    assert "Please ensure the training data is valid (injected)" in error
    assert _materialized(result) == set()
    assert ModelRegistry(store).champion_pointer() == before


def test_an_endpoint_that_never_reaches_in_service_fails_the_run_and_nothing_is_promoted(as_run, sandbox, monkeypatch):
    # A second store with the deployed batch's tuned model and nothing serving: the gate
    # decides as it did (same predictions), and the endpoint it creates never comes up.
    source = open_store(f"s3://{as_run.bucket}", region=REGION)
    batch = [r for r in rows(as_run) if r["decision"] == "deployed"][-1]["batch"]
    other = f"{as_run.bucket}-stuck"
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=other, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    target = open_store(f"s3://{other}", region=REGION)
    for prefix in (f"datasets/{batch}/", f"models/{batch}/"):
        for key in source.list_keys(prefix):
            target.put_bytes(key, source.get_bytes(key))
    monkeypatch.setenv("ML_DEMO__AWS__ENDPOINT_NAME", f"{other}-endpoint")
    monkeypatch.setenv("ML_DEMO__AWS__ENDPOINT_TIMEOUT_MINUTES", "0.05")
    sandbox.fault(job="endpoint_stuck")
    result = _materialize(as_run, ["deployed_model"], batch, f"s3://{other}")
    error = _failure(result)
    assert error.startswith(f"deployed_model: endpoint {other}-endpoint still Creating after 3 s"), error
    assert "aws.endpoint_timeout_minutes" in error
    assert ModelRegistry(target).champion_pointer() is None
    boto3.client("sagemaker", region_name=REGION).delete_endpoint(EndpointName=f"{other}-endpoint")
