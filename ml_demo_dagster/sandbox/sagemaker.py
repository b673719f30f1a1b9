"""SageMaker jobs and endpoints that really run, with the local trainer and endpoint code.

moto keeps models and endpoint configs (CreateModel, CreateEndpointConfig, Describe*,
Delete*); the sandbox answers the rest of what the aws target calls, including what
moto lacks (ListTrainingJobsForHyperParameterTuningJob, StopHyperParameterTuningJob,
UpdateEndpoint, StopTransformJob):

- a hyperparameter tuning job searches the request's ranges (Bayesian: optuna's TPE,
  Random: random search) for the request's objective and direction, within its limits,
  running up to MaxParallelTrainingJobs training jobs at once in worker processes. Each
  training job trains on the request's channels with the static hyperparameters plus
  the trial's values (training.py), writes `<OutputPath>/<job>/output/model.tar.gz`, and
  reports its final metrics; the tuning job names the best one. A job whose every
  training job failed fails with the reason;
- a transform job loads the model named in the request from its artifact, serves it
  with the local endpoint code (core/endpoint.py) on a loopback port, sends it the input
  rows in mini-batches (SplitType Line, MaxPayloadInMB) like SageMaker's batch agent, and
  writes `<input name>.out` under the output path, one JSON line per row for
  `application/jsonlines`;
- an endpoint serves its endpoint config's model the same way; `invoke_endpoint` is
  forwarded to it. UpdateEndpoint starts the new model and switches once it answers
  /ping; a failed update leaves the old model serving (InService, with FailureReason),
  as SageMaker rolls back.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import math
import multiprocessing
import os
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ml_demo_dagster.sandbox.clients import InternalClients, list_keys, split_s3_uri
from ml_demo_dagster.sandbox.faults import Faults
from ml_demo_dagster.sandbox.protocol import AwsError, now, validation
from ml_demo_dagster.sandbox.training import ChannelError, init_worker, read_channel, train_job, unpack_artifact

log = logging.getLogger(__name__)
ACCOUNT = "123456789012"  # moto's default account: any credentials map to it
OBJECTIVES = {
    "validation:objective_loss": "Minimize",
    "validation:roc_auc_score": "Maximize",
    "validation:precision": "Maximize",
    "validation:recall": "Maximize",
}
STRATEGIES = ("Bayesian", "Random")


def arn(region: str, kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{region}:{ACCOUNT}:{kind}/{name.lower()}"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


# --- tuning and training jobs ----------------------------------------------------------------


@dataclass
class TrainingJob:
    name: str
    region: str
    tuning_job: str
    hyperparameters: dict[str, str]
    tuned: dict[str, str]
    definition: dict[str, Any]
    objective: dict[str, str]
    status: str = "InProgress"
    secondary: str = "Starting"
    failure: str | None = None
    created: Any = field(default_factory=now)
    started: Any = None
    ended: Any = None
    metrics: dict[str, float] = field(default_factory=dict)
    artifact_uri: str | None = None

    def objective_value(self) -> float | None:
        value = self.metrics.get(self.objective["MetricName"])
        return value if _finite(value) else None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "TrainingJobName": self.name,
            "TrainingJobArn": arn(self.region, "training-job", self.name),
            "TuningJobName": self.tuning_job,
            "CreationTime": self.created,
            "TrainingJobStatus": self.status,
            "TunedHyperParameters": dict(self.tuned),
        }
        if self.started:
            out["TrainingStartTime"] = self.started
        if self.ended:
            out["TrainingEndTime"] = self.ended
        if self.failure:
            out["FailureReason"] = self.failure
        value = self.objective_value()
        if value is not None:
            out["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "Type": self.objective["Type"], "MetricName": self.objective["MetricName"], "Value": value}  # fmt: skip
        out["ObjectiveStatus"] = (
            "Succeeded" if value is not None else "Pending" if self.status == "InProgress" else "Failed"
        )
        return out

    def describe(self) -> dict[str, Any]:
        d = self.definition
        out: dict[str, Any] = {
            "TrainingJobName": self.name,
            "TrainingJobArn": arn(self.region, "training-job", self.name),
            "TuningJobArn": arn(self.region, "hyper-parameter-tuning-job", self.tuning_job),
            "TrainingJobStatus": self.status,
            "SecondaryStatus": self.secondary,
            "HyperParameters": dict(self.hyperparameters),
            "AlgorithmSpecification": d["AlgorithmSpecification"],
            "RoleArn": d["RoleArn"],
            "InputDataConfig": d["InputDataConfig"],
            "OutputDataConfig": d["OutputDataConfig"],
            "ResourceConfig": d["ResourceConfig"],
            "StoppingCondition": d["StoppingCondition"],
            "CreationTime": self.created,
            "LastModifiedTime": self.ended or self.started or self.created,
            "ModelArtifacts": {"S3ModelArtifacts": self.artifact_uri or ""},
            "FinalMetricDataList": [
                {"MetricName": k, "Value": v, "Timestamp": self.ended or now()}
                for k, v in sorted(self.metrics.items())
                if _finite(v)
            ],  # fmt: skip
        }
        if self.started:
            out["TrainingStartTime"] = self.started
        if self.ended:
            out["TrainingEndTime"] = self.ended
            seconds = int((self.ended - (self.started or self.created)).total_seconds())
            out["TrainingTimeInSeconds"] = out["BillableTimeInSeconds"] = max(1, seconds)
        if self.failure:
            out["FailureReason"] = self.failure
        return out


@dataclass
class TuningJob:
    name: str
    region: str
    request: dict[str, Any]
    status: str = "InProgress"
    failure: str | None = None
    created: Any = field(default_factory=now)
    ended: Any = None
    modified: Any = field(default_factory=now)
    trials: list[TrainingJob] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def config(self) -> dict[str, Any]:
        return self.request["HyperParameterTuningJobConfig"]

    @property
    def objective(self) -> dict[str, str]:
        return self.config["HyperParameterTuningJobObjective"]

    def best(self) -> TrainingJob | None:
        scored = [t for t in self.trials if t.status == "Completed" and t.objective_value() is not None]
        if not scored:
            return None
        sign = -1.0 if self.objective["Type"] == "Minimize" else 1.0
        return max(scored, key=lambda t: (sign * t.objective_value(), -self.trials.index(t)))

    def describe(self) -> dict[str, Any]:
        counts = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
        objective = {"Succeeded": 0, "Pending": 0, "Failed": 0}
        for t in self.trials:
            counts[{"Failed": "NonRetryableError", "Stopping": "InProgress"}.get(t.status, t.status)] += 1
            objective[t.summary()["ObjectiveStatus"]] += 1
        out: dict[str, Any] = {
            "HyperParameterTuningJobName": self.name,
            "HyperParameterTuningJobArn": arn(self.region, "hyper-parameter-tuning-job", self.name),
            "HyperParameterTuningJobConfig": self.config,
            "TrainingJobDefinition": self.request["TrainingJobDefinition"],
            "HyperParameterTuningJobStatus": self.status,
            "CreationTime": self.created,
            "LastModifiedTime": self.modified,
            "TrainingJobStatusCounters": counts,
            "ObjectiveStatusCounters": objective,
        }
        if self.ended:
            out["HyperParameterTuningEndTime"] = self.ended
        best = self.best()
        if best is not None:
            out["BestTrainingJob"] = best.summary()
        if self.failure:
            out["FailureReason"] = self.failure
        return out


def _distributions(ranges: dict[str, Any]):
    """optuna distributions for SageMaker ParameterRanges; (name -> (distribution, reverse))."""
    import optuna

    out = {}
    for item in ranges.get("ContinuousParameterRanges") or []:
        low, high, scaling = float(item["MinValue"]), float(item["MaxValue"]), item.get("ScalingType", "Auto")
        if scaling == "Auto":
            scaling = "Logarithmic" if low > 0 and high / low >= 100 else "Linear"
        if scaling == "ReverseLogarithmic":
            out[item["Name"]] = (optuna.distributions.FloatDistribution(1 - high, 1 - low, log=True), True)
        else:
            out[item["Name"]] = (optuna.distributions.FloatDistribution(low, high, log=scaling == "Logarithmic"), False)
    for item in ranges.get("IntegerParameterRanges") or []:
        low, high, scaling = int(item["MinValue"]), int(item["MaxValue"]), item.get("ScalingType", "Auto")
        if scaling == "Auto":
            scaling = "Logarithmic" if low > 0 and high / low >= 100 else "Linear"
        out[item["Name"]] = (optuna.distributions.IntDistribution(low, high, log=scaling == "Logarithmic"), False)
    for item in ranges.get("CategoricalParameterRanges") or []:
        out[item["Name"]] = (optuna.distributions.CategoricalDistribution(list(item["Values"])), False)
    return out


def _check_tuning_request(body: dict[str, Any]) -> None:
    config = body["HyperParameterTuningJobConfig"]
    if config.get("Strategy") not in STRATEGIES:
        raise validation(f"Strategy {config.get('Strategy')!r}: the sandbox runs {' and '.join(STRATEGIES)}")
    objective = config.get("HyperParameterTuningJobObjective") or {}
    metric, kind = objective.get("MetricName"), objective.get("Type")
    if metric not in OBJECTIVES:
        raise validation(f"The objective metric {metric!r} is not a valid metric for linear-learner; "
                         f"use one of {', '.join(OBJECTIVES)}")  # fmt: skip
    if kind != OBJECTIVES[metric]:
        raise validation(f"The objective metric {metric} must be used with Type {OBJECTIVES[metric]}, not {kind}")
    definition = body.get("TrainingJobDefinition") or {}
    image = (definition.get("AlgorithmSpecification") or {}).get("TrainingImage", "")
    if "linear-learner" not in image:
        raise validation(f"TrainingImage {image!r}: the sandbox runs the built-in linear-learner only")
    channels = {c["ChannelName"]: c for c in definition.get("InputDataConfig") or []}
    for name in ("train", "validation"):
        if name not in channels:
            raise validation(f"channel {name!r} is required (the objective is measured on validation)")
        if channels[name].get("ContentType", "text/csv") != "text/csv":
            raise validation(f"channel {name}: the sandbox reads text/csv only")
    if not definition.get("RoleArn", "").startswith("arn:"):
        raise validation("RoleArn must be an IAM role ARN")
    _distributions(config.get("ParameterRanges") or {})


class Tuning:
    """Tuning jobs and their training jobs."""

    def __init__(self, clients: InternalClients, faults: Faults):
        self.clients, self.faults = clients, faults
        self._lock = threading.Lock()
        self._jobs: dict[str, TuningJob] = {}
        self._training: dict[str, TrainingJob] = {}

    def create(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["HyperParameterTuningJobName"]
        _check_tuning_request(body)
        with self._lock:
            if name in self._jobs:
                raise AwsError("ResourceInUse", f"Hyperparameter tuning job {name} already exists")
            job = TuningJob(name, region, body)
            self._jobs[name] = job
        threading.Thread(target=self._run, args=(job,), name=f"tuning-{name}", daemon=True).start()
        return {"HyperParameterTuningJobArn": arn(region, "hyper-parameter-tuning-job", name)}

    def job(self, name: str | None) -> TuningJob:
        with self._lock:
            job = self._jobs.get(name or "")
        if job is None:
            raise AwsError("ResourceNotFound", f"Amazon SageMaker can't find a tuning job with name {name}")
        return job

    def describe(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.job(body.get("HyperParameterTuningJobName")).describe()

    def list_training_jobs(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        job = self.job(body.get("HyperParameterTuningJobName"))
        rows = [t.summary() for t in list(job.trials)]
        if body.get("StatusEquals"):
            rows = [r for r in rows if r["TrainingJobStatus"] == body["StatusEquals"]]
        sort_by, descending = body.get("SortBy", "CreationTime"), body.get("SortOrder", "Descending") == "Descending"
        if sort_by == "FinalObjectiveMetricValue":
            scored = [r for r in rows if "FinalHyperParameterTuningJobObjectiveMetric" in r]
            scored.sort(key=lambda r: r["FinalHyperParameterTuningJobObjectiveMetric"]["Value"], reverse=descending)
            rows = scored + [r for r in rows if "FinalHyperParameterTuningJobObjectiveMetric" not in r]
        else:
            key = (
                "TrainingJobName"
                if sort_by == "Name"
                else sort_by
                if sort_by in ("CreationTime", "Status")
                else "CreationTime"
            )
            key = "TrainingJobStatus" if key == "Status" else key
            rows.sort(key=lambda r: r[key], reverse=descending)
        start = int(body.get("NextToken") or 0)
        size = int(body.get("MaxResults") or 100)
        out: dict[str, Any] = {"TrainingJobSummaries": rows[start : start + size]}
        if start + size < len(rows):
            out["NextToken"] = str(start + size)
        return out

    def stop(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        job = self.job(body.get("HyperParameterTuningJobName"))
        with self._lock:
            if job.status != "InProgress":
                raise validation(f"The hyperparameter tuning job {job.name} is {job.status}; it cannot be stopped")
            job.status, job.modified = "Stopping", now()
        job.stop.set()
        return {}

    def describe_training_job(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            training = self._training.get(name)
        return training.describe() if training else None

    def stop_all(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop.set()

    # --- execution -------------------------------------------------------------------------

    def _read_channels(self, job: TuningJob):
        s3 = self.clients("s3", job.region)
        channels = {}
        for channel in job.request["TrainingJobDefinition"]["InputDataConfig"]:
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
            keys = list_keys(s3, uri)
            if not keys:
                raise ChannelError(f'No S3 objects found under S3 URL "{uri}" given in input data source.')
            bucket, _ = split_s3_uri(uri)
            data = b"".join(s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys)
            channels[channel["ChannelName"]] = read_channel(data, channel["ChannelName"])
        return channels

    def _finish(self, job: TuningJob, status: str, failure: str | None = None) -> None:
        with self._lock:
            job.status, job.failure = status, failure
            job.ended = job.modified = now()

    def _run(self, job: TuningJob) -> None:
        try:
            self._search(job)
        except Exception as e:  # noqa: BLE001 (the job's failure, not the server's)
            log.exception("tuning job %s", job.name)
            self._finish(job, "Failed", f"{type(e).__name__}: {e}")

    def _search(self, job: TuningJob) -> None:
        import optuna

        fault = self.faults.take_job("tuning_fails")
        try:
            channels = self._read_channels(job)
        except (ChannelError, ValueError) as e:
            self._finish(job, "Failed", f"ClientError: {e}")
            return
        config, definition = job.config, job.request["TrainingJobDefinition"]
        limits = config["ResourceLimits"]
        max_jobs, parallel = int(limits["MaxNumberOfTrainingJobs"]), int(limits["MaxParallelTrainingJobs"])
        space = _distributions(config.get("ParameterRanges") or {})
        seed = int(hashlib.sha256(job.name.encode()).hexdigest()[:8], 16)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = (
            optuna.samplers.RandomSampler(seed=seed)
            if config["Strategy"] == "Random"
            else optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(parallel, min(10, max_jobs // 3)))
        )
        direction = "minimize" if job.objective["Type"] == "Minimize" else "maximize"
        study = optuna.create_study(direction=direction, sampler=sampler)
        static = {str(k): str(v) for k, v in (definition.get("StaticHyperParameters") or {}).items()}
        output = definition["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        pool = ProcessPoolExecutor(
            max_workers=max(1, min(parallel, os.cpu_count() or 1)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
            initargs=(channels,),
        )
        pending: dict[Future, tuple[Any, TrainingJob]] = {}
        asked = 0
        try:
            while (asked < max_jobs or pending) and not job.stop.is_set():
                while asked < max_jobs and len(pending) < parallel and not job.stop.is_set():
                    trial = study.ask({n: d for n, (d, _) in space.items()})
                    tuned = {n: str(1 - v if space[n][1] else v) for n, v in trial.params.items()}
                    asked += 1
                    name = f"{job.name}-{asked:03d}-{uuid.uuid4().hex[:8]}"
                    training = TrainingJob(name, job.region, job.name, {**static, **tuned}, tuned, definition,
                                           job.objective, started=now(), secondary="Training")  # fmt: skip
                    with self._lock:
                        job.trials.append(training)
                        self._training[name] = training
                    if fault is not None:
                        future: Future = Future()
                        future.set_exception(RuntimeError(fault.reason))
                    else:
                        trial_seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % (2**31)
                        future = pool.submit(train_job, training.hyperparameters, trial_seed)
                    pending[future] = (trial, training)
                done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    trial, training = pending.pop(future)
                    self._record(job, study, trial, training, future, output)
        finally:
            if job.stop.is_set():
                for future, (_, training) in pending.items():
                    future.cancel()
                    self._end_training(training, "Stopped", None)
                # Stop means stop now: the running training jobs' processes go too.
                for process in list(getattr(pool, "_processes", {}).values()):
                    process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
        if job.stop.is_set():
            self._finish(job, "Stopped")
            return
        if job.best() is None:
            reasons = sorted({t.failure or "no objective value" for t in job.trials})
            self._finish(job, "Failed", f"All training jobs failed. Reasons: {'; '.join(reasons[:3])}")
            return
        self._finish(job, "Completed")

    def _end_training(self, training: TrainingJob, status: str, failure: str | None) -> None:
        with self._lock:
            training.status, training.failure, training.ended = status, failure, now()
            training.secondary = {"Completed": "Completed", "Failed": "Failed", "Stopped": "Stopped"}[status]

    def _record(self, job: TuningJob, study, trial, training: TrainingJob, future: Future, output: str) -> None:
        import optuna

        try:
            result = future.result()
        except Exception as e:  # noqa: BLE001 (a failed training job is a result of the search)
            self._end_training(training, "Failed", f"AlgorithmError: {type(e).__name__}: {e}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        uri = f"{output}/{training.name}/output/model.tar.gz"
        bucket, key = split_s3_uri(uri)
        self.clients("s3", job.region).put_object(Bucket=bucket, Key=key, Body=result["artifact"])
        with self._lock:
            training.metrics, training.artifact_uri = result["metrics"], uri
        self._end_training(training, "Completed", None)
        value = training.objective_value()
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)


# --- models served: transform jobs and endpoints ----------------------------------------------


class _FixedModel:
    """What core.endpoint's server asks for the model to serve: always this one."""

    def __init__(self, name: str, model):
        from ml_demo_dagster.core.registry import Champion

        self._champion = Champion(version=name, model=model, record={}, promoted_at=time.time())

    def current(self):
        return self._champion, None


