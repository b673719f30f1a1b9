"""The SageMaker deployer against the sandbox: create, then update; failures named with the
remote reason and nothing promoted; a deployment left half-finished is settled next time."""

from __future__ import annotations

import json

import boto3
import dagster as dg
import numpy as np
import pytest
from conftest import REGION

from ml_demo_dagster.config import load_config
from ml_demo_dagster.core.linear_learner import train
from ml_demo_dagster.core.registry import ModelRegistry
from ml_demo_dagster.core.store import open_store
from ml_demo_dagster.defs.aws_resources import DEPLOYMENT_KEY, SageMakerDeployer
from ml_demo_dagster.defs.resources import ProjectConfigResource
from ml_demo_dagster.sandbox.training import pack_artifact


@pytest.fixture
def setup(bucket, monkeypatch):
    """A store in the bucket, a deployer with its own endpoint, and a way to make SageMaker-trained versions."""
    monkeypatch.setenv("ML_DEMO__AWS__ENDPOINT_NAME", f"{bucket}-endpoint")
    monkeypatch.setenv("ML_DEMO__AWS__ENDPOINT_TIMEOUT_MINUTES", "0.1")
    store = open_store(f"s3://{bucket}", region=REGION)
    config = load_config()
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, config.feature_dim)).astype(np.float32)
    y = (X[:, 1] > 0).astype(np.int8)

    def version(name: str, seed: int) -> dict:
        model = train(X, y, X[:100], y[:100], {**config.static_hyperparameters(), "epochs": 1}, seed=seed)
        key = f"sagemaker/{name}/output/model.tar.gz"
        store.put_bytes(key, pack_artifact(model.to_bytes()))
        record = {"version": name, "artifact": {"kind": "sagemaker", "model_data_url": store.uri(key)}}
        store.put_text(ModelRegistry.record_key(name), json.dumps(record))
        return record

    deployer = SageMakerDeployer(project=ProjectConfigResource())
    return store, config, deployer, version, boto3.client("sagemaker", region_name=REGION)


def serving(sagemaker, config) -> str:
    endpoint = sagemaker.describe_endpoint(EndpointName=config.endpoint_name)
    config_name = endpoint["EndpointConfigName"]
    model = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"][0]["ModelName"]
    return sagemaker.describe_model(ModelName=model)["PrimaryContainer"]["ModelDataUrl"]


def test_creates_then_updates_the_endpoint_and_promotes_only_when_in_service(setup, aws_env):
    store, config, deployer, version, sagemaker = setup
    registry = ModelRegistry(store)
    first, second, third = version("1700000000001", 1), version("1700000000002", 2), version("1700000000003", 3)

    assert deployer.deploy(store, "1700000000001", first) == config.endpoint_name
    assert serving(sagemaker, config) == first["artifact"]["model_data_url"]
    assert registry.champion_pointer()["version"] == "1700000000001" and not store.exists(DEPLOYMENT_KEY)
    deployer.deploy(store, "1700000000002", second)
    assert serving(sagemaker, config) == second["artifact"]["model_data_url"]
    assert registry.champion_pointer()["version"] == "1700000000002"

    # An update that fails: SageMaker rolls back; the error carries its reason; nothing is promoted.
    aws_env.fault(job="endpoint_fails", reason="model container failed the health check (injected)")
    with pytest.raises(dg.Failure, match="rolled back: model container failed the health check"):
        deployer.deploy(store, "1700000000003", third)
    assert serving(sagemaker, config) == second["artifact"]["model_data_url"]
    assert registry.champion_pointer()["version"] == "1700000000002" and not store.exists(DEPLOYMENT_KEY)

    # An endpoint that never reaches InService: the wait times out, naming the config key.
    aws_env.fault(job="endpoint_stuck")
    with pytest.raises(dg.Failure, match="still Updating after 6 s.*aws.endpoint_timeout_minutes"):
        deployer.deploy(store, "1700000000003", third)
    assert registry.champion_pointer()["version"] == "1700000000002"
    sagemaker.delete_endpoint(EndpointName=config.endpoint_name)


def test_a_deployment_left_half_finished_is_rolled_back_or_completed(setup, aws_env):
    store, config, deployer, version, sagemaker = setup
    registry = ModelRegistry(store)
    champion, chosen, orphan = version("1700000000011", 1), version("1700000000012", 2), version("1700000000013", 3)
    deployer.deploy(store, "1700000000011", champion)

    # A run died after creating the model and endpoint config of a version, before updating the endpoint.
    model = "orphan-model"
    sagemaker.create_model(ModelName=model, ExecutionRoleArn=config.aws.sagemaker_role_arn,
                           PrimaryContainer={"Image": "linear-learner", "ModelDataUrl": orphan["artifact"]["model_data_url"]})  # fmt: skip
    sagemaker.create_endpoint_config(EndpointConfigName="orphan-config", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])  # fmt: skip
    store.put_text(DEPLOYMENT_KEY, json.dumps({"version": "1700000000013", "endpoint_config": "orphan-config",
                                               "model": model, "record": orphan}))  # fmt: skip
    logs: list[str] = []
    assert "rolled back" in deployer.reconcile(store, logs.append)
    assert serving(sagemaker, config) == champion["artifact"]["model_data_url"]
    assert registry.champion_pointer()["version"] == "1700000000011" and not store.exists(DEPLOYMENT_KEY)
    with pytest.raises(Exception, match="Could not find endpoint configuration"):
        sagemaker.describe_endpoint_config(EndpointConfigName="orphan-config")

    # A run died after the endpoint took the gate's choice, before the registry said so: completed.
    sagemaker.create_model(ModelName="chosen-model", ExecutionRoleArn=config.aws.sagemaker_role_arn,
                           PrimaryContainer={"Image": "linear-learner", "ModelDataUrl": chosen["artifact"]["model_data_url"]})  # fmt: skip
    sagemaker.create_endpoint_config(EndpointConfigName="chosen-config", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "chosen-model", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])  # fmt: skip
    store.put_text(DEPLOYMENT_KEY, json.dumps({"version": "1700000000012", "endpoint_config": "chosen-config",
                                               "model": "chosen-model", "record": chosen}))  # fmt: skip
    sagemaker.update_endpoint(EndpointName=config.endpoint_name, EndpointConfigName="chosen-config")
    assert "completed" in deployer.reconcile(store, logs.append)
    assert registry.champion_pointer()["version"] == "1700000000012" and not store.exists(DEPLOYMENT_KEY)
    assert serving(sagemaker, config) == chosen["artifact"]["model_data_url"]
    assert deployer.reconcile(store, logs.append) is None  # nothing left to settle
    sagemaker.delete_endpoint(EndpointName=config.endpoint_name)


def test_a_model_not_trained_by_sagemaker_is_refused_with_a_clear_reason(setup):
    store, _, deployer, _, _ = setup
    with pytest.raises(dg.Failure, match="was not trained by SageMaker"):
        deployer.deploy(store, "1700000000021", {"artifact": {"kind": "local", "uri": "/tmp/model.json"}})
