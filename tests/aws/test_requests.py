"""Every request builder's output is a valid request of its API (botocore's service model),
and carries what the config says."""

from __future__ import annotations

import pytest
from service_model import problems

from ml_demo_dagster.aws import requests as rq
from ml_demo_dagster.config import load_config

ROLES = {
    "ML_DEMO__AWS__GLUE_ROLE_ARN": "arn:aws:iam::123456789012:role/ml-demo-dev-glue",
    "ML_DEMO__AWS__SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/ml-demo-dev-sagemaker",
}


@pytest.fixture(scope="module")
def config():
    return load_config(environ=ROLES)


def built(config):
    create = rq.glue_job(config, "s3://b/code/abc/feature_job.py", "s3://b/code/abc/ml_demo_glue.zip")
    steps = rq.glue_steps_job(config, "s3://b/code/def/steps_job.py", "s3://b/code/def/ml_demo_steps.zip")
    tune_name = rq.tuning_job_name(config, "1700000000001", "1a2b")
    model, endpoint_config = (
        rq.model_name(config, "1700000000001", "1a2b"),
        rq.endpoint_config_name(config, "1700000000001", "1a2b"),
    )
    return [
        ("glue", "CreateJob", steps),
        ("glue", "StartJobRun", rq.steps_job_run(config, ["raw_ticks", "tuned_model"], "1700000000001", "12",
                                                 "s3://b", "{}", {"tuning": "{}", "model_name": model})),
        ("glue", "CreateJob", create),
        ("glue", "UpdateJob", rq.glue_job_update(create)),
        ("glue", "StartJobRun", rq.glue_job_run(config, "1700000000001", "s3://b/staging/deals-1700000000001.csv",
                                                "s3://b/staging/price-1700000000001.csv", "s3://b/features/1700000000001")),
        ("sagemaker", "CreateHyperParameterTuningJob",
         rq.tuning_job(config, tune_name, "s3://b/datasets/1/train/", "s3://b/datasets/1/validation/", "s3://b/tuning/")),
        ("sagemaker", "CreateModel", rq.model(config, model, "s3://b/tuning/x-001-abcdef12/output/model.tar.gz")),
        ("sagemaker", "CreateEndpointConfig", rq.endpoint_config(config, endpoint_config, model)),
        ("sagemaker", "CreateEndpoint", rq.endpoint(config, endpoint_config)),
        ("sagemaker", "UpdateEndpoint", rq.endpoint(config, endpoint_config)),
        ("sagemaker", "CreateTransformJob", rq.transform_job(config, rq.transform_job_name(config, "1700000000001-deployed-model", rq.run_token(8)),
                                                             model, "s3://b/scoring/in/", "s3://b/scoring/out/")),
    ]  # fmt: skip


def test_every_request_is_valid_for_its_api(config):
    for service, operation, request in built(config):
        assert problems(service, operation, request) == [], operation


def test_the_checker_catches_what_aws_would_reject(config):
    request = rq.tuning_job(config, "x" * 33, "s3://b/t/", "s3://b/v/", "s3://b/o/")
    assert any("max 32" in p for p in problems("sagemaker", "CreateHyperParameterTuningJob", request))
    request = rq.endpoint(config, "bad_name")
    assert any("does not match" in p for p in problems("sagemaker", "CreateEndpoint", request))
    assert problems("glue", "StartJobRun", {"Arguments": {}})  # JobName is required


