"""Request builders: each returns exactly one AWS API request, as the dict of its parameters.

The aws faces pass them to boto3 (`client.create_job(**glue_job(...))`) and the Step
Functions export puts the same dicts in its task states, so a name, an instance type or a
tuning range is decided here once. Every value comes from the project config or from the
arguments; nothing is looked up at call time, nothing is written, no boto3 or Dagster
imports. A test validates each request against botocore's service model.

The one value that is not in the config, the built-in linear-learner image for the region,
comes from `sagemaker.core.image_uris.retrieve` (a table shipped with the sagemaker
package, read offline), never from a literal.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from typing import Any

from ml_demo_dagster.config import ProjectConfig

# The Glue job's own arguments, as the entry script (glue/entry.py) reads them.
GLUE_JOB_ARGUMENTS = ("batch_id", "deals_uri", "price_uri", "out_uri", "history_seconds", "pipes_interval_seconds")
TRAIN, VALIDATION = "train", "validation"
CHANNEL_CONTENT_TYPE = "text/csv"
SCORES_ACCEPT = "application/jsonlines"
VARIANT_NAME = "AllTraffic"


@lru_cache(maxsize=8)
def linear_learner_image(region: str) -> str:
    """The built-in linear-learner image URI for `region` (SageMaker's own table, offline)."""
    from sagemaker.core import image_uris  # slow to import (seconds): only when a request needs it

    return image_uris.retrieve("linear-learner", region, version="1")


def tags(config: ProjectConfig) -> list[dict[str, str]]:
    """The tags every resource the project creates carries."""
    return [
        {"Key": "project", "Value": config.project.name},
        {"Key": "environment", "Value": config.project.environment},
    ]


def hyperparameter_value(value: Any) -> str:
    """A hyperparameter as SageMaker passes it: a string; booleans lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


# --- names ---------------------------------------------------------------------------------
#
# One function per kind of SageMaker resource the pipeline creates, used by the aws target and
# the Step Functions export alike: `<name>-<environment>-<kind>-<version>-<token>`, where the
# version is the batch the model was trained on and the token tells runs of one batch apart.
# The aws target draws a random token per run (run_token); the state machine uses the batch's
# attempt number, counted in its claim, which it can compute at run time (no hash, no clock).
# A name longer than SageMaker allows is cut and hashed (config.aws_name): the aws target
# still works, the export refuses and says to shorten project.name or project.environment.


def run_token(digits: int = 4) -> str:
    """A short random token that tells one run's resources from another's (hex digits; scoring
    jobs, many per model version, take 8)."""
    return secrets.token_hex((digits + 1) // 2)[:digits]


def tuning_job_name(config: ProjectConfig, version: str, token: str) -> str:
    """The tuning job that trains `version` (32 characters at most, SageMaker's limit)."""
    return config.aws_name("t", f"{version}-{token}", limit=32)


def model_name(config: ProjectConfig, version: str, token: str) -> str:
    """The SageMaker model of the best training job of that tuning job (same token)."""
    return config.aws_name("m", f"{version}-{token}")


def endpoint_config_name(config: ProjectConfig, version: str, token: str) -> str:
    """The endpoint config that serves `version`."""
    return config.aws_name("c", f"{version}-{token}")


def transform_job_name(config: ProjectConfig, tag: str, token: str) -> str:
    """A batch transform (scoring) job; `tag` says what it scores."""
    return config.aws_name("s", f"{tag}-{token}")


# --- Glue ---------------------------------------------------------------------------------


def glue_job(config: ProjectConfig, script_uri: str, modules_uri: str) -> dict[str, Any]:
    """CreateJob: the feature job as a Glue 5 Spark job running `script_uri`, with the `glue`
    package and dagster-pipes from the zip at `modules_uri` on its Python path."""
    aws = config.aws
    return {
        "Name": config.glue_job_name,
        "Description": f"{config.resource_prefix}: features of one staging batch (ml-demo glue/)",
        "Role": aws.glue_role_arn,
        "Command": {"Name": "glueetl", "ScriptLocation": script_uri, "PythonVersion": "3"},
        "DefaultArguments": {
            "--job-language": "python",
            "--extra-py-files": modules_uri,
            "--enable-continuous-cloudwatch-log": "true",
            "--enable-metrics": "true",
        },
        "ExecutionProperty": {"MaxConcurrentRuns": 4},
        "MaxRetries": 0,  # Dagster's retry policy decides; a retried Glue run would hide the first error
        "Timeout": aws.glue_timeout_minutes,
        "GlueVersion": aws.glue_version,
        "WorkerType": aws.glue_worker_type,
        "NumberOfWorkers": aws.glue_number_of_workers,
        "Tags": {t["Key"]: t["Value"] for t in tags(config)},
    }


def glue_job_update(create_request: dict[str, Any]) -> dict[str, Any]:
    """UpdateJob: the same definition as a CreateJob request, for a job that exists."""
    update = {k: v for k, v in create_request.items() if k not in ("Name", "Tags")}
    return {"JobName": create_request["Name"], "JobUpdate": update}


def glue_job_run(
    config: ProjectConfig,
    batch_id: str,
    deals_uri: str,
    price_uri: str,
    out_uri: str,
    history_seconds: int | None = None,
) -> dict[str, Any]:
    """StartJobRun: the feature job on one batch (Dagster Pipes adds its two arguments).
    `history_seconds` defaults to features.history_seconds."""
    history = config.features.history_seconds if history_seconds is None else int(history_seconds)
    arguments = {
        "--batch_id": str(batch_id),
        "--deals_uri": deals_uri,
        "--price_uri": price_uri,
        "--out_uri": out_uri,
        "--history_seconds": str(history),
        "--pipes_interval_seconds": hyperparameter_value(min(config.aws.poll_interval_seconds, 10.0)),
    }
    assert tuple(a[2:] for a in arguments) == GLUE_JOB_ARGUMENTS
    return {"JobName": config.glue_job_name, "Arguments": arguments, "Timeout": config.aws.glue_timeout_minutes}


# The steps job (ml_demo_dagster/aws/steps_job.py): the work of the assets that run in process
# under Dagster, for the state machine. Its arguments, as the script reads them.
STEPS_JOB_ARGUMENTS = ("steps", "batch", "attempt", "store", "settings")
# What the steps import beyond Glue 5's own modules and the zip: scipy (core/intervals.py's t
# quantile) has compiled parts, so it cannot come in the zip; Glue installs this pin with pip
# when a run starts. The same version is pinned in pyproject.toml (tests run what Glue runs);
# 1.17.1 needs numpy >= 1.26.4, which is what Glue 5 ships.
STEPS_PYTHON_MODULES = ("scipy==1.17.1",)


def glue_steps_job(config: ProjectConfig, script_uri: str, modules_uri: str) -> dict[str, Any]:
    """CreateJob: the steps job, a Glue 5 job whose script runs on the driver alone (no Spark
    work), so it gets Glue's smallest size; its modules come from the zip at `modules_uri`."""
    aws = config.aws
    return {
        "Name": config.glue_steps_job_name,
        "Description": f"{config.resource_prefix}: the in-process assets' steps for the state machine "
        "(ml_demo_dagster/aws/steps_job.py)",
        "Role": aws.glue_role_arn,
        "Command": {"Name": "glueetl", "ScriptLocation": script_uri, "PythonVersion": "3"},
        "DefaultArguments": {
            "--job-language": "python",
            "--extra-py-files": modules_uri,
            "--additional-python-modules": ",".join(STEPS_PYTHON_MODULES),
            "--enable-continuous-cloudwatch-log": "true",
            "--enable-metrics": "true",
        },
        "ExecutionProperty": {"MaxConcurrentRuns": 2},
        "MaxRetries": 0,  # the state machine's Retry decides
        "Timeout": aws.glue_timeout_minutes,
        "GlueVersion": aws.glue_version,
        "WorkerType": "G.1X",
        "NumberOfWorkers": 2,
        "Tags": {t["Key"]: t["Value"] for t in tags(config)},
    }


def steps_job_run(
    config: ProjectConfig, steps: list[str], batch: str, attempt: str, store_url: str, settings: str,
    inputs: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """StartJobRun: the named steps, in order, on one batch. `settings` is the steps' settings
    as JSON (core/batch_steps.StepSettings); `inputs` are what a step needs from earlier states
    (the tuning job's result), each passed as `--<name>`."""
    arguments = {"--steps": ",".join(steps), "--batch": str(batch), "--attempt": str(attempt), "--store": store_url,
                 "--settings": settings, **{f"--{k}": v for k, v in (inputs or {}).items()}}  # fmt: skip
    return {"JobName": config.glue_steps_job_name, "Arguments": arguments, "Timeout": config.aws.glue_timeout_minutes}


# --- SageMaker ----------------------------------------------------------------------------


def _channel(name: str, uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
        },
        "ContentType": CHANNEL_CONTENT_TYPE,
        "CompressionType": "None",
    }


def parameter_ranges(config: ProjectConfig) -> dict[str, list[dict[str, str]]]:
    """[tuning.ranges] as SageMaker's ParameterRanges (integer ranges for `integer = true`)."""
    continuous, integer = [], []
    for name, r in sorted(config.tuning.ranges.items()):
        if r.integer:
            integer.append({"Name": name, "MinValue": str(int(r.min)), "MaxValue": str(int(r.max)),
                            "ScalingType": r.scaling})  # fmt: skip
        else:
            continuous.append({"Name": name, "MinValue": repr(float(r.min)), "MaxValue": repr(float(r.max)),
                               "ScalingType": r.scaling})  # fmt: skip
    return {
        "ContinuousParameterRanges": continuous,
        "IntegerParameterRanges": integer,
        "CategoricalParameterRanges": [],
    }


def tuning_job(
    config: ProjectConfig, name: str, train_uri: str, validation_uri: str, output_uri: str
) -> dict[str, Any]:
    """CreateHyperParameterTuningJob: linear-learner on the CSV channels, searched as [tuning] says."""
    t, aws = config.tuning, config.aws
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": t.strategy,
            "HyperParameterTuningJobObjective": {"Type": t.objective_type, "MetricName": t.objective_metric},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": t.max_jobs, "MaxParallelTrainingJobs": t.max_parallel_jobs},
            "ParameterRanges": parameter_ranges(config),
            "TrainingJobEarlyStoppingType": "Off",
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {k: hyperparameter_value(v) for k, v in config.static_hyperparameters().items()},
            "AlgorithmSpecification": {
                "TrainingImage": linear_learner_image(config.project.region),
                "TrainingInputMode": "File",
            },
            "RoleArn": aws.sagemaker_role_arn,
            "InputDataConfig": [_channel(TRAIN, train_uri), _channel(VALIDATION, validation_uri)],
            "OutputDataConfig": {"S3OutputPath": output_uri},
            "ResourceConfig": {
                "InstanceType": aws.training_instance_type,
                "InstanceCount": aws.training_instance_count,
                "VolumeSizeInGB": aws.training_volume_size_gb,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": aws.training_max_runtime_seconds},
        },
        "Tags": tags(config),
    }


def model(config: ProjectConfig, name: str, model_data_url: str) -> dict[str, Any]:
    """CreateModel: a trained linear-learner artifact behind the built-in image."""
    return {
        "ModelName": name,
        "PrimaryContainer": {"Image": linear_learner_image(config.project.region), "ModelDataUrl": model_data_url},
        "ExecutionRoleArn": config.aws.sagemaker_role_arn,
        "Tags": tags(config),
    }


def endpoint_config(config: ProjectConfig, name: str, model_name: str) -> dict[str, Any]:
    """CreateEndpointConfig: one variant serving `model_name` on the configured instances."""
    return {
        "EndpointConfigName": name,
        "ProductionVariants": [
            {
                "VariantName": VARIANT_NAME,
                "ModelName": model_name,
                "InitialInstanceCount": config.aws.endpoint_instance_count,
                "InstanceType": config.aws.endpoint_instance_type,
                "InitialVariantWeight": 1.0,
            }
        ],
        "Tags": tags(config),
    }


def endpoint(config: ProjectConfig, endpoint_config_name: str) -> dict[str, Any]:
    """CreateEndpoint, and equally UpdateEndpoint (same parameters): the project's endpoint
    serving `endpoint_config_name`."""
    return {"EndpointName": config.endpoint_name, "EndpointConfigName": endpoint_config_name}


def transform_job(config: ProjectConfig, name: str, model_name: str, input_uri: str, output_uri: str) -> dict[str, Any]:
    """CreateTransformJob: score every CSV row under `input_uri` (features only, one row per
    line) with `model_name`; one JSON line per row ({"score", "predicted_label"}) under
    `output_uri`, as `<input file>.out`, in the input's order."""
    return {
        "TransformJobName": name,
        "ModelName": model_name,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 6,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
            "ContentType": CHANNEL_CONTENT_TYPE,
            "SplitType": "Line",
            "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": output_uri, "Accept": SCORES_ACCEPT, "AssembleWith": "Line"},
        "TransformResources": {
            "InstanceType": config.aws.transform_instance_type,
            "InstanceCount": config.aws.transform_instance_count,
        },
        "Tags": tags(config),
    }
