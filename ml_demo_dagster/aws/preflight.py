"""Before the aws target starts anything: the mistakes that would fail every run, found at
once and named in one line (no credentials, no region, missing role ARNs, a store that is
not S3, a bucket that does not exist or cannot be read). No Dagster imports."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ml_demo_dagster.aws.clients import client
from ml_demo_dagster.aws.errors import AwsSetupError, explain
from ml_demo_dagster.config import ProjectConfig


def check(config: ProjectConfig, store_url: str) -> None:
    """AwsSetupError (or ConfigError) with what to fix, unless the aws target can start."""
    import boto3

    config.require_aws()
    if not store_url.startswith("s3://"):
        raise AwsSetupError(f"the aws target needs an s3:// store, not {store_url!r}: pass --store s3://BUCKET "
                            "or set store.url / store.bucket")  # fmt: skip
    bucket = store_url[len("s3://") :].split("/", 1)[0]
    if boto3.session.Session().get_credentials() is None:
        raise AwsSetupError(explain(NoCredentialsError()))
    try:
        client("s3", config.project.region, config.aws.max_attempts).head_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as e:
        raise AwsSetupError(explain(e, service="s3", bucket=bucket)) from None
