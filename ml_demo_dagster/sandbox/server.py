"""The sandbox server: moto's app behind one WSGI layer that runs jobs and injects faults.

Each request is routed by its SigV4 credential scope (service, region) and its action:
- control paths `/_sandbox/...` (health, faults) are answered here;
- a pending fault for the service answers instead of the service (faults.py);
- the calls listed in `Sandbox.handlers` are answered by the executors (glue.py,
  sagemaker.py); their parameters are first checked against botocore's service model,
  as AWS checks them (a ValidationException names the problem);
- everything else goes to moto unchanged (S3, CloudWatch Logs, Glue job definitions,
  SageMaker models and endpoint configs, DynamoDB, Step Functions, ...); Step Functions
  executions call their services back through this server (stepfunctions.py).
The server binds one address (127.0.0.1 by default), serves each request on its own thread
and keeps all state in memory.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from ml_demo_dagster.sandbox.clients import InternalClients
from ml_demo_dagster.sandbox.faults import Faults
from ml_demo_dagster.sandbox.glue import GlueRuns
from ml_demo_dagster.sandbox.protocol import (
    AwsError,
    AwsRequest,
    error_response,
    json_response,
    raw_response,
    validation,
)
from ml_demo_dagster.sandbox.sagemaker import Endpoints, Transforms, Tuning
from ml_demo_dagster.sandbox.stepfunctions import install as install_stepfunctions

log = logging.getLogger(__name__)
CONTROL_PREFIX = "/_sandbox/"
Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


class PassThrough(Exception):
    """The sandbox has nothing to add: moto answers this request."""


@lru_cache(maxsize=64)
def _input_shape(service: str, operation: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape


def check_parameters(service: str, operation: str, params: dict[str, Any]) -> None:
    """ValidationException unless `params` fit the operation's input shape (botocore's model)."""
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(params, _input_shape(service, operation))
    if report.has_errors():
        raise validation(" ".join(report.generate_report().split()))


class Sandbox:
    """moto plus the executors, on one address. `start()`, then `url`; `stop()` ends everything."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

        self.faults = Faults()
        self._moto = DomainDispatcherApplication(create_backend_app)
        self._server: BaseWSGIServer = make_server(host, port, self, threaded=True, request_handler=MotoRequestHandler)
        self._server.daemon_threads = True
        bound_host, bound_port = self._server.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        self.clients = InternalClients(self.url)
        self.glue = GlueRuns(self.clients, self.url)
        self.tuning = Tuning(self.clients, self.faults)
        self.transforms = Transforms(self.clients)
        self.endpoints = Endpoints(self.clients, self.faults)
        install_stepfunctions(bound_port)  # executions' task calls come back here (stepfunctions.py)
        self.handlers: dict[tuple[str, str], Handler] = {
            ("glue", "UpdateJob"): self.glue.update_job,
            ("glue", "StartJobRun"): self.glue.start_job_run,
            ("glue", "GetJobRun"): self.glue.get_job_run,
            ("glue", "GetJobRuns"): self.glue.get_job_runs,
            ("glue", "BatchStopJobRun"): self.glue.batch_stop_job_run,
            ("sagemaker", "CreateHyperParameterTuningJob"): self.tuning.create,
            ("sagemaker", "DescribeHyperParameterTuningJob"): self.tuning.describe,
            ("sagemaker", "ListTrainingJobsForHyperParameterTuningJob"): self.tuning.list_training_jobs,
            ("sagemaker", "StopHyperParameterTuningJob"): self.tuning.stop,
            ("sagemaker", "DescribeTrainingJob"): self._describe_training_job,
            ("sagemaker", "CreateTransformJob"): self.transforms.create,
            ("sagemaker", "DescribeTransformJob"): self.transforms.describe,
            ("sagemaker", "StopTransformJob"): self.transforms.stop,
            ("sagemaker", "CreateEndpoint"): self.endpoints.create,
            ("sagemaker", "UpdateEndpoint"): self.endpoints.update,
            ("sagemaker", "DescribeEndpoint"): self.endpoints.describe,
            ("sagemaker", "DeleteEndpoint"): self.endpoints.delete,
            ("sagemaker", "ListEndpoints"): self.endpoints.list,
        }
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Serve on a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="ml-demo-sandbox", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving; stop every job run, tuning job and endpoint the sandbox started."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self.glue.stop_all()
        self.tuning.stop_all()
        self.endpoints.stop_all()

    def shutdown(self) -> None:
        """Make serve_forever() return (from another thread or a signal handler)."""
        threading.Thread(target=self._server.shutdown, daemon=True).start()

    # --- WSGI ------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response) -> Any:
        if environ.get("PATH_INFO", "").startswith(CONTROL_PREFIX):
            return self._control(environ, start_response)
        request = AwsRequest.read(environ)
        fault = self.faults.for_request(request)
        if fault is not None:
            return error_response(start_response, request, fault)
        if request.service == "sagemaker-runtime":
            return self._invoke(request, start_response)
        handler = self.handlers.get((request.service, request.operation))
        if handler is None:
            return self._moto(environ, start_response)
        try:
            body = request.json()
            check_parameters(request.service, request.operation, body)
            return json_response(start_response, handler(request.region, body))
        except PassThrough:
            request.environ["wsgi.input"].seek(0)
            return self._moto(environ, start_response)
        except AwsError as e:
            return error_response(start_response, request, e)
        except Exception as e:  # noqa: BLE001 (a bug here must still answer like a service)
            log.exception("%s %s", request.service, request.operation)
            return error_response(start_response, request, AwsError("InternalFailure", f"{type(e).__name__}: {e}", 500))

    def _describe_training_job(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        found = self.tuning.describe_training_job(body.get("TrainingJobName", ""))
        if found is None:
            raise PassThrough
        return found

    def _invoke(self, request: AwsRequest, start_response) -> Any:
        try:
            status, content_type, body, variant = self.endpoints.invoke(
                request.region, request.endpoint_name(), request.body, request.headers
            )
        except AwsError as e:
            return error_response(start_response, request, e)
        return raw_response(start_response, body, content_type, status,
                            [("x-Amzn-Invoked-Production-Variant", variant)])  # fmt: skip

    def _control(self, environ: dict[str, Any], start_response) -> Any:
        path = environ["PATH_INFO"][len(CONTROL_PREFIX) :].strip("/")
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if path == "health":
                return json_response(start_response, {"status": "ok", "url": self.url})
            if path == "faults" and method == "GET":
                return json_response(start_response, self.faults.snapshot())
            if path == "faults" and method == "DELETE":
                self.faults.clear()
                return json_response(start_response, self.faults.snapshot())
            if path == "faults" and method == "POST":
                length = int(environ.get("CONTENT_LENGTH") or 0)
                spec = json.loads(environ["wsgi.input"].read(length) or b"{}")
                if not isinstance(spec, dict):
                    raise ValueError("send one fault as a JSON object")
                return json_response(start_response, {"added": self.faults.add(spec)})
        except (ValueError, TypeError) as e:
            return json_response(start_response, {"error": str(e)}, 400)
        return json_response(
            start_response, {"error": f"no control path {method} /{CONTROL_PREFIX.strip('/')}/{path}"}, 404
        )
