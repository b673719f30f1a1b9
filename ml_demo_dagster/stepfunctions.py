"""`ml-demo export-sfn`: the Dagster asset graph as a Step Functions state machine.

The exporter walks the asset graph in dependency order (`Definitions.resolve_asset_graph()`)
and every asset contributes its states, so one execution runs a batch end to end:

- each asset's own work runs in the steps job (ml_demo_dagster/aws/steps_job.py, an AWS
  Glue job, `glue:startJobRun.sync`): the same core/batch_steps.py functions its Dagster
  asset calls. Runs of neighbouring assets are made one run (`--steps a,b`), so a batch
  pays fewer Glue start-ups;
- the resources whose aws face is an AWS job add native states around that step, built
  from the request builders the aws target sends to boto3 (ml_demo_dagster/aws/requests.py):
  the feature job runs the Glue feature job before the asset's step checks its output; the
  tuner runs the SageMaker tuning job (`.sync`), picks its best training job, makes it a
  SageMaker model and scores the validation and test rows with it in a transform job
  (`.sync`) between the asset's `prepare` step and its own; the scorer scores the rows its
  `prepare` step wrote with the serving model, when there is one; the deployer, when the
  gate chose to deploy, makes the endpoint config, updates the endpoint (or creates it),
  waits until it is InService, then runs the asset's `promote` step.
What a step found that the machine must act on (score or not, deploy or not) it writes to
`steps/<T>/<step>.json`; the machine reads it with an S3 GetObject and a Choice.

The state-machine builder (core/sfn.py) adds the prologue (batch key, completeness check,
claim with its attempt count, run lock), retries, catches and the failure path. Adding an
asset adds its states (its step must exist in the steps job, else the export says so);
there is no list of states to keep by hand. Names of SageMaker resources come from the
aws target's name functions with the batch and its attempt number, both known at run time.

Values Terraform creates (the SageMaker role's ARN) come from the config's [aws] section
when it has them, else as `${name}` references that Terraform's templatefile() fills in
(`template=True` always uses references: `ml-demo infra render` does).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from ml_demo_dagster.aws import requests
from ml_demo_dagster.config import ProjectConfig
from ml_demo_dagster.core.batch_steps import StepSettings
from ml_demo_dagster.core.dataset import channel_keys
from ml_demo_dagster.core.infra import resource_names
from ml_demo_dagster.core.layout import (
    dataset_prefix,
    features_prefix,
    scoring_keys,
    step_result_key,
    tuning_output_prefix,
)
from ml_demo_dagster.core.sfn import (
    ATTEMPT,
    BATCH,
    ERROR_PATH,
    FAILURE,
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
RESULTS = "$.results"


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

    @property
    def store_url(self) -> str:
        return self.uri("x")[: -len("/x")]

    def key(self, key: str) -> str:
        """A store key as an object key in the bucket (the store may sit under a prefix)."""
        return self.uri(key)[len(f"s3://{self.bucket}/") :]


@dataclass
class StepRun:
    """A run of the steps job on some steps; neighbouring runs are made one. `inputs`: extra
    arguments, each built from (batch, attempt, run-time value at its JSONPath)."""

    steps: list[str]
    inputs: dict[str, tuple[str | None, Callable[[str, str, str], str]]] = field(default_factory=dict)


Part = StepRun | Fragment


def runtime(build: Callable[..., dict[str, Any]], values: dict[str, str]) -> dict[str, Any]:
    """`build` as Task Parameters with run-time values (core/sfn.with_runtime_values); the
    attempt number is short (a few digits)."""
    return with_runtime_values(build, values, short=[name for name, path in values.items() if path == ATTEMPT])


def _state_name(text: str) -> str:
    return text[:80]


def _result_state(ctx: Context, step: str, comment: str = "") -> dict[str, Any]:
    """GetObject of what a step wrote for the machine, parsed, at $.results.<step>."""
    key = runtime(lambda batch: {"Key": ctx.key(step_result_key(batch, step))}, {"batch": BATCH})
    return task(f"{SDK}s3:getObject", {"Bucket": ctx.bucket, **key}, "s3", result_path=_result_path(step),
                result_selector={"value.$": "States.StringToJson($.Body)"}, comment=comment)  # fmt: skip


def _result_path(step: str) -> str:
    return f"{RESULTS}.{step.replace(':', '_')}"


def _transform_state(ctx: Context, asset: str, model: tuple[str, Callable[[str, str, str], str]],
                     comment: str) -> dict[str, Any]:  # fmt: skip
    """A transform job (`.sync`) over the rows the asset's prepare step wrote; the model is
    (JSONPath of a run-time value, name from (batch, attempt, that value))."""
    from ml_demo_dagster.aws.steps_job import scoring_name

    cfg = ctx.config
    path, model_name = model

    def build(batch: str, attempt: str, value: str = "") -> dict[str, Any]:
        rows_in, rows_out = scoring_keys(scoring_name(batch, attempt, asset))
        name = requests.transform_job_name(cfg, f"{batch}-{asset.replace('_', '-')}", attempt)
        return requests.transform_job(cfg, name, model_name(batch, attempt, value),
                                      ctx.uri(rows_in.rsplit("/", 1)[0] + "/"), ctx.uri(rows_out.rsplit("/", 1)[0]))  # fmt: skip

    values = {"batch": BATCH, "attempt": ATTEMPT, **({"value": path} if path else {})}
    return task(f"{OPTIMIZED}sagemaker:createTransformJob.sync", runtime(build, values), "sagemaker",
                comment=comment)  # fmt: skip


# --- what each aws face adds to its asset's states ------------------------------------------------


def glue_feature_run(ctx: Context, asset: str) -> list[Part]:
    """batch_features on Glue: the feature job on the batch, waited for (`.sync`)."""
    cfg = ctx.config

    def build(batch: str) -> dict[str, Any]:
        return requests.glue_job_run(cfg, batch, ctx.uri(deals_key(batch)), ctx.uri(price_key(batch)),
                                     ctx.uri(features_prefix(batch)))  # fmt: skip

    params = runtime(build, {"batch": BATCH})
    state = task(f"{OPTIMIZED}glue:startJobRun.sync", params, "glue", result_path="$.features",
                 result_selector={"job_run_id.$": "$.Id", "state.$": "$.JobRunState"},
                 comment="The Glue feature job (glue/): features of the batch")  # fmt: skip
    return [Fragment("features", "BuildFeatures", {"BuildFeatures": state}, ["BuildFeatures"], asset)]


def sagemaker_tuning(ctx: Context, asset: str) -> list[Part]:
    """tuned_model on SageMaker: the tuning job (`.sync`), its best training job, that job's
    model, and the model's scores on the validation and test rows (a transform, `.sync`)."""
    cfg = ctx.config

    def build(batch: str, attempt: str) -> dict[str, Any]:
        channels = channel_keys(dataset_prefix(batch))
        folder = lambda key: ctx.uri(key.rsplit("/", 1)[0] + "/")  # noqa: E731 (the channel's folder)
        return requests.tuning_job(cfg, requests.tuning_job_name(cfg, batch, attempt), folder(channels["train"]),
                                   folder(channels["validation"]), ctx.uri(tuning_output_prefix(batch)))  # fmt: skip

    def model(batch: str, attempt: str, url: str) -> dict[str, Any]:
        return requests.model(cfg, requests.model_name(cfg, batch, attempt), url)

    best = lambda batch, attempt, value="": requests.model_name(cfg, batch, attempt)  # noqa: E731
    states = {
        "TuneModel": {
            **task(
                f"{OPTIMIZED}sagemaker:createHyperParameterTuningJob.sync",
                runtime(build, {"batch": BATCH, "attempt": ATTEMPT}),
                "sagemaker",
                result_path="$.tuning",
                result_selector={
                    "job.$": "$.HyperParameterTuningJobName",
                    "best_training_job.$": "$.BestTrainingJob.TrainingJobName",
                    "objective.$": "$.BestTrainingJob.FinalHyperParameterTuningJobObjectiveMetric.Value",
                    "tuned.$": "$.BestTrainingJob.TunedHyperParameters",
                    "counters.$": "$.TrainingJobStatusCounters",
                },
                comment="Hyperparameter tuning job; waits until it ends",
            ),
            "Next": "SelectBestModel",
        },  # fmt: skip
        "SelectBestModel": {
            **task(
                f"{SDK}sagemaker:describeTrainingJob",
                {"TrainingJobName.$": "$.tuning.best_training_job"},
                "sagemaker",
                result_path="$.tuning.best",
                result_selector={"model_data_url.$": "$.ModelArtifacts.S3ModelArtifacts"},
                comment="Best-model selection: the tuning job's best training job and its artifacts",
            ),
            "Next": "CreateModel",
        },  # fmt: skip
        "CreateModel": {
            **task(
                f"{OPTIMIZED}sagemaker:createModel",
                runtime(model, {"batch": BATCH, "attempt": ATTEMPT, "url": "$.tuning.best.model_data_url"}),
                "sagemaker",
            ),  # fmt: skip
            "Next": "ScoreBestModel",
        },
        "ScoreBestModel": _transform_state(
            ctx,
            asset,
            (None, best),
            "The best model's scores on the validation and test rows, from which the next step computes every score",
        ),  # fmt: skip
    }
    return [Fragment("tuning", "TuneModel", states, ["ScoreBestModel"], asset)]


