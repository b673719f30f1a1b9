"""`ml-demo export-sfn`: the Dagster asset graph as a Step Functions state machine.

The exporter walks the asset graph in dependency order (`Definitions.resolve_asset_graph()`)
and lets every asset that runs on AWS contribute its states. An asset runs on AWS through
a resource whose aws face is an AWS job (DESIGN §4.7): the feature job (Glue), the tuner
(SageMaker tuning) and the deployer (SageMaker model, endpoint config, endpoint). Their
states are built here from the same request builders the aws target sends to boto3
(ml_demo_dagster/aws/requests.py); the state-machine builder (core/sfn.py) adds the
prologue (batch key, completeness check, claim, run lock), retries, catches and the
failure path. Adding an asset that uses one of these resources adds its states; there is
no list of states to keep by hand.

Values Terraform creates (the SageMaker role's ARN) come from the config's [aws] section
when it has them, else as `${name}` references that Terraform's templatefile() fills in
(`template=True` always uses references: `ml-demo infra render` does).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ml_demo_dagster.aws import requests
from ml_demo_dagster.config import ProjectConfig
from ml_demo_dagster.core.dataset import channel_keys
from ml_demo_dagster.core.infra import resource_names
from ml_demo_dagster.core.layout import dataset_prefix, features_prefix
from ml_demo_dagster.core.sfn import (
    OPTIMIZED,
    SDK,
    Fragment,
    MachineSettings,
    SfnExportError,
    assemble,
    task,
    with_runtime_values,
)
from ml_demo_dagster.core.staging import deals_key, price_key

# Config values Terraform creates, and the template variable that stands for each.
TERRAFORM_VALUES = {"sagemaker_role_arn": "sagemaker_role_arn"}
BATCH = "$.batch"


@dataclass(frozen=True)
class Context:
    """What every contribution needs: the config (with references where values are missing)."""

    config: ProjectConfig

    def uri(self, key: str) -> str:
        url = self.config.store.url
        base = url.rstrip("/") if url.startswith("s3://") else f"s3://{self.config.bucket_name}"
        return f"{base}/{key}"

    @property
    def bucket(self) -> str:
        return self.uri("x")[len("s3://") :].split("/", 1)[0]


def _state_name(asset: str, step: str) -> str:
    return f"{step}"


# --- what each aws face contributes ------------------------------------------------------------


def glue_feature_run(ctx: Context, asset: str) -> Fragment:
    """batch_features on Glue: one job run on the batch, waited for (`.sync`)."""
    cfg = ctx.config

    def build(batch: str) -> dict[str, Any]:
        return requests.glue_job_run(cfg, batch, ctx.uri(deals_key(batch)), ctx.uri(price_key(batch)),
                                     ctx.uri(features_prefix(batch)))  # fmt: skip

    params = with_runtime_values(build, {"batch": BATCH})
    state = task(f"{OPTIMIZED}glue:startJobRun.sync", params, "glue", result_path="$.features",
                 result_selector={"job_run_id.$": "$.Id", "state.$": "$.JobRunState"})  # fmt: skip
    return Fragment("features", "BuildFeatures", {"BuildFeatures": state}, ["BuildFeatures"], asset)


def tuning_job_name(cfg: ProjectConfig, batch: str) -> str:
    # "tune", not "tuning": <name>-prod-tune-<T> fits SageMaker's 32 characters, so the name needs
    # no hash, which a state machine could not compute at run time.
    return cfg.aws_name("tune", batch, limit=32)


def sagemaker_tuning(ctx: Context, asset: str) -> Fragment:
    """tuned_model on SageMaker: the tuning job (`.sync`), then the best training job's artifacts."""
    cfg = ctx.config

    def build(batch: str) -> dict[str, Any]:
        channels = channel_keys(dataset_prefix(batch))
        folder = lambda key: ctx.uri(key.rsplit("/", 1)[0] + "/")  # noqa: E731 (the channel's folder)
        return requests.tuning_job(cfg, tuning_job_name(cfg, batch), folder(channels["train"]),
                                   folder(channels["validation"]), ctx.uri(f"models/{batch}/tuning/"))  # fmt: skip

    states = {
        "TuneModel": task(
            f"{OPTIMIZED}sagemaker:createHyperParameterTuningJob.sync",
            with_runtime_values(build, {"batch": BATCH}),
            "sagemaker",
            result_path="$.tuning",
            result_selector={"best_training_job.$": "$.BestTrainingJob.TrainingJobName"},
            comment="Hyperparameter tuning job; waits until it ends",
        ),  # fmt: skip
        "SelectBestModel": task(
            f"{SDK}sagemaker:describeTrainingJob",
            {"TrainingJobName.$": "$.tuning.best_training_job"},
            "sagemaker",
            result_path="$.best",
            result_selector={
                "training_job.$": "$.TrainingJobName",
                "model_data_url.$": "$.ModelArtifacts.S3ModelArtifacts",
            },
            comment="Best-model selection: the tuning job's best training job and its artifacts",
        ),  # fmt: skip
    }
    states["TuneModel"]["Next"] = "SelectBestModel"
    return Fragment("tuning", "TuneModel", states, ["SelectBestModel"], asset)


