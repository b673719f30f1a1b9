"""The exported state machine, executed in `ml-demo sandbox`: one batch end to end.

The machine is deployed the way Terraform deploys it (the Glue jobs from the aws target's
job builders with the code bundles uploaded by content hash, the lock table, the exported
definition with `${sagemaker_role_arn}` filled in), a serving model is already registered
(a SageMaker model that scores at random), and one execution runs a fresh batch: the
steps job's runs, the Glue feature job, the transform jobs of the serving model, the
tuning job, the gate, the endpoint and the promotion. Every state executes in the sandbox
(moto's Step Functions, with the sandbox's `.sync` waits: ml_demo_dagster/sandbox/stepfunctions.py).
Then a bad batch ends in the failure path with the reason, and a second event of a batch
that is done ends at once.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass

import boto3
import numpy as np
import pytest
import requests as http
from conftest import LEARNABLE_SMALL, REGION, ROLES, stream_batches, wait_until

from ml_demo_dagster.aws import glue_code
from ml_demo_dagster.aws import requests as rq
from ml_demo_dagster.config import load_config
from ml_demo_dagster.core.infra import resource_names
from ml_demo_dagster.core.layout import LIVE_PREFIX, live_key, raw_key, step_result_key
from ml_demo_dagster.core.linear_learner import train
from ml_demo_dagster.core.registry import ModelRegistry
from ml_demo_dagster.core.staging import deals_key, price_key
from ml_demo_dagster.core.store import open_store
from ml_demo_dagster.sandbox.training import pack_artifact
from ml_demo_dagster.stepfunctions import export_definition

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SETTINGS = {"ML_DEMO__PROJECT__ENVIRONMENT": "sfn", **LEARNABLE_SMALL}  # its own names: ml-demo-sfn-*
CHAMPION = "1767225000000"  # registered before the batch (10 minutes before START_MS)


@dataclass
class Deployed:
    bucket: str
    env: dict[str, str]
    machine: str
    batch: str
    execution: dict
    history: list[dict]

    @property
    def config(self):
        return load_config(environ=self.env)


def _upload(s3, bucket: str, code) -> tuple[str, str]:
    keys = code.keys("code")
    for key, data in zip(keys, (code.script, code.modules), strict=True):
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    return tuple(f"s3://{bucket}/{k}" for k in keys)


def deploy(config, bucket: str) -> str:
    """What `ml-demo infra apply` creates for the machine, in the sandbox; the machine's ARN."""
    s3, glue = boto3.client("s3", region_name=REGION), boto3.client("glue", region_name=REGION)
    glue.create_job(**rq.glue_job(config, *_upload(s3, bucket, glue_code.build())))
    glue.create_job(**rq.glue_steps_job(config, *_upload(s3, bucket, glue_code.build_steps())))
    names = resource_names(config)
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=names["lock_table"], BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )  # fmt: skip
    text = json.dumps(export_definition(config, template=True)).replace(
        "${sagemaker_role_arn}", ROLES["ML_DEMO__AWS__SAGEMAKER_ROLE_ARN"]
    )
    return boto3.client("stepfunctions", region_name=REGION).create_state_machine(
        name=names["state_machine"], definition=text, roleArn="arn:aws:iam::123456789012:role/ml-demo-sfn-sfn"
    )["stateMachineArn"]