def test_tuning_job_carries_the_tuning_config():
    config = load_config(environ={**ROLES, "ML_DEMO__TUNING__MAX_JOBS": "4", "ML_DEMO__TUNING__STRATEGY": "Random",
                                  "ML_DEMO__TUNING__RANGES__WD__MAX": "0.5"})  # fmt: skip
    request = rq.tuning_job(config, "t", "s3://b/t/", "s3://b/v/", "s3://b/o/")
    job = request["HyperParameterTuningJobConfig"]
    assert job["Strategy"] == "Random"
    assert job["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2}
    assert job["HyperParameterTuningJobObjective"] == {
        "Type": config.tuning.objective_type, "MetricName": config.tuning.objective_metric}  # fmt: skip
    ranges = {r["Name"]: r for kind in job["ParameterRanges"].values() for r in kind}
    assert set(ranges) == set(config.tuning.ranges)
    assert ranges["wd"] == {"Name": "wd", "MinValue": "1e-07", "MaxValue": "0.5", "ScalingType": "Logarithmic"}
    assert ranges["mini_batch_size"] in job["ParameterRanges"]["IntegerParameterRanges"]
    definition = request["TrainingJobDefinition"]
    static = definition["StaticHyperParameters"]
    assert static["feature_dim"] == "605" and static["normalize_data"] == "true"
    assert static["target_recall"] == repr(config.tuning.static.target_recall)
    assert not set(static) & set(ranges)
    channels = {c["ChannelName"]: c for c in definition["InputDataConfig"]}
    assert channels["train"]["ContentType"] == channels["validation"]["ContentType"] == "text/csv"
    assert channels["validation"]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://b/v/"
    assert definition["RoleArn"] == ROLES["ML_DEMO__AWS__SAGEMAKER_ROLE_ARN"]


def test_image_comes_from_sagemakers_table_for_the_region():
    from sagemaker.core import image_uris

    for region in ("eu-west-2", "us-east-1"):
        config = load_config(environ={**ROLES, "ML_DEMO__PROJECT__REGION": region})
        image = rq.model(config, "m", "s3://b/m.tar.gz")["PrimaryContainer"]["Image"]
        assert image == image_uris.retrieve("linear-learner", region, version="1")
        assert region in image


def test_glue_run_names_the_batch_and_the_job(config):
    request = rq.glue_job_run(config, "1700000000001", "s3://b/d.csv", "s3://b/p.csv", "s3://b/f/1700000000001")
    assert request["JobName"] == config.glue_job_name == "ml-demo-dev-features"
    assert request["Arguments"]["--batch_id"] == "1700000000001"
    assert set(a[2:] for a in request["Arguments"]) == set(rq.GLUE_JOB_ARGUMENTS)
    create = rq.glue_job(config, "s3://b/s.py", "s3://b/m.zip")
    assert create["Role"] == ROLES["ML_DEMO__AWS__GLUE_ROLE_ARN"] and create["GlueVersion"] == "5.0"
    assert create["DefaultArguments"]["--extra-py-files"] == "s3://b/m.zip"
    update = rq.glue_job_update(create)
    assert update["JobName"] == create["Name"] and update["JobUpdate"]["Command"] == create["Command"]


def test_names_fit_sagemakers_limits(config):
    long = load_config(environ={**ROLES, "ML_DEMO__PROJECT__NAME": "a-very-long-project-name-indeed",
                                "ML_DEMO__PROJECT__ENVIRONMENT": "production-east"})  # fmt: skip
    assert rq.tuning_job_name(config, "1700000000001", "1a2b") == "ml-demo-dev-t-1700000000001-1a2b"
    assert rq.model_name(config, "1700000000001", "7") == "ml-demo-dev-m-1700000000001-7"
    assert rq.endpoint_config_name(config, "1700000000001", "7") == "ml-demo-dev-c-1700000000001-7"
    assert (
        rq.transform_job_name(config, "1700000000001-live-precision", "7")
        == "ml-demo-dev-s-1700000000001-live-precision-7"
    )
    for key in ("1700000000001", "1700000000002"):
        name = rq.tuning_job_name(long, key, "1a2b")
        assert len(name) <= 32 and problems("sagemaker", "DescribeHyperParameterTuningJob",
                                            {"HyperParameterTuningJobName": name}) == []  # fmt: skip
    assert rq.tuning_job_name(long, "1700000000001", "1a2b") != rq.tuning_job_name(long, "1700000000002", "1a2b")
    tokens = {rq.run_token() for _ in range(50)}
    assert len(tokens) > 40 and all(len(t) == 4 and int(t, 16) >= 0 for t in tokens)
    assert len(rq.run_token(8)) == 8


def test_the_steps_job_runs_on_glue_5_with_its_zip_and_pinned_scipy(config):
    from importlib.metadata import version

    create = rq.glue_steps_job(config, "s3://b/s.py", "s3://b/m.zip")
    assert create["Name"] == config.glue_steps_job_name == "ml-demo-dev-steps" and create["GlueVersion"] == "5.0"
    arguments = create["DefaultArguments"]
    assert arguments["--extra-py-files"] == "s3://b/m.zip"
    assert arguments["--additional-python-modules"] == ",".join(rq.STEPS_PYTHON_MODULES) == f"scipy=={version('scipy')}"
    run = rq.steps_job_run(config, ["live_precision", "training_dataset"], "1700000000001", "3", "s3://b", "{}")
    assert run["JobName"] == create["Name"]
    assert {k[2:] for k in run["Arguments"]} == set(rq.STEPS_JOB_ARGUMENTS)
    assert run["Arguments"]["--steps"] == "live_precision,training_dataset"
