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
    tune_name = config.aws_name("t", "1700000000001-1a2b", limit=32)
    return [
        ("glue", "CreateJob", create),
        ("glue", "UpdateJob", rq.glue_job_update(create)),
        ("glue", "StartJobRun", rq.glue_job_run(config, "1700000000001", "s3://b/staging/deals-1700000000001.csv",
                                                "s3://b/staging/price-1700000000001.csv", "s3://b/features/1700000000001")),
        ("sagemaker", "CreateHyperParameterTuningJob",
         rq.tuning_job(config, tune_name, "s3://b/datasets/1/train/", "s3://b/datasets/1/validation/", "s3://b/tuning/")),
        ("sagemaker", "CreateModel", rq.model(config, config.aws_name("m", "1700000000001-0a1b2c"),
                                              "s3://b/tuning/x-001-abcdef12/output/model.tar.gz")),
        ("sagemaker", "CreateEndpointConfig", rq.endpoint_config(config, config.aws_name("c", "1700000000001-0a1b2c"),
                                                                 "ml-demo-dev-m-1700000000001-0a1b2c")),
        ("sagemaker", "CreateEndpoint", rq.endpoint(config, "ml-demo-dev-c-1700000000001-0a1b2c")),
        ("sagemaker", "UpdateEndpoint", rq.endpoint(config, "ml-demo-dev-c-1700000000001-0a1b2c")),
        ("sagemaker", "CreateTransformJob", rq.transform_job(config, config.aws_name("s", "1700000000001-test-1a2b"),
                                                             "ml-demo-dev-m-1", "s3://b/scoring/in/", "s3://b/scoring/out/")),
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
    short = config.aws_name("t", "1700000000001-1a2b", limit=32)
    assert short == "ml-demo-dev-t-1700000000001-1a2b"
    for key in ("1700000000001-1a2b", "1700000000002-1a2b"):
        name = long.aws_name("t", key, limit=32)
        assert len(name) <= 32 and problems("sagemaker", "DescribeHyperParameterTuningJob",
                                            {"HyperParameterTuningJobName": name}) == []  # fmt: skip
    assert long.aws_name("t", "1700000000001-1a2b", 32) != long.aws_name("t", "1700000000002-1a2b", 32)