def register_champion(config, store) -> None:
    """A serving model that gives every row the same score and calls every deal a profit (so
    its ROC AUC is 0.5 on any rows and its precision the base rate), as a SageMaker model: a
    challenger that learned anything beats it, whatever batch ids the wall clock gives."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, config.feature_dim)).astype(np.float32)
    y = rng.integers(0, 2, 200).astype(np.int8)
    model = train(X, y, X[:50], y[:50], {**config.static_hyperparameters(), "epochs": 1}, seed=1)
    model.weights, model.bias, model.threshold = np.zeros_like(model.weights), 0.0, 0.0
    key = f"models/{CHAMPION}/tuning/noise/output/model.tar.gz"
    store.put_bytes(key, pack_artifact(model.to_bytes()))
    name = rq.model_name(config, CHAMPION, "1")
    boto3.client("sagemaker", region_name=REGION).create_model(**rq.model(config, name, store.uri(key)))
    artifact = {"kind": "sagemaker", "model_name": name, "model_data_url": store.uri(key)}
    registry = ModelRegistry(store)
    registry.save_record(CHAMPION, {"version": CHAMPION, "artifact": artifact})
    registry.promote(CHAMPION)


def execute(sfn, machine: str, doc: dict, timeout: float = 240) -> tuple[dict, list[dict]]:
    # A name, as EventBridge gives one (moto's default name is the same for every execution).
    arn = sfn.start_execution(stateMachineArn=machine, name=uuid.uuid4().hex, input=json.dumps(doc))["executionArn"]
    done = wait_until(lambda: (d := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d,
                      timeout=timeout, interval=0.2, what=f"execution {doc}")  # fmt: skip
    return done, sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]


def failures(history: list[dict]) -> list:
    """The failure events of an execution, with the states entered before each (for messages)."""
    out = []
    for e in history:
        detail = next((v for k, v in e.items() if k.endswith("FailedEventDetails")), None)
        if detail:
            out.append((entered(history[: history.index(e)])[-1:], detail))
    return out


def entered(history: list[dict]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]


@pytest.fixture(scope="module")
def deployed(sandbox) -> Deployed:
    bucket = f"sfn-{uuid.uuid4().hex[:10]}"
    env = {**ROLES, **SETTINGS, "AWS_ENDPOINT_URL": sandbox.url, "AWS_ACCESS_KEY_ID": "sandbox-sfn",
           "AWS_SECRET_ACCESS_KEY": "sandbox-sfn", "AWS_DEFAULT_REGION": REGION, "ML_DEMO__PROJECT__REGION": REGION,
           "ML_DEMO__STORE__URL": f"s3://{bucket}"}  # fmt: skip
    config_url = f"{sandbox.url}/moto-api/config"
    # Executions run only for machines created while the config says so, and only while it does.
    http.post(config_url, json={"stepfunctions": {"execute_state_machine": True}}, timeout=10)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.items():
                mp.setenv(name, value)
            config = load_config()
            boto3.client("s3", region_name=REGION).create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
            )
            machine = deploy(config, bucket)
            store = open_store(f"s3://{bucket}", region=REGION)
            register_champion(config, store)
            (batch,) = stream_batches(bucket, 1, seed=2, fixed_ids=True)
            started = time.monotonic()
            execution, history = execute(boto3.client("stepfunctions", region_name=REGION), machine,
                                         {"key": deals_key(batch)})  # fmt: skip
            print(f"one batch through the machine: {time.monotonic() - started:.1f} s")
        yield Deployed(bucket, {**os.environ, **env}, machine, batch, execution, history)
    finally:
        http.post(config_url, json={"stepfunctions": {"execute_state_machine": False}}, timeout=10)


@pytest.fixture
def as_deployed(deployed, monkeypatch):
    for name, value in deployed.env.items():
        monkeypatch.setenv(name, value)
    return deployed


def test_one_execution_runs_the_batch_through_every_asset_in_graph_order(as_deployed):
    d = as_deployed
    assert d.execution["status"] == "SUCCEEDED", failures(d.history)
    path = entered(d.history)
    order = ["ClaimBatch", "AcquireRunLock", "Steps raw_ticks + raw_deals", "BuildFeatures",
             "Steps batch_features + live_precision:prepare", "Score live_precision",
             "Steps live_precision + training_dataset + tuned_model:prepare", "TuneModel", "SelectBestModel",
             "CreateModel", "ScoreBestModel", "Steps tuned_model + deployed_model:prepare", "Score deployed_model",
             "Steps deployed_model", "ShouldDeploy", "CreateEndpointConfig", "FindEndpoint", "CreateEndpoint",
             "IsEndpointInService", "PromoteChampion", "ReleaseRunLock", "BatchDone"]  # fmt: skip
    assert [s for s in path if s in order] == [s for s in order if s in path] and set(order) <= set(path), path


def test_the_glue_states_really_built_the_raw_data_features_and_dataset(as_deployed):
    store = open_store(f"s3://{as_deployed.bucket}", region=REGION)
    t = as_deployed.batch
    assert store.exists(f"features/{t}/_SUCCESS")
    assert [k for k in store.list_keys(f"features/{t}/") if k.endswith(".parquet")]
    assert store.exists(raw_key("ticks", t)) and store.exists(raw_key("deals", t))
    for split in ("train", "validation", "test"):
        assert store.get_bytes(f"datasets/{t}/{split}/{split}.csv").count(b"\n") > 100
    glue = boto3.client("glue", region_name=REGION)
    config = as_deployed.config
    runs = glue.get_job_runs(JobName=config.glue_job_name)["JobRuns"]
    assert [r["Arguments"]["--batch_id"] for r in runs] == [t] and runs[0]["JobRunState"] == "SUCCEEDED"
    steps = glue.get_job_runs(JobName=config.glue_steps_job_name)["JobRuns"]
    assert {r["Arguments"]["--steps"] for r in steps} >= {"raw_ticks,raw_deals", "deployed_model:promote"}
    assert not list(store.list_keys("scoring/"))  # each step deleted the rows and scores it read


def test_live_precision_and_the_gate_scored_the_serving_model_and_deployed_the_better_one(as_deployed):
    store = open_store(f"s3://{as_deployed.bucket}", region=REGION)
    t, config = as_deployed.batch, as_deployed.config
    live = json.loads(store.get_text(live_key(t)))
    assert live["serving_version"] == CHAMPION and live["live_precision"]["value"] is not None
    assert [k for k in store.list_keys(LIVE_PREFIX)] == [live_key(t)]
    registry = ModelRegistry(store)
    (decision,) = [e for e in registry.history() if e["event"] == "decision"]
    assert decision["version"] == t and decision["record"]["reference"] == "champion"  # scored against it
    assert decision["record"]["deployed"], decision["record"]
    assert registry.champion_pointer()["version"] == t
    gate = json.loads(store.get_text(step_result_key(t, "deployed_model")))
    assert gate["deploy"] and gate["record"]["reason"] == decision["record"]["reason"]
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    endpoint = sagemaker.describe_endpoint(EndpointName=config.endpoint_name)
    assert endpoint["EndpointStatus"] == "InService"
    assert endpoint["EndpointConfigName"] == rq.endpoint_config_name(config, t, "1")


def test_sagemaker_names_are_the_aws_targets_with_the_batch_and_its_attempt(as_deployed):
    store = open_store(f"s3://{as_deployed.bucket}", region=REGION)
    t, config = as_deployed.batch, as_deployed.config
    artifact = ModelRegistry(store).load_record(t)["artifact"]
    assert artifact["kind"] == "sagemaker"
    assert artifact["tuning_job"] == rq.tuning_job_name(config, t, "1") == f"ml-demo-sfn-t-{t}-1"
    assert artifact["model_name"] == rq.model_name(config, t, "1")
    assert artifact["best_training_job"].startswith(artifact["tuning_job"] + "-")
    assert artifact["model_data_url"].startswith(f"s3://{as_deployed.bucket}/models/{t}/tuning/")
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    for purpose in ("live-precision", "tuned-model", "deployed-model"):
        name = rq.transform_job_name(config, f"{t}-{purpose}", "1")
        assert sagemaker.describe_transform_job(TransformJobName=name)["TransformJobStatus"] == "Completed"


def test_a_second_event_of_the_batch_ends_at_once_and_a_bad_batch_fails_with_its_reason(as_deployed):
    d = as_deployed
    sfn = boto3.client("stepfunctions", region_name=REGION)
    again, history = execute(sfn, d.machine, {"key": price_key(d.batch)})
    assert again["status"] == "SUCCEEDED" and entered(history)[-1] == "BatchAlreadyClaimed"

    bad = str(int(d.batch) + 60_000)
    s3 = boto3.client("s3", region_name=REGION)
    good_deals = s3.get_object(Bucket=d.bucket, Key=deals_key(d.batch))["Body"].read()
    lines = good_deals.splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"buy"', b'"sell"')
    s3.put_object(
        Bucket=d.bucket, Key=price_key(bad), Body=s3.get_object(Bucket=d.bucket, Key=price_key(d.batch))["Body"].read()
    )
    s3.put_object(Bucket=d.bucket, Key=deals_key(bad), Body=b"".join(lines))
    failed, history = execute(sfn, d.machine, {"batch": bad})
    assert failed["status"] == "FAILED"
    assert f"batch {bad} quarantined" in failed["cause"] and "line 2" in failed["cause"], failed["cause"]
    assert entered(history)[-3:] == ["ReleaseLockAfterFailure", "ReleaseClaimAfterFailure", "PipelineFailed"]
    store = open_store(f"s3://{d.bucket}", region=REGION)
    assert store.exists(f"quarantine/{bad}/reason.json") and not store.exists(deals_key(bad))
    claim = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=resource_names(d.config)["lock_table"], Key={"pk": {"S": f"batch#{bad}"}})["Item"]  # fmt: skip
    assert claim["attempts"] == {"N": "1"} and "execution" not in claim  # released: the batch can run again
