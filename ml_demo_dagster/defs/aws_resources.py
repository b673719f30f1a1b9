"""The aws faces of the resources (defs/resources.py maps the aws target to these).

- GlueFeatureJob: the glue/ feature job as an AWS Glue 5 job, launched with dagster-aws's
  PipesGlueClient; context and messages go through S3 (PipesS3ContextInjector,
  PipesS3MessageReader), so the script's log lines and counts reach Dagster while it runs.
  The script and what it imports are uploaded by content hash, and the job definition is
  created or updated to match the config, idempotently, before each run.
- SageMakerTuner: a SageMaker hyperparameter tuning job of the built-in linear-learner on
  the dataset's CSV channels, from [tuning]; the best training job's artifact becomes a
  SageMaker model, and a batch transform gives its predictions on the validation and test
  rows (the assets compute every score from them, as locally);
- SageMakerScorer: a registered version's SageMaker model scores rows in a batch transform
  job (the gate and live precision);
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

import json
import random
import string
import warnings
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
from ml_demo_dagster.aws.waiting import Job, RemoteJobError, one_line, stop_job, wait_for
from ml_demo_dagster.config import ProjectConfig
from ml_demo_dagster.core.layout import PIPES_PREFIX
from ml_demo_dagster.core.staging import deals_key, price_key
from ml_demo_dagster.core.store import ObjectStore
from ml_demo_dagster.defs.resources import (
    DeployerResource,
    FeatureJobResource,
    FeatureJobRun,
    ProjectConfigResource,
    ScorerResource,
    TunerResource,
)

GLUE_DONE = ("SUCCEEDED",)
GLUE_FAILED = ("FAILED", "STOPPED", "TIMEOUT", "ERROR")
# A remote job that ran and failed (or timed out) is not run again by Dagster's step retry:
# it would start another paid job that fails the same way, and the services retry what is
# transient themselves (botocore on throttling and 5xx). The run fails with the remote reason.
NO_REMOTE_RETRY = False


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
        # botocore already retried throttling and 5xx; what is left (access denied, a missing
        # bucket or role) fails the same way on a retry.
        raise dg.Failure(description=explain(e, service=service, bucket=bucket), allow_retries=False) from None


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
            with aws_errors("glue", bucket), warnings.catch_warnings():
                # dagster 1.13 warns that a Pipes internal it calls itself is in preview: not ours to act on.
                warnings.filterwarnings("ignore", message=".*expected_writer_count.*")
                invocation = pipes.run(context=context, start_job_run_params=request)
        except RemoteJobError as e:
            raise dg.Failure(
                description=str(e), metadata=self._run_metadata(cfg, pipes.run_id), allow_retries=NO_REMOTE_RETRY
            ) from None
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
            # The run was terminated: the wait stopped the Glue run, or, when the interrupt came
            # before the wait had its id, it is found and stopped here. The step ends here, not
            # in a retry that would start the Glue run again.
            if pipes.run_id is None:
                pipes.run_id = self._stop_unfollowed_run(glue, request, context.log.info)
            raise dg.Failure(
                description=f"interrupted: Glue run {pipes.run_id} stopped",
                metadata=self._run_metadata(cfg, pipes.run_id),
                allow_retries=False,
            ) from None
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
    def _stop_unfollowed_run(glue, request: dict[str, Any], log: Callable[[str], None]) -> str | None:
        """The run this request started, if any, stopped; its id. It is found by its arguments:
        Pipes added this session's own keys to them (`request` is the dict Pipes sent)."""
        job_name = request["JobName"]
        try:
            runs = glue.get_job_runs(JobName=job_name)["JobRuns"]
        except (ClientError, BotoCoreError) as e:
            log(f"Glue job {job_name}: could not look for the run just started: {one_line(e)}")
            return None
        mine = [r["Id"] for r in runs if r.get("Arguments") == request["Arguments"]]
        for run_id in mine:
            stop_job(f"Glue run {run_id} of job {job_name}",
                     lambda run_id=run_id: glue.batch_stop_job_run(JobName=job_name, JobRunIds=[run_id]), log)  # fmt: skip
        return mine[0] if mine else None

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
                                                 f"{intent['version']}: {e}", allow_retries=NO_REMOTE_RETRY) from None  # fmt: skip
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
        registry = ModelRegistry(store)
        # `record` is the gate's decision; the model's own record says where the model is.
        artifact = sagemaker_artifact(record if "artifact" in record else registry.load_record(version), version)
        model_name = artifact.get("model_name") or rq.model_name(cfg, version, rq.run_token())
        config_name = rq.endpoint_config_name(cfg, version, rq.run_token())
        with aws_errors("sagemaker"):
            ensure_model(sagemaker, cfg, model_name, artifact["model_data_url"])
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
                raise dg.Failure(description=str(e), allow_retries=NO_REMOTE_RETRY) from None
            if final["EndpointConfigName"] != config_name:
                # SageMaker rolls a failed update back: the endpoint is InService on the old config,
                # which is what the registry says serves; the new config goes.
                reason = final.get("FailureReason") or "the update did not take effect"
                self.reconcile(store, log)
                raise dg.Failure(description=f"endpoint {cfg.endpoint_name} update to {config_name} failed and was "
                                             f"rolled back: {' '.join(str(reason).split())}")  # fmt: skip
        registry.promote(version, record)
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


