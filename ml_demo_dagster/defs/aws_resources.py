"""The aws faces of the resources (defs/resources.py maps the aws target to these).

- GlueFeatureJob: the glue/ feature job as an AWS Glue 5 job, launched with dagster-aws's
  PipesGlueClient; context and messages go through S3 (PipesS3ContextInjector,
  PipesS3MessageReader), so the script's log lines and counts reach Dagster while it runs.
  The script and what it imports are uploaded by content hash, and the job definition is
  created or updated to match the config, idempotently, before each run.
- SageMakerDeployer: model, endpoint config, then update_endpoint when the endpoint exists
  or create_endpoint when it does not; waits for InService; a deployment left
  half-finished by a run that died is completed or rolled back by the next one.

Each call goes through aws/clients.py (botocore standard retries: throttling and 5xx are
retried with backoff); each wait goes through aws/waiting.py (progress in the Dagster
log, timeouts from [aws], the remote failure reason in the error, the remote job stopped
when the Dagster run is terminated). What is sent is built by aws/requests.py. Errors
that are the user's to fix (credentials, bucket, role, access) are one line naming
what to fix (aws/errors.py), raised as dagster Failures.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from botocore.exceptions import BotoCoreError, ClientError
from dagster_aws.pipes import PipesGlueClient, PipesS3ContextInjector, PipesS3MessageReader

from ml_demo_dagster.aws import console, glue_code
from ml_demo_dagster.aws import requests as rq
from ml_demo_dagster.aws.clients import client
from ml_demo_dagster.aws.errors import explain
from ml_demo_dagster.aws.waiting import Job, RemoteJobError, wait_for
from ml_demo_dagster.config import ProjectConfig
from ml_demo_dagster.core.staging import deals_key, price_key
from ml_demo_dagster.core.store import ObjectStore
from ml_demo_dagster.defs.resources import (
    DeployerResource,
    FeatureJobResource,
    FeatureJobRun,
    ProjectConfigResource,
)

PIPES_PREFIX = "pipes/"
GLUE_DONE = ("SUCCEEDED",)
GLUE_FAILED = ("FAILED", "STOPPED", "TIMEOUT", "ERROR")


def s3_location(store: ObjectStore) -> tuple[str, str]:
    """(bucket, key prefix) of an S3 store; a clear error for a local folder."""
    probe = store.uri("x")
    if not probe.startswith("s3://"):
        raise dg.Failure(
            description=f"the aws target needs an s3:// store, not {store.url!r}: set store.url or store.bucket "
            "in the config, or pass --store s3://BUCKET"
        )
    bucket, _, key = probe[len("s3://") :].partition("/")
    return bucket, key[: -len("x")]


@contextmanager
def aws_errors(service: str, bucket: str = "") -> Iterator[None]:
    """botocore errors as dagster Failures with one line saying what to fix."""
    try:
        yield
    except (ClientError, BotoCoreError) as e:
        raise dg.Failure(description=explain(e, service=service, bucket=bucket)) from None


class _PrefixedS3MessageReader(PipesS3MessageReader):
    """PipesS3MessageReader whose message chunks go under a key prefix (the store's pipes/),
    not at the bucket's top level."""

    def __init__(self, *, key_prefix: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.key_prefix = key_prefix

    @contextmanager
    def get_params(self) -> Iterator[dict[str, Any]]:
        with super().get_params() as params:
            suffix = "".join(random.choices(string.ascii_letters, k=30))
            yield {**params, "key_prefix": f"{self.key_prefix}{suffix}"}


class _WaitingGlueClient(PipesGlueClient):
    """PipesGlueClient whose wait logs progress, honours the config's timeout and poll
    interval, raises with the run's ErrorMessage, and stops the run when interrupted."""

    def __init__(self, *, log: Callable[[str], None], region: str, timeout_seconds: float, poll_seconds: float,
                 **kwargs: Any):  # fmt: skip
        super().__init__(forward_termination=False, **kwargs)  # our wait stops the run itself
        self._log, self._region = log, region
        self._timeout, self._poll = timeout_seconds, poll_seconds
        self.run_id: str | None = None

    def _wait_for_job_run_completion(self, job_name: str, run_id: str) -> dict[str, Any]:
        self.run_id = run_id
        self._log(f"Glue run {run_id}: {console.glue_run(self._region, job_name, run_id)}")
        return wait_for(
            Job(
                what=f"Glue run {run_id} of job {job_name}",
                describe=lambda: self._client.get_job_run(JobName=job_name, RunId=run_id),
                status=lambda d: d["JobRun"]["JobRunState"],
                succeeded=GLUE_DONE,
                failed=GLUE_FAILED,
                reason=lambda d: d["JobRun"].get("ErrorMessage"),
                stop=lambda: self._client.batch_stop_job_run(JobName=job_name, JobRunIds=[run_id]),
                progress=lambda d: f"{d['JobRun'].get('ExecutionTime', 0)} s of execution",
                timeout_key="aws.glue_timeout_minutes",
            ),
            timeout_seconds=self._timeout,
            poll_seconds=self._poll,
            log=self._log,
        )


def _differs(current: Any, wanted: Any) -> bool:
    """Whether a described resource differs from a request on any key the request sets."""
    if isinstance(wanted, dict):
        if not isinstance(current, dict):
            return True
        return any(_differs(current.get(k), v) for k, v in wanted.items())
    return current != wanted


class GlueFeatureJob(FeatureJobResource):
    """The feature job as an AWS Glue 5 Spark job, launched and followed through Dagster Pipes."""

    project: ProjectConfigResource

    def _code(self, store: ObjectStore, cfg: ProjectConfig) -> tuple[str, str]:
        """Upload the script and its module zip once per content hash; their s3:// URIs."""
        code = glue_code.build()
        keys = code.keys(cfg.aws.code_prefix)
        for key, data in zip(keys, (code.script, code.modules), strict=True):
            if not store.exists(key):
                store.put_bytes(key, data)
        return store.uri(keys[0]), store.uri(keys[1])

    @staticmethod
    def ensure_job(glue, request: dict[str, Any]) -> str:
        """Create the Glue job, or update it when its definition differs; what was done."""
        name = request["Name"]
        try:
            current = glue.get_job(JobName=name)["Job"]
        except glue.exceptions.EntityNotFoundException:
            try:
                glue.create_job(**request)
                return "created"
            except glue.exceptions.AlreadyExistsException:  # another run created it just now
                current = glue.get_job(JobName=name)["Job"]
        update = rq.glue_job_update(request)
        if _differs(current, update["JobUpdate"]):
            glue.update_job(**update)
            return "updated"
        return "unchanged"

    def run(self, context, store: ObjectStore, batch_id: str, out_prefix: str, history_seconds: int) -> FeatureJobRun:
        cfg = self.project.get()
        region, attempts = cfg.project.region, cfg.aws.max_attempts
        bucket, prefix = s3_location(store)
        s3, glue = client("s3", region, attempts), client("glue", region, attempts)
        with aws_errors("glue", bucket):
            script_uri, modules_uri = self._code(store, cfg)
            done = self.ensure_job(glue, rq.glue_job(cfg, script_uri, modules_uri))
        context.log.info(f"Glue job {cfg.glue_job_name}: definition {done}; script {script_uri}")
        request = rq.glue_job_run(
            cfg, batch_id, store.uri(deals_key(batch_id)), store.uri(price_key(batch_id)), store.uri(out_prefix),
            history_seconds,
        )  # fmt: skip
        pipes = _WaitingGlueClient(
            log=context.log.info,
            region=region,
            timeout_seconds=cfg.aws.glue_timeout_minutes * 60 + 120,  # Glue stops the run itself at its Timeout
            poll_seconds=cfg.aws.poll_interval_seconds,
            context_injector=PipesS3ContextInjector(bucket=bucket, client=s3, key_prefix=f"{prefix}{PIPES_PREFIX}"),
            message_reader=_PrefixedS3MessageReader(
                bucket=bucket, client=s3, interval=min(cfg.aws.poll_interval_seconds, 10.0),
                key_prefix=f"{prefix}{PIPES_PREFIX}",
            ),
            client=glue,
        )  # fmt: skip
        try:
            with aws_errors("glue", bucket):
                invocation = pipes.run(context=context, start_job_run_params=request)
        except RemoteJobError as e:
            raise dg.Failure(description=str(e), metadata=self._run_metadata(cfg, pipes.run_id)) from None
        counts: dict[str, int] = {}
        for message in invocation.get_custom_messages():
            if isinstance(message, dict) and isinstance(message.get("counts"), dict):
                counts = {k: int(v) for k, v in message["counts"].items()}
        if not counts:
            raise dg.Failure(
                description=f"Glue run {pipes.run_id} succeeded but reported no counts through Dagster Pipes",
                metadata=self._run_metadata(cfg, pipes.run_id),
            )
        return FeatureJobRun(counts=counts, metadata=self._run_metadata(cfg, pipes.run_id))

    @staticmethod
    def _run_metadata(cfg: ProjectConfig, run_id: str | None) -> dict[str, Any]:
        if run_id is None:
            return {"glue_job_name": cfg.glue_job_name}
        return {
            "glue_job_name": cfg.glue_job_name,
            "glue_job_run_id": run_id,
            "glue_job_run_url": dg.MetadataValue.url(console.glue_run(cfg.project.region, cfg.glue_job_name, run_id)),
        }


# --- SageMaker models and the endpoint -------------------------------------------------------

DEPLOYMENT_KEY = "models/deployment-intent.json"
ENDPOINT_DONE = ("InService",)
ENDPOINT_FAILED = ("Failed", "OutOfService", "UpdateRollbackFailed", "Deleting")


def sagemaker_artifact(record: dict[str, Any], version: str) -> dict[str, Any]:
    """The SageMaker artifact of a registry record; a clear error for a model trained elsewhere."""
    artifact = record.get("artifact") or {}
    if artifact.get("kind") != "sagemaker" or not artifact.get("model_data_url"):
        raise dg.Failure(
            description=f"model version {version} was not trained by SageMaker (artifact {artifact or 'missing'}); "
            "the aws target serves and scores SageMaker models only: retrain it with --target aws"
        )
    return artifact


def model_name_for(cfg: ProjectConfig, version: str, model_data_url: str) -> str:
    """The SageMaker model of a version's artifact (named by both: a retrained version gets a new one)."""
    return cfg.aws_name("m", f"{version}-{hashlib.sha256(model_data_url.encode()).hexdigest()[:6]}")


def ensure_model(sagemaker, cfg: ProjectConfig, name: str, model_data_url: str) -> str:
    """The SageMaker model `name` for an artifact, created if it does not exist yet."""
    try:
        sagemaker.describe_model(ModelName=name)
    except ClientError as e:
        if "Could not find model" not in str(e) and e.response["Error"]["Code"] != "ValidationException":
            raise
        sagemaker.create_model(**rq.model(cfg, name, model_data_url))
    return name


def _endpoint(sagemaker, name: str) -> dict[str, Any] | None:
    try:
        return sagemaker.describe_endpoint(EndpointName=name)
    except ClientError as e:
        if e.response["Error"]["Code"] == "ValidationException" and "Could not find endpoint" in str(e):
            return None
        raise


class SageMakerDeployer(DeployerResource):
    """Serves a model version from the project's SageMaker endpoint (update, or create if absent).

    Before it touches the endpoint it writes an intent (`models/deployment-intent.json`:
    which version, endpoint config and record), and it promotes the version in the registry
    only once the endpoint is InService on that config; then the intent goes. A run that
    dies in between leaves the intent, and the next deploy or `reconcile` settles it:
    if the endpoint serves the intended config the deployment is completed (the gate chose
    that version), otherwise it is rolled back (its endpoint config deleted, the endpoint
    left on the champion). So the endpoint never serves a model no gate chose.
    """

    project: ProjectConfigResource

    def _clients(self, cfg: ProjectConfig):
        return client("sagemaker", cfg.project.region, cfg.aws.max_attempts)

    def _wait_endpoint(self, sagemaker, cfg: ProjectConfig, log: Callable[[str], None]) -> dict[str, Any]:
        name = cfg.endpoint_name
        return wait_for(
            Job(
                what=f"endpoint {name}",
                describe=lambda: sagemaker.describe_endpoint(EndpointName=name),
                status=lambda d: d["EndpointStatus"],
                succeeded=ENDPOINT_DONE,
                failed=ENDPOINT_FAILED,
                reason=lambda d: d.get("FailureReason"),
                progress=lambda d: f"config {d.get('EndpointConfigName')}",
                timeout_key="aws.endpoint_timeout_minutes",
            ),
            timeout_seconds=cfg.aws.endpoint_timeout_minutes * 60,
            poll_seconds=cfg.aws.poll_interval_seconds,
            log=log,
        )

    def reconcile(self, store: ObjectStore, log: Callable[[str], None]) -> str | None:
        """Complete or roll back a deployment a previous run left half-finished; what was done."""
        if not store.exists(DEPLOYMENT_KEY):
            return None
        from ml_demo_dagster.core.registry import ModelRegistry

        cfg = self.project.get()
        intent = json.loads(store.get_text(DEPLOYMENT_KEY))
        sagemaker = self._clients(cfg)
        with aws_errors("sagemaker"):
            endpoint = _endpoint(sagemaker, cfg.endpoint_name)
            if endpoint is not None and endpoint["EndpointStatus"] in ("Creating", "Updating", "SystemUpdating"):
                try:
                    endpoint = self._wait_endpoint(sagemaker, cfg, log)
                except RemoteJobError as e:
                    raise dg.Failure(description=f"cannot settle the half-finished deployment of version "
                                                 f"{intent['version']}: {e}") from None  # fmt: skip
            serving = endpoint is not None and endpoint["EndpointStatus"] == "InService"
            if serving and endpoint["EndpointConfigName"] == intent["endpoint_config"]:
                ModelRegistry(store).promote(intent["version"], intent["record"])
                done = f"completed the deployment of version {intent['version']} (endpoint already serves it)"
            else:
                try:
                    sagemaker.delete_endpoint_config(EndpointConfigName=intent["endpoint_config"])
                except ClientError as e:
                    if e.response["Error"]["Code"] != "ValidationException":
                        raise
                on = endpoint["EndpointConfigName"] if endpoint else "no endpoint"
                done = f"rolled back the deployment of version {intent['version']} (endpoint stays on {on})"
        store.delete(DEPLOYMENT_KEY)
        log(done)
        return done

    def deploy(self, store: ObjectStore, version: str, record: dict[str, Any]) -> str:
        from ml_demo_dagster.core.registry import ModelRegistry

        log = dg.get_dagster_logger().info
        cfg = self.project.get()
        sagemaker = self._clients(cfg)
        self.reconcile(store, log)
        artifact = sagemaker_artifact(record, version)
        model_name = artifact.get("model_name") or model_name_for(cfg, version, artifact["model_data_url"])
        variant = json.dumps([model_name, cfg.aws.endpoint_instance_type, cfg.aws.endpoint_instance_count])
        config_name = cfg.aws_name("c", f"{version}-{hashlib.sha256(variant.encode()).hexdigest()[:6]}")
        with aws_errors("sagemaker"):
            ensure_model(sagemaker, cfg, model_name, artifact["model_data_url"])
            try:
                sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
            except ClientError:
                sagemaker.create_endpoint_config(**rq.endpoint_config(cfg, config_name, model_name))
            store.put_text(DEPLOYMENT_KEY, json.dumps(
                {"version": version, "endpoint_config": config_name, "model": model_name, "record": record},
                default=str))  # fmt: skip
            endpoint = _endpoint(sagemaker, cfg.endpoint_name)
            request = rq.endpoint(cfg, config_name)
            if endpoint is None:
                log(f"endpoint {cfg.endpoint_name}: creating it with {config_name} (model {model_name})")
                sagemaker.create_endpoint(**request, Tags=rq.tags(cfg))
            elif endpoint["EndpointStatus"] == "Failed":
                # A failed endpoint cannot be updated; it serves nothing, so it is replaced.
                log(f"endpoint {cfg.endpoint_name} is Failed ({endpoint.get('FailureReason')}); recreating it")
                sagemaker.delete_endpoint(EndpointName=cfg.endpoint_name)
                self._wait_gone(sagemaker, cfg)
                sagemaker.create_endpoint(**request, Tags=rq.tags(cfg))
            elif endpoint["EndpointConfigName"] != config_name:
                log(f"endpoint {cfg.endpoint_name}: updating {endpoint['EndpointConfigName']} -> {config_name}")
                sagemaker.update_endpoint(**request)
            try:
                final = self._wait_endpoint(sagemaker, cfg, log)
            except RemoteJobError as e:
                raise dg.Failure(description=str(e)) from None
            if final["EndpointConfigName"] != config_name:
                # SageMaker rolls a failed update back: the endpoint is InService on the old config,
                # which is what the registry says serves; the new config goes.
                reason = final.get("FailureReason") or "the update did not take effect"
                self.reconcile(store, log)
                raise dg.Failure(description=f"endpoint {cfg.endpoint_name} update to {config_name} failed and was "
                                             f"rolled back: {' '.join(str(reason).split())}")  # fmt: skip
        ModelRegistry(store).promote(version, record)
        store.delete(DEPLOYMENT_KEY)
        log(f"endpoint {cfg.endpoint_name} serves version {version} (model {model_name})")
        return cfg.endpoint_name

    def _wait_gone(self, sagemaker, cfg: ProjectConfig) -> None:
        wait_for(
            Job(
                what=f"endpoint {cfg.endpoint_name} deletion",
                describe=lambda: _endpoint(sagemaker, cfg.endpoint_name) or {"EndpointStatus": "Gone"},
                status=lambda d: d["EndpointStatus"],
                succeeded=("Gone",),
                failed=("Failed",),
                reason=lambda d: d.get("FailureReason"),
                timeout_key="aws.endpoint_timeout_minutes",
            ),
            timeout_seconds=cfg.aws.endpoint_timeout_minutes * 60,
            poll_seconds=cfg.aws.poll_interval_seconds,
            log=dg.get_dagster_logger().info,
        )