class ModelServer:
    """A model from its SageMaker model's artifact, behind core.endpoint on a loopback port."""

    def __init__(self, clients: InternalClients, region: str, model_name: str):
        from ml_demo_dagster.core.endpoint import EndpointServer

        sagemaker = self.sagemaker = clients("sagemaker", region)
        try:
            description = sagemaker.describe_model(ModelName=model_name)
        except sagemaker.exceptions.ClientError as e:
            raise ValueError(f"Could not find model {model_name!r}: {e.response['Error']['Message']}") from None
        container = description.get("PrimaryContainer") or (description.get("Containers") or [{}])[0]
        self.image = container.get("Image", "")
        url = container.get("ModelDataUrl")
        if not url:
            raise ValueError(f"model {model_name} has no ModelDataUrl")
        bucket, key = split_s3_uri(url)
        s3 = clients("s3", region)
        try:
            artifact = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.ClientError as e:
            raise ValueError(f"cannot read the model artifact {url}: {e.response['Error']['Message']}") from None
        self.server = EndpointServer(("127.0.0.1", 0), _FixedModel(model_name, unpack_artifact(artifact))).start()
        self.host, self.port = self.server.server_address[:2]

    def ping(self) -> bool:
        status, _, _ = self.call("GET", "/ping", b"", {})
        return status == 200

    def call(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type", "application/json"), response.read()
        finally:
            connection.close()

    def stop(self) -> None:
        self.server.stop()


@dataclass
class TransformJob:
    name: str
    region: str
    request: dict[str, Any]
    status: str = "InProgress"
    failure: str | None = None
    created: Any = field(default_factory=now)
    started: Any = None
    ended: Any = None
    stop: threading.Event = field(default_factory=threading.Event)

    def describe(self) -> dict[str, Any]:
        r = self.request
        out = {
            "TransformJobName": self.name,
            "TransformJobArn": arn(self.region, "transform-job", self.name),
            "TransformJobStatus": self.status,
            "ModelName": r["ModelName"],
            "TransformInput": r["TransformInput"],
            "TransformOutput": r["TransformOutput"],
            "TransformResources": r["TransformResources"],
            "CreationTime": self.created,
        }
        for key in ("BatchStrategy", "MaxPayloadInMB", "MaxConcurrentTransforms", "Environment", "DataProcessing"):
            if key in r:
                out[key] = r[key]
        if self.started:
            out["TransformStartTime"] = self.started
        if self.ended:
            out["TransformEndTime"] = self.ended
        if self.failure:
            out["FailureReason"] = self.failure
        return out


def _mini_batches(records: list[bytes], max_bytes: int, multi: bool) -> list[list[bytes]]:
    if not multi:
        return [[r] for r in records]
    batches, current, size = [], [], 0
    for record in records:
        if current and size + len(record) + 1 > max_bytes:
            batches.append(current)
            current, size = [], 0
        current.append(record)
        size += len(record) + 1
    if current:
        batches.append(current)
    return batches


class Transforms:
    """Batch transform jobs."""

    def __init__(self, clients: InternalClients):
        self.clients = clients
        self._lock = threading.Lock()
        self._jobs: dict[str, TransformJob] = {}

    def create(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["TransformJobName"]
        source = body["TransformInput"]["DataSource"]["S3DataSource"]
        if source.get("S3DataType", "S3Prefix") != "S3Prefix":
            raise validation("the sandbox reads S3Prefix transform input only")
        if body["TransformInput"].get("CompressionType", "None") != "None":
            raise validation("the sandbox reads uncompressed transform input only")
        sagemaker = self.clients("sagemaker", region)
        try:
            sagemaker.describe_model(ModelName=body["ModelName"])
        except sagemaker.exceptions.ClientError:
            raise validation(f'Could not find model "{arn(region, "model", body["ModelName"])}".') from None
        with self._lock:
            if name in self._jobs:
                raise AwsError("ResourceInUse", f"Job name {name} must be unique within an AWS account and region")
            job = TransformJob(name, region, body)
            self._jobs[name] = job
        threading.Thread(target=self._run, args=(job,), name=f"transform-{name}", daemon=True).start()
        return {"TransformJobArn": arn(region, "transform-job", name)}

    def _job(self, name: str | None) -> TransformJob:
        with self._lock:
            job = self._jobs.get(name or "")
        if job is None:
            raise validation(f"Could not find job to update with name {name}")
        return job

    def describe(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._job(body.get("TransformJobName")).describe()

    def stop(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        job = self._job(body.get("TransformJobName"))
        if job.status == "InProgress":
            job.status = "Stopping"
            job.stop.set()
        return {}

    def _end(self, job: TransformJob, status: str, failure: str | None = None) -> None:
        with self._lock:
            job.status, job.failure, job.ended = status, failure, now()

    def _run(self, job: TransformJob) -> None:
        server = None
        try:
            job.started = now()
            try:
                server = ModelServer(self.clients, job.region, job.request["ModelName"])
            except ValueError as e:
                self._end(job, "Failed", f"ClientError: {e}")
                return
            failure = self._transform(job, server)
            if job.stop.is_set():
                self._end(job, "Stopped")
            elif failure:
                self._end(job, "Failed", failure)
            else:
                self._end(job, "Completed")
        except Exception as e:  # noqa: BLE001
            log.exception("transform job %s", job.name)
            self._end(job, "Failed", f"InternalServerError: {type(e).__name__}: {e}")
        finally:
            if server is not None:
                server.stop()

    def _transform(self, job: TransformJob, server: ModelServer) -> str | None:
        r = job.request
        s3 = self.clients("s3", job.region)
        source_uri = r["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        content_type = r["TransformInput"].get("ContentType", "text/csv")
        split = r["TransformInput"].get("SplitType", "None")
        accept = r["TransformOutput"].get("Accept", "application/json")
        joiner = b"\n" if r["TransformOutput"].get("AssembleWith", "None") == "Line" else b""
        max_bytes = int(r.get("MaxPayloadInMB", 6)) * 1024 * 1024
        keys = list_keys(s3, source_uri)
        if not keys:
            return f'ClientError: No S3 objects found under S3 URL "{source_uri}"'
        in_bucket, prefix = split_s3_uri(source_uri)
        out_bucket, out_prefix = split_s3_uri(r["TransformOutput"]["S3OutputPath"].rstrip("/") + "/")
        for key in keys:
            data = s3.get_object(Bucket=in_bucket, Key=key)["Body"].read()
            records = [line for line in data.split(b"\n") if line.strip()] if split == "Line" else [data]
            outputs: list[bytes] = []
            for batch in _mini_batches(records, max_bytes, r.get("BatchStrategy", "MultiRecord") == "MultiRecord"):
                if job.stop.is_set():
                    return None
                status, _, body = server.call("POST", "/invocations", b"\n".join(batch),
                                              {"Content-Type": content_type, "Accept": accept})  # fmt: skip
                if status != 200:
                    return f"ClientError: the model container answered {status} for {key}: {body.decode(errors='replace')[:500]}"
                if accept == "application/jsonlines":
                    predictions = json.loads(body)["predictions"]
                    outputs += [json.dumps(p).encode() for p in predictions]
                else:
                    outputs.append(body)
            name = key[len(prefix.rsplit("/", 1)[0]) + 1 :] if "/" in prefix else key
            s3.put_object(Bucket=out_bucket, Key=f"{out_prefix}{name.rsplit('/', 1)[-1]}.out",
                          Body=joiner.join(outputs) + (joiner if outputs else b""))  # fmt: skip
        return None


@dataclass
class Endpoint:
    name: str
    region: str
    config_name: str
    status: str = "Creating"
    failure: str | None = None
    created: Any = field(default_factory=now)
    modified: Any = field(default_factory=now)
    server: ModelServer | None = None
    variants: list[dict[str, Any]] = field(default_factory=list)
    target_config: str | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "EndpointName": self.name,
            "EndpointArn": arn(self.region, "endpoint", self.name),
            "EndpointConfigName": self.config_name,
            "EndpointStatus": self.status,
            "CreationTime": self.created,
            "LastModifiedTime": self.modified,
        }
        if self.variants and self.server is not None:
            out["ProductionVariants"] = [
                {"VariantName": v["VariantName"], "DeployedImages": [{"SpecifiedImage": self.server.image}],
                 "CurrentWeight": v.get("InitialVariantWeight", 1.0), "DesiredWeight": v.get("InitialVariantWeight", 1.0),
                 "CurrentInstanceCount": v.get("InitialInstanceCount", 1),
                 "DesiredInstanceCount": v.get("InitialInstanceCount", 1)}
                for v in self.variants
            ]  # fmt: skip
        if self.failure:
            out["FailureReason"] = self.failure
        return out


class Endpoints:
    """Endpoints, each serving its endpoint config's (first variant's) model."""

    def __init__(self, clients: InternalClients, faults: Faults):
        self.clients, self.faults = clients, faults
        self._lock = threading.Lock()
        self._endpoints: dict[str, Endpoint] = {}

    def _config(self, region: str, name: str) -> dict[str, Any]:
        sagemaker = self.clients("sagemaker", region)
        try:
            return sagemaker.describe_endpoint_config(EndpointConfigName=name)
        except sagemaker.exceptions.ClientError:
            raise validation(
                f'Could not find endpoint configuration "{arn(region, "endpoint-config", name)}".'
            ) from None

    def _get(self, name: str | None) -> Endpoint:
        with self._lock:
            endpoint = self._endpoints.get(name or "")
        if endpoint is None:
            raise validation(f'Could not find endpoint "{name}".')
        return endpoint

    def create(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        name, config_name = body["EndpointName"], body["EndpointConfigName"]
        config = self._config(region, config_name)
        with self._lock:
            if name in self._endpoints:
                raise validation(f'Cannot create already existing endpoint "{arn(region, "endpoint", name)}".')
            endpoint = Endpoint(name, region, config_name)
            self._endpoints[name] = endpoint
        self._start(endpoint, config, creating=True)
        return {"EndpointArn": arn(region, "endpoint", name)}

    def update(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._get(body["EndpointName"])
        config = self._config(region, body["EndpointConfigName"])
        with self._lock:
            if endpoint.status != "InService":
                raise validation(f'Cannot update in-progress endpoint "{arn(region, "endpoint", endpoint.name)}".')
            endpoint.status, endpoint.modified, endpoint.failure = "Updating", now(), None
            endpoint.target_config = body["EndpointConfigName"]
        self._start(endpoint, config, creating=False)
        return {"EndpointArn": arn(region, "endpoint", endpoint.name)}

    def describe(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._get(body.get("EndpointName")).describe()

    def list(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            endpoints = [e for e in self._endpoints.values() if e.region == region]
        return {"Endpoints": [
            {k: e.describe()[k] for k in ("EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime",
                                          "EndpointStatus")} for e in endpoints]}  # fmt: skip

    def delete(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._get(body.get("EndpointName"))
        with self._lock:
            self._endpoints.pop(endpoint.name, None)
            server, endpoint.server, endpoint.status = endpoint.server, None, "Deleting"
        if server is not None:
            server.stop()
        return {}

    def stop_all(self) -> None:
        with self._lock:
            servers = [e.server for e in self._endpoints.values() if e.server is not None]
            self._endpoints.clear()
        for server in servers:
            server.stop()

    def _start(self, endpoint: Endpoint, config: dict[str, Any], creating: bool) -> None:
        fault = self.faults.take_job(("endpoint_stuck", "endpoint_fails"))
        if fault is not None and fault.job == "endpoint_stuck":
            return  # stays Creating / Updating
        threading.Thread(
            target=self._deploy, args=(endpoint, config, creating, fault.reason if fault else None),
            name=f"endpoint-{endpoint.name}", daemon=True,
        ).start()  # fmt: skip

    def _deploy(self, endpoint: Endpoint, config: dict[str, Any], creating: bool, failure: str | None) -> None:
        server = None
        try:
            if failure is None:
                variants = config.get("ProductionVariants") or []
                if not variants:
                    raise ValueError("the endpoint config has no production variant")
                server = ModelServer(self.clients, endpoint.region, variants[0]["ModelName"])
                if not server.ping():
                    raise ValueError("the model container did not pass the /ping health check")
        except Exception as e:  # noqa: BLE001 (the deployment's failure)
            failure = f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)
        with self._lock:
            gone = self._endpoints.get(endpoint.name) is not endpoint
            if failure is None and not gone:
                old, endpoint.server = endpoint.server, server
                endpoint.variants = config.get("ProductionVariants") or []
                endpoint.config_name = config["EndpointConfigName"]
                endpoint.status, endpoint.failure = "InService", None
            elif not gone:
                old = None
                # A failed create is Failed; a failed update rolls back to the model that served.
                endpoint.status = "Failed" if creating or endpoint.server is None else "InService"
                endpoint.failure = failure
            else:
                old = server
            endpoint.modified = now()
            endpoint.target_config = None
        if old is not None:
            old.stop()
        if failure is not None and server is not None:
            server.stop()

    def invoke(self, region: str, name: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes, str]:
        with self._lock:
            endpoint = self._endpoints.get(name)
            server = endpoint.server if endpoint else None
            variant = endpoint.variants[0]["VariantName"] if endpoint and endpoint.variants else "AllTraffic"
        if endpoint is None or endpoint.region != region:
            raise validation(f"Endpoint {name} of account {ACCOUNT} not found.")
        if server is None:
            raise validation(f"Endpoint {name} is not in service (status {endpoint.status}).")
        forwarded = {"Content-Type": headers.get("content-type") or "text/csv"}
        if headers.get("accept"):
            forwarded["Accept"] = headers["accept"]
        status, content_type, answer = server.call("POST", "/invocations", body, forwarded)
        if status != 200:
            message = answer.decode(errors="replace")
            raise AwsError("ModelError", f'Received client error ({status}) from primary with message "{message}".',
                           424, {"OriginalStatusCode": status, "OriginalMessage": message})  # fmt: skip
        return status, content_type, answer, variant