# --- SageMaker tuning and scoring ------------------------------------------------------------

TUNING_DONE = ("Completed",)
TUNING_FAILED = ("Failed", "Stopped")


def threshold_of(scores, labels) -> float:
    """The decision threshold a model's (score, label) pairs imply: its lowest score labelled 1."""
    import numpy as np

    positive = np.asarray(scores)[np.asarray(labels) == 1]
    if positive.size:
        return float(positive.min())
    return float(np.nextafter(max(float(np.max(scores, initial=1.0)), 1.0), np.inf))


def _transform(sagemaker, store: ObjectStore, cfg: ProjectConfig, model_name: str, X, tag: str, log):
    from ml_demo_dagster.aws.scoring import ScoringError, batch_transform

    try:
        with aws_errors("sagemaker"):
            return batch_transform(sagemaker, store, cfg, model_name, X, tag, log)
    except (RemoteJobError, ScoringError) as e:
        raise dg.Failure(description=str(e), allow_retries=NO_REMOTE_RETRY) from None


class SageMakerTuner(TunerResource):
    """A SageMaker hyperparameter tuning job of the built-in linear-learner on the dataset's CSV
    channels, as [tuning] says; the best training job's model becomes a SageMaker model, and
    a batch transform gives its predictions on the validation and test rows."""

    project: ProjectConfigResource

    @staticmethod
    def _progress(description: dict[str, Any]) -> str:
        counts = description.get("TrainingJobStatusCounters") or {}
        limits = description["HyperParameterTuningJobConfig"]["ResourceLimits"]
        done = counts.get("Completed", 0) + counts.get("NonRetryableError", 0) + counts.get("Stopped", 0)
        best = (description.get("BestTrainingJob") or {}).get("FinalHyperParameterTuningJobObjectiveMetric")
        shown = f", best {best['MetricName']} {best['Value']:.4f}" if best else ""
        return f"{done}/{limits['MaxNumberOfTrainingJobs']} training jobs done, {counts.get('InProgress', 0)} running{shown}"

    @staticmethod
    def _failure(sagemaker, name: str, description: dict[str, Any]) -> str:
        reason = description.get("FailureReason") or description.get("HyperParameterTuningJobStatus")
        try:
            failed = sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
                HyperParameterTuningJobName=name, StatusEquals="Failed", MaxResults=1
            )["TrainingJobSummaries"]
        except ClientError:
            failed = []
        if failed and failed[0].get("FailureReason") and failed[0]["FailureReason"] not in reason:
            reason += f" (training job {failed[0]['TrainingJobName']}: {failed[0]['FailureReason']})"
        return reason

    @staticmethod
    def _trials(sagemaker, name: str, cfg: ProjectConfig) -> tuple[list, list[str]]:
        """The tuning job's training jobs as trials, in creation order, and their names."""
        from ml_demo_dagster.core.tuner import COMPLETED, FAILED, TrialResult

        summaries, token = [], None
        while True:
            page = sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
                HyperParameterTuningJobName=name, SortBy="CreationTime", SortOrder="Ascending", MaxResults=100,
                **({"NextToken": token} if token else {}),
            )  # fmt: skip
            summaries += page["TrainingJobSummaries"]
            token = page.get("NextToken")
            if not token:
                break
        static = cfg.static_hyperparameters()
        trials = []
        for number, summary in enumerate(summaries):
            job = sagemaker.describe_training_job(TrainingJobName=summary["TrainingJobName"])
            final = {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])}
            tuned = {}
            for key, raw in summary.get("TunedHyperParameters", {}).items():
                r = cfg.tuning.ranges.get(key)
                tuned[key] = int(float(raw)) if r is not None and r.integer else float(raw)
            objective = (summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value")
            started, ended = job.get("TrainingStartTime") or job["CreationTime"], job.get("TrainingEndTime")
            trials.append(TrialResult(
                number=number, tuned=tuned, hyperparameters={**static, **tuned},
                state=COMPLETED if summary["TrainingJobStatus"] == "Completed" and objective is not None else FAILED,
                objective=objective,
                validation={"roc_auc": final.get("validation:roc_auc_score"), "log_loss": final.get("validation:objective_loss"),
                            "precision_at_threshold": final.get("validation:precision"),
                            "recall_at_threshold": final.get("validation:recall")},
                seconds=float(job.get("TrainingTimeInSeconds") or 0), started_at=started.timestamp(),
                finished_at=(ended or started).timestamp(), worker=0, seed=0, error=summary.get("FailureReason"),
            ))  # fmt: skip
        return trials, [summary["TrainingJobName"] for summary in summaries]

    def tune(self, store: ObjectStore, version: str, dataset, config: ProjectConfig, log: Callable[[str], None]):
        import time

        import numpy as np

        from ml_demo_dagster.core import metrics
        from ml_demo_dagster.core.dataset import channel_keys
        from ml_demo_dagster.core.evaluation import Predictions
        from ml_demo_dagster.core.layout import dataset_prefix, tuning_output_prefix
        from ml_demo_dagster.core.tuner import TuningResult

        started = time.perf_counter()
        cfg = config
        region = cfg.project.region
        sagemaker = client("sagemaker", region, cfg.aws.max_attempts)
        bucket, _ = s3_location(store)
        keys = channel_keys(dataset_prefix(version))
        for channel in ("train", "validation"):
            if not store.exists(keys[channel]):
                raise dg.Failure(description=f"the {channel} channel of dataset {version} is not in the store "
                                             f"({store.uri(keys[channel])}); materialize training_dataset first")  # fmt: skip
        folder = lambda key: store.uri(key).rsplit("/", 1)[0] + "/"  # noqa: E731 (the channel's folder)
        token = rq.run_token()
        name = rq.tuning_job_name(cfg, version, token)
        request = rq.tuning_job(cfg, name, folder(keys["train"]), folder(keys["validation"]),
                                store.uri(tuning_output_prefix(version).rstrip("/")) + "/")  # fmt: skip
        url = console.sagemaker(region, "hyper-tuning-jobs", name)
        log(f"tuning job {name}: {url}")
        try:
            with aws_errors("sagemaker", bucket):
                final = wait_for(
                    Job(
                        what=f"tuning job {name}",
                        start=lambda: sagemaker.create_hyper_parameter_tuning_job(**request),
                        describe=lambda: sagemaker.describe_hyper_parameter_tuning_job(
                            HyperParameterTuningJobName=name
                        ),
                        status=lambda d: d["HyperParameterTuningJobStatus"],
                        succeeded=TUNING_DONE,
                        failed=TUNING_FAILED,
                        reason=lambda d: self._failure(sagemaker, name, d),
                        stop=lambda: sagemaker.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name),
                        progress=self._progress,
                        timeout_key="aws.tuning_timeout_minutes",
                    ),
                    timeout_seconds=cfg.aws.tuning_timeout_minutes * 60,
                    poll_seconds=cfg.aws.poll_interval_seconds,
                    log=log,
                )
        except RemoteJobError as e:
            raise dg.Failure(
                description=str(e),
                metadata={"tuning_job": name, "tuning_job_url": dg.MetadataValue.url(url)},
                allow_retries=NO_REMOTE_RETRY,
            ) from None
        with aws_errors("sagemaker", bucket):
            trials, names = self._trials(sagemaker, name, cfg)
            best_name = final["BestTrainingJob"]["TrainingJobName"]
            model_data_url = sagemaker.describe_training_job(TrainingJobName=best_name)["ModelArtifacts"][
                "S3ModelArtifacts"
            ]
            model_name = ensure_model(sagemaker, cfg, rq.model_name(cfg, version, token), model_data_url)
        log(f"tuning job {name}: best training job {best_name}, model {model_name}")
        best = trials[names.index(best_name)]
        rows = np.concatenate([dataset.validation.X, dataset.test.X])
        scores, labels = _transform(sagemaker, store, cfg, model_name, rows, f"{version}-best", log)
        n = len(dataset.validation.y)
        validation, test = Predictions(scores[:n], labels[:n]), Predictions(scores[n:], labels[n:])
        threshold = threshold_of(validation.scores, validation.labels)
        target_recall = cfg.tuning.static.target_recall
        return TuningResult(
            trials=trials,
            best=best,
            model=None,
            validation_predictions=validation,
            test_predictions=test,
            validation=metrics.evaluate_scores(dataset.validation.y, validation.scores, threshold, target_recall),
            test=metrics.evaluate_scores(dataset.test.y, test.scores, threshold, target_recall),
            pr_curve=metrics.pr_curve(dataset.test.y, test.scores),
            strategy=cfg.tuning.strategy,
            max_jobs=cfg.tuning.max_jobs,
            max_parallel_jobs=cfg.tuning.max_parallel_jobs,
            objective_metric=cfg.tuning.objective_metric,
            objective_type=cfg.tuning.objective_type,
            target_recall=target_recall,
            seconds=time.perf_counter() - started,
            artifact={
                "kind": "sagemaker",
                "tuning_job": name,
                "best_training_job": best_name,
                "model_name": model_name,
                "model_data_url": model_data_url,
            },  # fmt: skip
        )


class SageMakerScorer(ScorerResource):
    """Scores rows with a registered version's SageMaker model, in a batch transform job."""

    project: ProjectConfigResource

    def predict(self, store: ObjectStore, version: str, X):
        from ml_demo_dagster.core.evaluation import Predictions
        from ml_demo_dagster.core.registry import ModelRegistry

        cfg = self.project.get()
        sagemaker = client("sagemaker", cfg.project.region, cfg.aws.max_attempts)
        artifact = sagemaker_artifact(ModelRegistry(store).load_record(version), version)
        with aws_errors("sagemaker"):
            model_name = ensure_model(
                sagemaker, cfg, artifact.get("model_name") or rq.model_name(cfg, version, rq.run_token()),
                artifact["model_data_url"],
            )  # fmt: skip
        scores, labels = _transform(sagemaker, store, cfg, model_name, X, version, dg.get_dagster_logger().info)
        return Predictions(scores, labels)
