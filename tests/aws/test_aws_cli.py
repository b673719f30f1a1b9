"""`ml-demo pipeline --target aws`: setup mistakes are one line naming what to fix, exit 2."""

from __future__ import annotations

import pytest

from ml_demo_dagster.cli import main


@pytest.mark.parametrize("change, store, expected", [
    ({"ML_DEMO__AWS__SAGEMAKER_ROLE_ARN": ""}, "s3://{bucket}", "aws.sagemaker_role_arn is empty: set it to"),
    ({"ML_DEMO__AWS__GLUE_ROLE_ARN": "not-an-arn"}, "s3://{bucket}", "aws.glue_role_arn: String should match pattern"),
    ({}, "/tmp/local-store", "the aws target needs an s3:// store, not '/tmp/local-store'"),
    ({}, "s3://{bucket}-missing", "bucket {bucket}-missing does not exist: create it"),
    ({"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
      "AWS_CONFIG_FILE": "/nonexistent", "AWS_CONTAINER_CREDENTIALS_FULL_URI": None, "AWS_EC2_METADATA_DISABLED": "true"},
     "s3://{bucket}", "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
])  # fmt: skip
def test_setup_mistakes_are_one_line_naming_what_to_fix(bucket, monkeypatch, capsys, change, store, expected):
    for name, value in change.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert main(["pipeline", "--target", "aws", "--store", store.format(bucket=bucket)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ml-demo pipeline: error: "), captured.err
    assert expected.format(bucket=bucket) in lines[0]
    assert "sandbox-test" not in captured.err + captured.out  # the access key id never shows