def sagemaker_deploy(ctx: Context, asset: str) -> Fragment:
    """deployed_model on SageMaker: model, endpoint config, then update the endpoint, or create it
    when it does not exist, and wait (Wait/Choice loop on describeEndpoint) until InService."""
    cfg = ctx.config
    model_name = lambda batch: cfg.aws_name("model", batch)  # noqa: E731
    config_name = lambda batch: cfg.aws_name("config", batch)  # noqa: E731
    model = with_runtime_values(lambda batch, url: requests.model(cfg, model_name(batch), url),
                                {"batch": BATCH, "url": "$.best.model_data_url"})  # fmt: skip
    endpoint_config = with_runtime_values(lambda batch: requests.endpoint_config(cfg, config_name(batch),
                                                                                 model_name(batch)), {"batch": BATCH})  # fmt: skip
    endpoint = with_runtime_values(lambda batch: requests.endpoint(cfg, config_name(batch)), {"batch": BATCH})
    describe = {"EndpointName": cfg.endpoint_name}
    polls = max(1, int(cfg.aws.endpoint_timeout_minutes * 60 // max(cfg.aws.poll_interval_seconds, 1)))
    wait = max(1, int(round(cfg.aws.poll_interval_seconds)))
    states: dict[str, dict[str, Any]] = {
        "CreateModel": {
            **task(f"{OPTIMIZED}sagemaker:createModel", model, "sagemaker"),
            "Next": "CreateEndpointConfig",
        },
        "CreateEndpointConfig": {
            **task(f"{OPTIMIZED}sagemaker:createEndpointConfig", endpoint_config, "sagemaker"),
            "Next": "FindEndpoint",
        },  # fmt: skip
        "FindEndpoint": {
            **task(
                f"{SDK}sagemaker:describeEndpoint",
                describe,
                "sagemaker",
                result_path=None,
                comment="Update the endpoint if it exists, else create it",
            ),  # fmt: skip
            "Catch": [
                {
                    "ErrorEquals": ["SageMaker.SageMakerException", "SageMaker.ValidationException"],
                    "ResultPath": None,
                    "Next": "CreateEndpoint",
                }
            ],  # fmt: skip
            "Next": "UpdateEndpoint",
        },
        "UpdateEndpoint": {
            **task(f"{OPTIMIZED}sagemaker:updateEndpoint", endpoint, "sagemaker"),
            "Next": "StartEndpointWait",
        },  # fmt: skip
        "CreateEndpoint": {
            **task(f"{OPTIMIZED}sagemaker:createEndpoint", endpoint, "sagemaker"),
            "Next": "StartEndpointWait",
        },  # fmt: skip
        "StartEndpointWait": {
            "Type": "Pass",
            "Result": {"polls": 0},
            "ResultPath": "$.endpoint",
            "Next": "WaitForEndpoint",
        },  # fmt: skip
        "WaitForEndpoint": {"Type": "Wait", "Seconds": wait, "Next": "DescribeEndpoint"},
        "DescribeEndpoint": {
            **task(
                f"{SDK}sagemaker:describeEndpoint",
                describe,
                "sagemaker",
                result_path="$.endpoint.status",
                result_selector={"value.$": "$.EndpointStatus", "reason.$": "States.JsonToString($)"},
            ),  # fmt: skip
            "Next": "IsEndpointInService",
        },
        "IsEndpointInService": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.endpoint.status.value", "StringEquals": "InService", "Next": "EndpointInService"},
                {
                    "Or": [
                        {"Variable": "$.endpoint.status.value", "StringEquals": "Failed"},
                        {"Variable": "$.endpoint.status.value", "StringEquals": "OutOfService"},
                    ],
                    "Next": "EndpointFailed",
                },
                {"Variable": "$.endpoint.polls", "NumericGreaterThanEquals": polls, "Next": "EndpointTimedOut"},
            ],  # fmt: skip
            "Default": "CountEndpointPoll",
        },
        "CountEndpointPoll": {
            "Type": "Pass",
            "Parameters": {"polls.$": "States.MathAdd($.endpoint.polls, 1)"},
            "ResultPath": "$.endpoint",
            "Next": "WaitForEndpoint",
        },  # fmt: skip
        "EndpointFailed": {
            "Type": "Pass",
            "Parameters": {"Error": "EndpointFailed", "Cause.$": "$.endpoint.status.reason"},
            "ResultPath": "$.error",
            "Next": "ReleaseLockAfterFailure",
        },  # fmt: skip
        "EndpointTimedOut": {
            "Type": "Pass",
            "Parameters": {
                "Error": "EndpointTimedOut",
                "Cause": f"endpoint {cfg.endpoint_name} not InService after {cfg.aws.endpoint_timeout_minutes} min",
            },
            "ResultPath": "$.error",
            "Next": "ReleaseLockAfterFailure",
        },  # fmt: skip
        "EndpointInService": {"Type": "Pass", "ResultPath": None},
    }
    return Fragment("deploy", "CreateModel", states, ["EndpointInService"], asset)