def sagemaker_scoring(ctx: Context, asset: str) -> list[Part]:
    """A scorer on SageMaker: when the prepare step found a serving model, a transform job
    scores the rows it wrote with that model (`.sync`)."""
    step = f"{asset}:prepare"
    read, choose, score = f"Read {step}", f"Score with {asset} serving model?", f"Score {asset}"
    served = lambda batch, attempt, value: value  # noqa: E731 (the model the prepare step named)
    states = {
        read: {
            **_result_state(ctx, step, "What the prepare step found: is there a serving model?"),
            "Next": choose,
        },  # fmt: skip
        choose: {
            "Type": "Choice",
            "Choices": [{"Variable": f"{_result_path(step)}.value.score", "BooleanEquals": True, "Next": score}],
        },
        score: _transform_state(
            ctx,
            asset,
            (f"{_result_path(step)}.value.model_name", served),
            "The serving model's scores on the rows the prepare step wrote",
        ),  # fmt: skip
    }
    return [Fragment(f"scoring {asset}", read, states, [choose, score], asset)]


def sagemaker_deploy(ctx: Context, asset: str) -> list[Part]:
    """deployed_model on SageMaker, when the gate chose to deploy: endpoint config, then update
    the endpoint, or create it when it does not exist, wait (Wait/Choice loop on
    describeEndpoint) until InService, then promote the model in the registry."""
    cfg = ctx.config
    gate = asset
    rt = {"batch": BATCH, "attempt": ATTEMPT}
    endpoint_config = runtime(
        lambda batch, attempt: requests.endpoint_config(cfg, requests.endpoint_config_name(cfg, batch, attempt),
                                                        requests.model_name(cfg, batch, attempt)), rt)  # fmt: skip
    endpoint = runtime(
        lambda batch, attempt: requests.endpoint(cfg, requests.endpoint_config_name(cfg, batch, attempt)), rt
    )
    describe = {"EndpointName": cfg.endpoint_name}
    polls = max(1, int(cfg.aws.endpoint_timeout_minutes * 60 // max(cfg.aws.poll_interval_seconds, 1)))
    wait = max(1, int(round(cfg.aws.poll_interval_seconds)))
    states: dict[str, dict[str, Any]] = {
        "ReadGateDecision": {
            **_result_state(ctx, gate, "The gate's decision: deploy or not"),
            "Next": "ShouldDeploy",
        },  # fmt: skip
        "ShouldDeploy": {
            "Type": "Choice",
            "Choices": [
                {"Variable": f"{_result_path(gate)}.value.deploy", "BooleanEquals": True, "Next": "NameEndpointConfig"}
            ],  # fmt: skip
        },
        # The endpoint config this run makes, kept for the InService check: an update that
        # SageMaker rolled back leaves the endpoint InService on the old one.
        "NameEndpointConfig": {
            "Type": "Pass",
            "Parameters": runtime(
                lambda batch, attempt: {"name": requests.endpoint_config_name(cfg, batch, attempt)}, rt
            ),
            "ResultPath": "$.endpoint_config",
            "Next": "CreateEndpointConfig",
        },  # fmt: skip
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
            "Catch": [{"ErrorEquals": ["States.TaskFailed"], "ResultPath": ERROR_PATH, "Next": "IsEndpointMissing"}],
            "Next": "UpdateEndpoint",
        },
        "IsEndpointMissing": {
            "Type": "Choice",
            "Choices": [
                {
                    "Variable": f"{ERROR_PATH}.Cause",
                    "StringMatches": "*Could not find endpoint*",
                    "Next": "CreateEndpoint",
                }
            ],  # fmt: skip
            "Default": FAILURE,
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
                result_selector={
                    "value.$": "$.EndpointStatus",
                    "config.$": "$.EndpointConfigName",
                    "reason.$": "States.JsonToString($)",
                },
            ),  # fmt: skip
            "Next": "IsEndpointInService",
        },
        "IsEndpointInService": {
            "Type": "Choice",
            "Choices": [
                {
                    "And": [
                        {"Variable": "$.endpoint.status.value", "StringEquals": "InService"},
                        {"Variable": "$.endpoint.status.config", "StringEqualsPath": "$.endpoint_config.name"},
                    ],
                    "Next": "PromoteChampion",
                },
                {"Variable": "$.endpoint.status.value", "StringEquals": "InService", "Next": "EndpointRolledBack"},
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
            "ResultPath": ERROR_PATH,
            "Next": FAILURE,
        },  # fmt: skip
        "EndpointRolledBack": {
            "Type": "Pass",
            "Parameters": {"Error": "EndpointUpdateRolledBack", "Cause.$": "$.endpoint.status.reason"},
            "ResultPath": ERROR_PATH,
            "Next": FAILURE,
        },  # fmt: skip
        "EndpointTimedOut": {
            "Type": "Pass",
            "Parameters": {
                "Error": "EndpointTimedOut",
                "Cause": f"endpoint {cfg.endpoint_name} not InService after {cfg.aws.endpoint_timeout_minutes} min",
            },
            "ResultPath": ERROR_PATH,
            "Next": FAILURE,
        },  # fmt: skip
        "PromoteChampion": _steps_state(
            ctx, StepRun([f"{asset}:promote"]), "The endpoint serves the challenger: it becomes the champion"
        ),  # fmt: skip
    }
    return [Fragment("deploy", "ReadGateDecision", states, ["ShouldDeploy", "PromoteChampion"], asset)]


@dataclass(frozen=True)
class Face:
    """What a resource's aws face adds to its asset: states before the asset's step, states
    between its `prepare` step and its step (so it has a prepare step), inputs of its step,
    and states after it."""

    before: Callable[[Context, str], list[Part]] | None = None
    between: Callable[[Context, str], list[Part]] | None = None
    inputs: Callable[[Context], dict[str, tuple[str | None, Callable[[str, str, str], str]]]] | None = None
    after: Callable[[Context, str], list[Part]] | None = None


def _tuning_inputs(ctx: Context) -> dict[str, tuple[str | None, Callable[[str, str, str], str]]]:
    cfg = ctx.config
    return {
        "tuning": ("States.JsonToString($.tuning)", lambda batch, attempt, value: value),
        "model_name": (None, lambda batch, attempt, value: requests.model_name(cfg, batch, attempt)),
    }


# The resources whose aws face is an AWS job, and what that face adds.
AWS_FACES: dict[str, Face] = {
    "feature_job": Face(before=glue_feature_run),
    "tuner": Face(between=sagemaker_tuning, inputs=_tuning_inputs),
    "scorer": Face(between=sagemaker_scoring),
    "deployer": Face(after=sagemaker_deploy),
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


def contribution(ctx: Context, node: AssetNode) -> list[Part]:
    """The states of one asset: its faces' states around its own step(s)."""
    faces = [AWS_FACES[r] for r in sorted(node.resources) if r in AWS_FACES]
    # Scoring (a serving model's predictions) comes before tuning when an asset has both:
    # the serving model is judged on rows the new one never saw.
    faces.sort(key=lambda f: f.between is not sagemaker_scoring)
    parts: list[Part] = []
    for face in faces:
        if face.before:
            parts += face.before(ctx, node.name)
    between = [face.between for face in faces if face.between]
    if between:
        parts.append(StepRun([f"{node.name}:prepare"]))
        for build in between:
            parts += build(ctx, node.name)
    inputs = {k: v for face in faces if face.inputs for k, v in face.inputs(ctx).items()}
    parts.append(StepRun([node.name], inputs))
    for face in faces:
        if face.after:
            parts += face.after(ctx, node.name)
    return parts


def _steps_state(ctx: Context, run: StepRun, comment: str = "") -> dict[str, Any]:
    cfg, settings = ctx.config, StepSettings.from_config(ctx.config).to_json()
    paths = {k: path for k, (path, _) in run.inputs.items() if path}
    values = {"batch": BATCH, "attempt": ATTEMPT, **{f"in_{k}": p for k, p in paths.items()}}

    def build(batch: str, attempt: str, **runtime: str) -> dict[str, Any]:
        inputs = {k: make(batch, attempt, runtime.get(f"in_{k}", "")) for k, (_, make) in run.inputs.items()}
        return requests.steps_job_run(cfg, run.steps, batch, attempt, ctx.store_url, settings, inputs)

    text = comment or f"The steps job: {', '.join(run.steps)} (ml_demo_dagster/aws/steps_job.py)"
    return task(f"{OPTIMIZED}glue:startJobRun.sync", runtime(build, values), "glue", result_path=None,
                comment=text)  # fmt: skip


def _fused(ctx: Context, parts: Sequence[tuple[str, Part]]) -> list[Fragment]:
    """Fragments, neighbouring step runs made one run."""
    out: list[Fragment] = []
    pending: list[tuple[str, StepRun]] = []

    def flush() -> None:
        if not pending:
            return
        run = StepRun([s for _, r in pending for s in r.steps], {k: v for _, r in pending for k, v in r.inputs.items()})
        name = _state_name("Steps " + " + ".join(run.steps))
        out.append(Fragment(name, name, {name: _steps_state(ctx, run)}, [name], pending[0][0]))
        pending.clear()

    for asset, part in parts:
        if isinstance(part, StepRun):
            pending.append((asset, part))
        else:
            flush()
            out.append(part)
    flush()
    return out


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


def build_definition(
    config: ProjectConfig, nodes: Sequence[AssetNode], template: bool = False, steps: Collection[str] | None = None
) -> dict[str, Any]:
    """The ASL definition for `nodes` (in dependency order) under `config`; `steps`: the steps
    the steps job has (default: all of ml_demo_dagster/aws/steps_job.py's)."""
    if steps is None:
        from ml_demo_dagster.aws.steps_job import STEPS

        steps = STEPS
    config, referenced = with_references(config, template)
    ctx = Context(config)
    if not nodes:
        raise SfnExportError("the asset graph is empty: nothing to put in a state machine")
    parts = [(node.name, part) for node in nodes for part in contribution(ctx, node)]
    for asset, part in parts:
        for step in part.steps if isinstance(part, StepRun) else []:
            if step not in steps:
                raise SfnExportError(f"asset {asset}: the steps job has no step {step!r} "
                                     "(add it to STEPS in ml_demo_dagster/aws/steps_job.py)")  # fmt: skip
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
        f"({' -> '.join(node.name for node in nodes)}).",
        notes=notes,
    )
    return assemble(settings, _fused(ctx, parts))


def export_definition(config: ProjectConfig, template: bool = False, defs: Any = None) -> dict[str, Any]:
    """Walk the project's asset graph (or `defs`) and build its state machine."""
    if defs is None:
        from ml_demo_dagster.definitions import build_definitions

        defs = build_definitions("local")  # the graph is the same for every target
    return build_definition(config, graph_nodes(defs), template)


def dumps(definition: dict[str, Any]) -> str:
    return json.dumps(definition, indent=2) + "\n"


__all__ = ["AWS_FACES", "SfnExportError", "build_definition", "export_definition", "dumps"]
