"""The project config: one file (`project.toml` beside this module) holds every name and
setting; environment variables override single values per deployment.

Everything else (streamer, feature job, Dagster definitions, CLI) asks `load_config()`
and never hard-codes a name, bucket, region or hyperparameter range. Validation happens
here, at load, and a bad value is reported in one line naming the key and what is allowed.
No Dagster or AWS imports.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
DEFAULT_CONFIG_PATH = PACKAGE_DIR / "project.toml"
DEFAULT_LOCAL_STORE = REPO_DIR / ".ml-demo" / "store"
# Terraform outputs of a deployment (`ml-demo infra apply` writes them), one file per
# project and environment; ML_DEMO_INFRA_OUTPUTS names another file ("" reads none).
DEFAULT_INFRA_OUTPUTS_DIR = REPO_DIR / ".ml-demo" / "infra"
INFRA_OUTPUTS_ENV = "ML_DEMO_INFRA_OUTPUTS"
ENV_PREFIX = "ML_DEMO__"
TICK_FEATURES = ("BID", "OFFER", "MID_OPEN", "HIGH", "LOW")


class ConfigError(ValueError):
    """A config value is missing or not allowed. The message is one line for the user."""


SPOOL_PLACEHOLDERS = ("source", "store")


def check_spool_template(template: str) -> None:
    """ValueError unless `template` uses only the {source} and {store} placeholders."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ValueError(f"not a valid path template: {e}") from None
    unknown = sorted({f for f in fields if f not in SPOOL_PLACEHOLDERS})
    if unknown:
        raise ValueError(f"unknown placeholder {{{unknown[0]}}}; allowed: {{source}}, {{store}}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectSection(_Section):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
    environment: str = Field(pattern=r"^[a-z][a-z0-9-]{0,15}$")
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    target: Literal["local", "aws"] = "local"


class StoreSection(_Section):
    url: str = ""
    bucket: str = Field(default="", pattern=r"^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class MarketSection(_Section):
    epic: str = Field(min_length=1)
    point_value: float = Field(gt=0)
    spread: float = Field(ge=0)


class DealerSection(_Section):
    stop: float = Field(gt=0)
    limit: float = Field(gt=0)


class ExportSection(_Section):
    batch_size: int = Field(ge=1, le=10_000_000)
    price_lead_seconds: int = Field(ge=0, le=86_400)


class StreamSection(_Section):
    """The streamer's crash safety (streamer/spool.py)."""

    # Where a stream's spool lives: a path template with {source} (sim, replay, ig) and
    # {store} (12 hex digits of the store URL's SHA-256), so each source writing to each store
    # has its own. Relative paths are under the repository; `ml-demo stream --spool` overrides.
    spool: str = Field(min_length=1)
    checkpoint_seconds: float = Field(gt=0, le=3600)

    @field_validator("spool")
    @classmethod
    def _known_placeholders(cls, v: str) -> str:
        check_spool_template(v)
        return v


class SimSection(_Section):
    start_price: float = Field(gt=0)
    tick_interval_seconds: float = Field(gt=0, le=3600)
    volatility: float = Field(gt=0)
    momentum: float = Field(default=0.0, ge=0, le=10)
    momentum_seconds: float = Field(default=300.0, gt=0, le=86_400)


class IngestSection(_Section):
    # A batch file whose partner has not landed this long after the watcher first saw it is
    # quarantined (the exporter writes both within seconds; allow for slow uploads).
    lone_file_timeout_seconds: int = Field(default=600, ge=0, le=7 * 86_400)


class FeaturesSection(_Section):
    history_seconds: int = Field(ge=1, le=86_400)


class TrainingSection(_Section):
    window_batches: int = Field(ge=1, le=1000)
    split: tuple[float, float, float]
    validation_chunks: int = Field(default=4, ge=1, le=50)

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(x <= 0 for x in v) or abs(sum(v) - 1.0) > 1e-9:
            raise ValueError("must be three positive fractions (train, validation, test) summing to 1")
        return v


class ParameterRange(_Section):
    min: float
    max: float
    scaling: Literal["Auto", "Linear", "Logarithmic", "ReverseLogarithmic"] = "Auto"
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> ParameterRange:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        if self.scaling == "Logarithmic" and self.min <= 0:
            raise ValueError("Logarithmic scaling needs min > 0")
        return self


class StaticHyperparameters(_Section):
    predictor_type: Literal["binary_classifier"] = "binary_classifier"
    binary_classifier_model_selection_criteria: Literal["precision_at_target_recall", "loss_function"] = (
        "precision_at_target_recall"
    )
    target_recall: float = Field(gt=0, lt=1)
    epochs: int = Field(ge=1, le=1000)
    normalize_data: bool = True


class TuningSection(_Section):
    strategy: Literal["Bayesian", "Random"] = "Bayesian"
    max_jobs: int = Field(ge=1, le=500)
    max_parallel_jobs: int = Field(ge=1, le=100)
    objective_metric: Literal["validation:objective_loss", "validation:roc_auc_score", "validation:precision"]
    objective_type: Literal["Maximize", "Minimize"]
    ranges: dict[str, ParameterRange]
    static: StaticHyperparameters

    @field_validator("ranges")
    @classmethod
    def _known_hyperparameters(cls, v: dict[str, ParameterRange]) -> dict[str, ParameterRange]:
        allowed = {"l1", "wd", "learning_rate", "mini_batch_size", "beta_1", "beta_2", "momentum"}
        unknown = sorted(set(v) - allowed)
        if unknown:
            raise ValueError(f"unknown hyperparameter {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
        if not v:
            raise ValueError("at least one range is needed")
        return v

    @model_validator(mode="after")
    def _objective_direction(self) -> TuningSection:
        wanted = "Minimize" if self.objective_metric == "validation:objective_loss" else "Maximize"
        if self.objective_type != wanted:
            raise ValueError(f"objective_type must be {wanted} for {self.objective_metric} (got {self.objective_type})")
        return self

    @model_validator(mode="after")
    def _parallel_within_jobs(self) -> TuningSection:
        if self.max_parallel_jobs > self.max_jobs:
            raise ValueError(f"max_parallel_jobs ({self.max_parallel_jobs}) exceeds max_jobs ({self.max_jobs})")
        return self


class EvaluationSection(_Section):
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    bootstrap_samples: int = Field(default=1000, ge=100, le=100_000)
    min_blocks: int = Field(default=8, ge=2, le=10_000)


class GateSection(_Section):
    metric: Literal["roc_auc", "precision"] = "roc_auc"
    confidence: float = Field(default=0.95, gt=0.5, lt=1)


class ServingSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)


class DagsterSection(_Section):
    sensor_interval_seconds: int = Field(ge=1, le=3600)
    # Retries of a step that touches storage or Spark (data errors are never retried):
    # up to `step_retries` more attempts, waiting retry_delay_seconds, then twice that, ...
    step_retries: int = Field(default=3, ge=0, le=20)
    retry_delay_seconds: float = Field(default=2.0, ge=0, le=600)


_ROLE_ARN = r"^$|^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$"
_AWS_NAME = r"^$|^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"


class AwsSection(_Section):
    """What the aws target needs besides the bucket (store.bucket). Flat keys named like the
    Terraform outputs that will fill them (glue_role_arn, sagemaker_role_arn, ...)."""

    glue_role_arn: str = Field(default="", pattern=_ROLE_ARN, max_length=2048)
    sagemaker_role_arn: str = Field(default="", pattern=_ROLE_ARN, max_length=2048)
    glue_job_name: str = Field(default="", pattern=r"^$|^[A-Za-z0-9_.-]+$", max_length=255)
    glue_version: Literal["5.0"] = "5.0"
    glue_worker_type: Literal["G.1X", "G.2X", "G.4X", "G.8X"] = "G.1X"
    glue_number_of_workers: int = Field(default=2, ge=2, le=1000)
    code_prefix: str = Field(default="code", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,200}$")
    training_instance_type: str = Field(default="ml.m5.large", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    training_instance_count: int = Field(default=1, ge=1, le=100)
    training_volume_size_gb: int = Field(default=10, ge=1, le=16384)
    transform_instance_type: str = Field(default="ml.m5.large", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    transform_instance_count: int = Field(default=1, ge=1, le=100)
    endpoint_instance_type: str = Field(default="ml.m5.large", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    endpoint_instance_count: int = Field(default=1, ge=1, le=100)
    endpoint_name: str = Field(default="", pattern=_AWS_NAME)
    glue_timeout_minutes: int = Field(default=30, ge=1, le=2880)
    training_max_runtime_seconds: int = Field(default=3600, ge=60, le=432_000)
    # Minutes, fractions allowed (the sandbox's tests wait seconds); Glue's is whole minutes (its API's unit).
    tuning_timeout_minutes: float = Field(default=180, gt=0, le=43_200)
    transform_timeout_minutes: float = Field(default=60, gt=0, le=2880)
    endpoint_timeout_minutes: float = Field(default=30, gt=0, le=1440)
    poll_interval_seconds: float = Field(default=15.0, gt=0, le=600)
    max_attempts: int = Field(default=8, ge=1, le=20)


class IGSection(_Section):
    """The live IG source (`ml-demo stream --source ig`): REST login, then Lightstreamer."""

    base_url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$")
    secret_name: str = Field(default="", pattern=r"^$|^[A-Za-z0-9/_+=.@:-]{1,2048}$")
    max_failed_attempts: int = Field(ge=1, le=1000)
    retry_delay_seconds: float = Field(gt=0, le=600)
    stalled_timeout_seconds: float = Field(gt=0, le=600)
    reconnect_timeout_seconds: float = Field(gt=0, le=600)
    session_recovery_timeout_seconds: float = Field(ge=0, le=3600)
    request_timeout_seconds: float = Field(gt=0, le=600)


class InfraSection(_Section):
    """`ml-demo infra`: the Terraform layers' settings that are not names (names derive below)."""

    state_bucket: str = Field(default="", pattern=r"^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    vpc_cidr: str = Field(default="10.42.0.0/16", pattern=r"^\d{1,3}(\.\d{1,3}){3}/(1[6-9]|2[0-4])$")
    log_retention_days: Literal[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                                2557, 2922, 3288, 3653] = 365  # fmt: skip
    noncurrent_version_days: int = Field(default=30, ge=1, le=3650)
    streamer_image_tag: str = Field(default="", pattern=r"^$|^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    streamer_cpu: Literal[256, 512, 1024, 2048, 4096] = 256
    streamer_memory: int = Field(default=512, ge=512, le=30720)
    streamer_count: int = Field(default=1, ge=0, le=1)
    ecr_keep_images: int = Field(default=10, ge=1, le=1000)
    lock_wait_seconds: int = Field(default=60, ge=1, le=3600)


class ProjectConfig(_Section):
    project: ProjectSection
    store: StoreSection
    market: MarketSection
    dealer: DealerSection
    export: ExportSection
    stream: StreamSection
    sim: SimSection
    ingest: IngestSection = IngestSection()
    features: FeaturesSection
    training: TrainingSection
    tuning: TuningSection
    evaluation: EvaluationSection = EvaluationSection()
    gate: GateSection = GateSection()
    serving: ServingSection
    dagster: DagsterSection
    aws: AwsSection = AwsSection()
    ig: IGSection
    infra: InfraSection = InfraSection()

    # Derived names: computed here so that no other module builds them.
    @property
    def feature_dim(self) -> int:
        return len(TICK_FEATURES) + self.features.history_seconds

    @property
    def resource_prefix(self) -> str:
        return f"{self.project.name}-{self.project.environment}"

    @property
    def bucket_name(self) -> str:
        return self.store.bucket or f"{self.resource_prefix}-data"

    @property
    def store_url(self) -> str:
        """Where the object store is: config value, else S3 bucket (aws) or local folder."""
        if self.store.url:
            return self.store.url
        if self.project.target == "aws":
            return f"s3://{self.bucket_name}"
        return str(DEFAULT_LOCAL_STORE)

    @property
    def glue_job_name(self) -> str:
        return self.aws.glue_job_name or f"{self.resource_prefix}-features"

    @property
    def glue_steps_job_name(self) -> str:
        """The Glue job that runs the in-process assets' steps for the state machine."""
        return f"{self.resource_prefix}-steps"

    @property
    def endpoint_name(self) -> str:
        return self.aws.endpoint_name or f"{self.resource_prefix}-endpoint"

    @property
    def state_bucket_name(self) -> str:
        """The bucket of the Terraform state (infra.state_bucket, else "<prefix>-tfstate")."""
        return self.infra.state_bucket or f"{self.resource_prefix}-tfstate"

    def aws_name(self, kind: str, key: str, limit: int = 63) -> str:
        """A SageMaker resource name `<prefix>-<kind>-<key>` of at most `limit` characters
        (tuning jobs: 32); a longer one keeps its start and ends in a hash of the whole."""
        name = f"{self.resource_prefix}-{kind}-{key}"
        if len(name) <= limit:
            return name
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        return f"{name[: limit - len(digest) - 1].rstrip('-')}-{digest}"

    def require_aws(self) -> None:
        """ConfigError (one line, what to set) unless the aws target has what it needs."""
        for key, what, service in (
            ("glue_role_arn", "the role the Glue feature job runs as", "glue.amazonaws.com"),
            ("sagemaker_role_arn", "the role SageMaker training, transform jobs and endpoints use",
             "sagemaker.amazonaws.com"),
        ):  # fmt: skip
            if not getattr(self.aws, key):
                raise ConfigError(
                    f"aws.{key} is empty: set it to {what} (an IAM role that trusts {service}; Terraform "
                    f"output {key}) in [aws] of the config file or with ML_DEMO__AWS__{key.upper()}"
                )

    def static_hyperparameters(self) -> dict[str, Any]:
        """linear-learner's static hyperparameters, feature_dim included."""
        return {**self.tuning.static.model_dump(), "feature_dim": self.feature_dim}


def _set_path(tree: dict[str, Any], path: list[str], raw: str) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{ENV_PREFIX}{'__'.join(path).upper()}: {part} is not a section")
    # Values from the environment are TOML literals when they parse as such, else strings.
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    node[path[-1]] = value


def _apply_env(tree: dict[str, Any], environ: dict[str, str]) -> list[str]:
    applied = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if len(path) < 2:
            raise ConfigError(f"{name}: expected {ENV_PREFIX}<SECTION>__<KEY>")
        _set_path(tree, path, raw)
        applied.append(".".join(path))
    return applied


def _one_line(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    given = first.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    extra = f"; and {len(error.errors()) - 1} more" if len(error.errors()) > 1 else ""
    return f"config {source}: {key}: {message}{shown}{extra}"


def infra_outputs_path(project_name: str, environment: str, environ: dict[str, str] | None = None) -> Path | None:
    """Where the Terraform outputs of a deployment are kept (None: ML_DEMO_INFRA_OUTPUTS="")."""
    environ = os.environ if environ is None else environ
    if INFRA_OUTPUTS_ENV in environ:
        return Path(environ[INFRA_OUTPUTS_ENV]) if environ[INFRA_OUTPUTS_ENV] else None
    return DEFAULT_INFRA_OUTPUTS_DIR / f"{project_name}-{environment}.outputs.json"


def _effective(tree: dict[str, Any], environ: dict[str, str], section: str, key: str) -> Any:
    """A value as it will be after the environment overrides (before validation)."""
    probe = {section: dict(tree.get(section) or {})}
    _apply_env(probe, {k: v for k, v in environ.items() if k == f"{ENV_PREFIX}{section}__{key}".upper()})
    return probe[section].get(key)


def _apply_infra_outputs(tree: dict[str, Any], environ: dict[str, str]) -> Path | None:
    """Terraform outputs named like a key of [aws] override that key (the environment still wins)."""
    name, environment = (
        _effective(tree, environ, "project", "name"),
        _effective(tree, environ, "project", "environment"),
    )
    if not isinstance(name, str) or not isinstance(environment, str):
        return None  # validation reports the missing project name or environment
    path = infra_outputs_path(name, environment, environ)
    if path is None or not path.is_file():
        return None
    try:
        outputs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"terraform outputs {path}: not readable JSON ({e}); run `ml-demo infra apply` again"
        ) from None
    if not isinstance(outputs, dict):
        raise ConfigError(f"terraform outputs {path}: expected an object of output names to values")
    aws = tree.setdefault("aws", {})
    for key, value in outputs.items():
        if key in AwsSection.model_fields and isinstance(value, str | int | float | bool):
            aws[key] = value
    return path


def load_config(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> ProjectConfig:
    """Read, override from Terraform's outputs and then the environment, and validate the project config."""
    environ = dict(os.environ if environ is None else environ)
    source = Path(path or environ.get("ML_DEMO_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        tree = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config {source}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {source}: not valid TOML: {e}") from None
    outputs = _apply_infra_outputs(tree, environ)
    if outputs is not None:
        source = Path(f"{source} (+ {outputs})")
    _apply_env(tree, environ)
    try:
        return ProjectConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_one_line(e, str(source))) from None


def default_config() -> ProjectConfig:
    """The config from the default place and the process environment (read each call: cheap,
    and an override set in the environment later is seen)."""
    return load_config()
