"""One line naming what to fix, for the mistakes people make when they first point the aws
target at an account: no credentials, no region, a missing bucket, access denied, a role
that cannot be used. Anything else keeps AWS's own message (operation, code, text).

Messages come from the exception and the config only: AWS's error texts carry ARNs and
names, never credentials, and nothing here reads a credential.
"""

from __future__ import annotations

import re

from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

_ROLE = re.compile(
    r"assume (the )?role|AssumeRole|not authorized to perform: iam:PassRole|role .{0,200}(does not exist|"
    r"cannot be assumed|is invalid)|Could not assume|trust relationship",
    re.IGNORECASE,
)
_ROLE_KEYS = {"glue": "glue_role_arn", "sagemaker": "sagemaker_role_arn"}
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError", "Forbidden", "403"}
_BAD_CREDENTIALS = {"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
                    "InvalidAccessKeyId", "ExpiredToken", "ExpiredTokenException", "InvalidToken"}  # fmt: skip


class AwsSetupError(RuntimeError):
    """The aws target cannot work as configured; the message says what to fix, in one line."""


def _operation(error: ClientError) -> str:
    return error.operation_name or "an AWS call"


def explain(error: BaseException, *, service: str = "", bucket: str = "") -> str:
    """One line for `error` of a call to `service`: what to fix for the common mistakes, else AWS's words."""
    if isinstance(error, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return (
            "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(against `ml-demo sandbox` any values work)"
        )
    if isinstance(error, NoRegionError):
        return "no AWS region: set project.region in the config file (or ML_DEMO__PROJECT__REGION)"
    if isinstance(error, EndpointConnectionError):
        return f"cannot reach AWS at {error.kwargs.get('endpoint_url', '?')}: check the network or AWS_ENDPOINT_URL (is `ml-demo sandbox` running?)"
    if not isinstance(error, ClientError):
        return " ".join(f"{type(error).__name__}: {error}".split())
    info = error.response.get("Error", {})
    code = str(info.get("Code") or error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    message = " ".join(str(info.get("Message") or "").split())
    where = f"{_operation(error)}: "
    if code in ("NoSuchBucket",) or (code == "404" and _operation(error) == "HeadBucket"):
        name = info.get("BucketName") or bucket or "the store's bucket"
        return (
            f"{where}bucket {name} does not exist: create it (Terraform output bucket_name), or set store.bucket "
            "/ store.url in the config (or pass --store s3://BUCKET)"
        )
    if _ROLE.search(message) or (code == "EntityNotFoundException" and "role" in message.lower()):
        key = _ROLE_KEYS.get(service, "glue_role_arn / aws.sagemaker_role_arn")
        return (
            f"{where}the role cannot be used: {message} -- check that aws.{key} names an existing IAM role that "
            f"trusts {service or 'the service'}.amazonaws.com and that your credentials may iam:PassRole it"
        )
    if code in _DENIED:
        return (
            f"{where}access denied: {message or code} -- the credentials in use lack this permission; use the "
            "project's deployment role, or grant it"
        )
    if code in _BAD_CREDENTIALS:
        return f"{where}the AWS credentials are not valid ({code}): refresh them, or check AWS_PROFILE"
    return f"{where}{code}: {message}" if message else f"{where}{code}"
