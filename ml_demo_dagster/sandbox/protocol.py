"""The AWS wire protocols as far as the sandbox answers them itself.

Glue and SageMaker speak JSON 1.1 (`X-Amz-Target: AWSGlue.GetJobRun`, a JSON body, errors
as `{"__type": code, "message": ...}`); SageMaker's runtime speaks REST-JSON
(`POST /endpoints/<name>/invocations`); S3 speaks REST-XML (errors as `<Error><Code>`).
The service and region of a request come from its SigV4 credential scope, the way moto
and AWS route them. Any credentials are accepted.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

INTERNAL_HEADER = "X-Ml-Demo-Sandbox-Internal"
_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")
_INVOKE = re.compile(r"^/endpoints/([^/]+)/invocations$")


class AwsError(Exception):
    """An error the sandbox answers with, in the service's own format."""

    def __init__(self, code: str, message: str, status: int = 400, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.message, self.status, self.extra = code, message, status, extra or {}


def validation(message: str) -> AwsError:
    return AwsError("ValidationException", message)


@dataclass
class AwsRequest:
    """One request, read once from the WSGI environ (the body stays readable for moto)."""

    environ: dict[str, Any]
    method: str
    path: str
    service: str  # s3, glue, sagemaker, sagemaker-runtime, logs, ...; "" if unsigned
    region: str
    operation: str  # the X-Amz-Target action, "InvokeEndpoint", or the HTTP method
    body: bytes
    internal: bool
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(
        cls, environ: dict[str, Any], body_of: tuple[str, ...] = ("glue", "sagemaker", "sagemaker-runtime")
    ) -> AwsRequest:
        """The request's routing facts; its body is read only for the services in `body_of`
        (the others, S3 above all, stream their bodies to moto untouched)."""
        scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        service, region = (scope.group(3), scope.group(2)) if scope else ("", "us-east-1")
        path = environ.get("PATH_INFO", "/")
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        operation = target.rpartition(".")[2] if target else environ.get("REQUEST_METHOD", "GET")
        if service == "sagemaker" and _INVOKE.match(path):
            service, operation = "sagemaker-runtime", "InvokeEndpoint"
        body = b""
        if service in body_of:
            if environ.get("wsgi.input_terminated"):  # chunked: read to the end
                body = environ["wsgi.input"].read()
            else:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")} | {
            "content-type": environ.get("CONTENT_TYPE", "")
        }
        return cls(
            environ=environ, method=environ.get("REQUEST_METHOD", "GET"), path=path, service=service,
            region=region, operation=operation, body=body,
            internal=environ.get("HTTP_" + INTERNAL_HEADER.upper().replace("-", "_")) == "1", headers=headers,
        )  # fmt: skip

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError:
            raise AwsError("SerializationException", "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise AwsError("SerializationException", "the request body is not a JSON object")
        return data

    def endpoint_name(self) -> str:
        match = _INVOKE.match(self.path)
        return unquote(match.group(1)) if match else ""


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def json_response(start_response, doc: dict[str, Any], status: int = 200) -> list[bytes]:
    body = json.dumps(doc, default=_default).encode()
    start_response(
        f"{status} {'OK' if status == 200 else 'Error'}",
        [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body))),
         ("x-amzn-RequestId", str(uuid.uuid4()))],
    )  # fmt: skip
    return [body]


def raw_response(start_response, body: bytes, content_type: str, status: int = 200, headers=()) -> list[bytes]:
    start_response(
        f"{status} {'OK' if status == 200 else 'Error'}",
        [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers],
    )
    return [body]


def error_response(start_response, request: AwsRequest | None, error: AwsError) -> list[bytes]:
    """The error in the format of the request's service (XML for S3, JSON otherwise)."""
    request_id = str(uuid.uuid4())
    if request is not None and request.service == "s3":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{error.code}</Code><Message>{_xml(error.message)}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        content_type = "application/xml"
    else:
        body = json.dumps(
            {"__type": error.code, "message": error.message, "Message": error.message, **error.extra}
        ).encode()
        content_type = "application/x-amz-json-1.1"
    start_response(
        f"{error.status} Error",
        [("Content-Type", content_type), ("Content-Length", str(len(body))), ("x-amzn-ErrorType", error.code),
         ("x-amzn-RequestId", request_id), ("x-amz-request-id", request_id)],
    )  # fmt: skip
    return [body]


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