# The resources whose aws face is an AWS job, and the states that face contributes.
AWS_FACES: dict[str, Callable[[Context, str], Fragment]] = {
    "feature_job": glue_feature_run,
    "tuner": sagemaker_tuning,
    "deployer": sagemaker_deploy,
}


# --- the walk ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssetNode:
    """What the walk needs of an asset: its name and the resources it requires."""

    name: str
    resources: frozenset[str]


def graph_nodes(defs: Any) -> list[AssetNode]:
    """The assets of Dagster Definitions in dependency order."""
    graph = defs.resolve_asset_graph()
    nodes = []
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        nodes.append(AssetNode(key.to_user_string(), frozenset(node.assets_def.required_resource_keys)))
    return nodes


def with_references(config: ProjectConfig, template: bool) -> tuple[ProjectConfig, list[str]]:
    """The config with `${name}` references for the Terraform-created values it lacks (all, if `template`)."""
    updates, referenced = {}, []
    for key, variable in TERRAFORM_VALUES.items():
        if template or not getattr(config.aws, key):
            updates[key] = "${" + variable + "}"
            referenced.append(key)
    if not updates:
        return config, []
    # model_copy skips validation: a reference is not an ARN, and must not pass as one elsewhere.
    return config.model_copy(update={"aws": config.aws.model_copy(update=updates)}), referenced


def build_definition(config: ProjectConfig, nodes: Sequence[AssetNode], template: bool = False) -> dict[str, Any]:
    """The ASL definition for `nodes` (in dependency order) under `config`."""
    config, referenced = with_references(config, template)
    ctx = Context(config)
    fragments, on_aws, in_process = [], [], []
    for node in nodes:
        faces = [r for r in sorted(node.resources) if r in AWS_FACES]
        if not faces:
            in_process.append(node.name)
            continue
        on_aws.append(node.name)
        fragments.extend(AWS_FACES[r](ctx, node.name) for r in faces)
    names = resource_names(config)
    notes = []
    if referenced:
        notes.append("Terraform fills in: " + ", ".join("${" + TERRAFORM_VALUES[k] + "}" for k in referenced) + ".")
    settings = MachineSettings(
        lock_table=names["lock_table"],
        bucket=ctx.bucket,
        deals_key=deals_key,
        price_key=price_key,
        lock_wait_seconds=config.infra.lock_wait_seconds,
        comment=f"{config.resource_prefix}: one staging batch through the asset graph "
        f"({' -> '.join(on_aws)} on AWS; {', '.join(in_process)} run in process under Dagster).",
        notes=notes,
    )
    return assemble(settings, fragments)


def export_definition(config: ProjectConfig, template: bool = False, defs: Any = None) -> dict[str, Any]:
    """Walk the project's asset graph (or `defs`) and build its state machine."""
    if defs is None:
        from ml_demo_dagster.definitions import build_definitions

        defs = build_definitions("local")  # the graph is the same for every target
    return build_definition(config, graph_nodes(defs), template)


def dumps(definition: dict[str, Any]) -> str:
    return json.dumps(definition, indent=2) + "\n"


__all__ = ["AWS_FACES", "SfnExportError", "build_definition", "export_definition", "dumps"]
