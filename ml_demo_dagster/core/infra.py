"""Terraform from the project config: the variables and backend config of each layer, and
running `terraform` on them (DESIGN §4.7).

infra/ holds three layers, applied in this order:
  bootstrap  the bucket (and key) of the remote state; local state under infra/bootstrap/state/
  base       data bucket, KMS key, VPC, ECR repository, ECS cluster, the IG secret (empty)
  service    IAM roles, Glue jobs (features, steps), streamer task and service, state machine,
             lock table, trigger

`render` writes, without calling AWS, everything `terraform plan` needs into build/infra/:
`<layer>.tfvars.json`, `<layer>.backend.hcl`, the exported state machine and the Glue code.
Every name comes from the config (names derive from project.name and .environment here
and in config.py); nothing here knows an account, an ARN or a bucket of its own.

Running terraform: output streams to the terminal as terraform writes it (the child
inherits stdout, stderr and stdin, so `apply` can ask for approval); the first command
that fails stops the sequence and its exit code is returned. No Dagster imports; boto3 only
to look for credentials (botocore's chain, no call to AWS).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ml_demo_dagster.config import REPO_DIR, ProjectConfig, infra_outputs_path

LAYERS = ("bootstrap", "base", "service")
ACTIONS = ("render", "init", "plan", "apply", "destroy")
# What `destroy` takes down by default: the state bucket stays (it holds the others' history,
# and Terraform refuses to destroy it: prevent_destroy).
DESTROY_LAYERS = ("service", "base")
# Outputs of these layers are written where the config loader reads them back.
OUTPUT_LAYERS = ("base", "service")
STREAMER_COMMAND = ("ml-demo", "stream", "--source", "ig")
STREAMER_DATA_DIR = "/data"  # the task's writable volume (the root filesystem is read-only)


class InfraError(RuntimeError):
    """Something stops `ml-demo infra` before terraform runs; the message is one line."""


@dataclass(frozen=True)
class InfraPaths:
    """Where the Terraform sources are and where render and state files go."""

    infra: Path = REPO_DIR / "infra"
    build: Path = REPO_DIR / "build" / "infra"

    def layer_dir(self, layer: str) -> Path:
        return self.infra / layer

    def tfvars(self, layer: str) -> Path:
        return self.build / f"{layer}.tfvars.json"

    def backend(self, layer: str) -> Path:
        return self.build / f"{layer}.backend.hcl"

    def data_dir(self, layer: str) -> Path:
        """TF_DATA_DIR: providers and backend settings of a layer, kept out of the sources."""
        return self.build / "terraform" / layer

    @property
    def definition(self) -> Path:
        return self.build / "state_machine.json"

    @property
    def code_dir(self) -> Path:
        return self.build / "code"

    def bootstrap_state(self, config: ProjectConfig) -> Path:
        return self.infra / "bootstrap" / "state" / f"{config.resource_prefix}.tfstate"


# --- names -------------------------------------------------------------------------------


def resource_names(config: ProjectConfig) -> dict[str, str]:
    """Every name the Terraform layers give, derived from the config in this one place."""
    prefix = config.resource_prefix
    ig = getattr(config, "ig", None)  # the [ig] section, where this build has it
    return {
        "name_prefix": prefix,
        "bucket": config.bucket_name,
        "access_log_bucket": _bucket_suffixed(config.bucket_name, "-logs"),
        "state_bucket": config.state_bucket_name,
        "ecr_repository": f"{prefix}-streamer",
        "ecs_cluster": prefix,
        "ig_secret": (ig.secret_name if ig is not None and ig.secret_name else f"{prefix}/ig"),
        "glue_job": config.glue_job_name,
        "endpoint": config.endpoint_name,
        "state_machine": f"{prefix}-pipeline",
        "lock_table": f"{prefix}-runs",
    }


def _bucket_suffixed(bucket: str, suffix: str) -> str:
    if len(bucket) + len(suffix) > 63:
        raise InfraError(f"bucket name {bucket!r} is too long to derive {bucket + suffix!r} (63 characters at most)")
    return bucket + suffix


def tags(config: ProjectConfig) -> dict[str, str]:
    return {"project": config.project.name, "environment": config.project.environment, "managed-by": "terraform"}


def streamer_image_tag(config: ProjectConfig) -> str:
    if config.infra.streamer_image_tag:
        return config.infra.streamer_image_tag
    try:
        return metadata.version("ml-demo")
    except metadata.PackageNotFoundError:
        raise InfraError("infra.streamer_image_tag is empty and the ml-demo package version is unknown") from None


def state_key(config: ProjectConfig, layer: str) -> str:
    return f"{config.project.name}/{config.project.environment}/{layer}.tfstate"


# --- variables and backends ----------------------------------------------------------------


@dataclass(frozen=True)
class CodeArtifact:
    """A file uploaded to the data bucket for the Glue jobs."""

    key: str
    path: Path


@dataclass(frozen=True)
class Rendered:
    """What `render` produced: the files each layer's plan reads."""

    tfvars: dict[str, Path]
    backends: dict[str, Path]
    definition: Path
    code: list[CodeArtifact] = field(default_factory=list)


def bootstrap_vars(config: ProjectConfig) -> dict[str, Any]:
    names = resource_names(config)
    return {
        "region": config.project.region,
        "name_prefix": names["name_prefix"],
        "state_bucket_name": names["state_bucket"],
        "noncurrent_state_days": config.infra.noncurrent_version_days,
        "tags": tags(config),
    }


def base_vars(config: ProjectConfig) -> dict[str, Any]:
    names = resource_names(config)
    return {
        "region": config.project.region,
        "name_prefix": names["name_prefix"],
        "bucket_name": names["bucket"],
        "access_log_bucket_name": names["access_log_bucket"],
        "ecr_repository_name": names["ecr_repository"],
        "ecs_cluster_name": names["ecs_cluster"],
        "ig_secret_name": names["ig_secret"],
        "vpc_cidr": config.infra.vpc_cidr,
        "log_retention_days": config.infra.log_retention_days,
        "noncurrent_version_days": config.infra.noncurrent_version_days,
        "ecr_keep_images": config.infra.ecr_keep_images,
        "tags": tags(config),
    }


def streamer_environment(config: ProjectConfig) -> dict[str, str]:
    """The container's ML_DEMO__* overrides: the image carries the default config file."""
    names = resource_names(config)
    env = {
        "ML_DEMO__PROJECT__NAME": config.project.name,
        "ML_DEMO__PROJECT__ENVIRONMENT": config.project.environment,
        "ML_DEMO__PROJECT__REGION": config.project.region,
        "ML_DEMO__STORE__URL": f"s3://{names['bucket']}",
        "AWS_REGION": config.project.region,
        "TMPDIR": f"{STREAMER_DATA_DIR}/tmp",
        "HOME": STREAMER_DATA_DIR,
    }
    if "ig" in type(config).model_fields:
        env["ML_DEMO__IG__SECRET_NAME"] = names["ig_secret"]
    if "stream" in type(config).model_fields:  # the streamer's crash-safe spool, on the writable volume
        env["ML_DEMO__STREAM__SPOOL"] = f"{STREAMER_DATA_DIR}/spool/{{source}}-{{store}}.spool"
    return env


def service_vars(config: ProjectConfig, definition: Path, code: Sequence[CodeArtifact],
                 glue_jobs: dict[str, dict[str, Any]], access: dict[str, list[str]],
                 algorithm_image: str) -> dict[str, Any]:  # fmt: skip
    names = resource_names(config)
    from ml_demo_dagster.core.staging import DEALS_PREFIX, PRICE_PREFIX, STAGING_PREFIX

    return {
        "region": config.project.region,
        "name_prefix": names["name_prefix"],
        "tags": tags(config),
        "state_bucket": names["state_bucket"],
        "base_state_key": state_key(config, "base"),
        "log_retention_days": config.infra.log_retention_days,
        "code_artifacts": {a.key: str(a.path) for a in code},
        "glue_jobs": glue_jobs,
        "glue_read_prefixes": access["glue_read"],
        "glue_write_prefixes": access["glue_write"],
        "steps_read_prefixes": access["steps_read"],
        "steps_write_prefixes": access["steps_write"],
        "sagemaker_name_prefix": names["name_prefix"],
        "endpoint_name": names["endpoint"],
        "algorithm_image": algorithm_image,
        "sagemaker_read_prefixes": access["sagemaker_read"],
        "sagemaker_write_prefixes": access["sagemaker_write"],
        "state_machine_name": names["state_machine"],
        "state_machine_definition_file": str(definition),
        "state_machine_read_prefixes": access["state_machine_read"],
        "lock_table_name": names["lock_table"],
        "staging_key_prefixes": [DEALS_PREFIX, PRICE_PREFIX],
        "streamer": {
            "image_tag": streamer_image_tag(config),
            "cpu": config.infra.streamer_cpu,
            "memory": config.infra.streamer_memory,
            "desired_count": config.infra.streamer_count,
            "command": list(STREAMER_COMMAND),
            "environment": streamer_environment(config),
            "staging_prefix": STAGING_PREFIX,
        },
    }


def backend_config(config: ProjectConfig, layer: str, paths: InfraPaths) -> dict[str, Any]:
    """The backend settings of a layer: a local file for bootstrap, the state bucket for the others."""
    if layer == "bootstrap":
        return {"path": str(paths.bootstrap_state(config))}
    return {
        "bucket": config.state_bucket_name,
        "key": state_key(config, layer),
        "region": config.project.region,
        "encrypt": True,
        "use_lockfile": True,
    }


def hcl_assignments(values: dict[str, Any]) -> str:
    """`key = value` lines (a backend config file); strings and booleans are JSON literals, valid HCL."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


def write_file(path: Path, data: bytes | str) -> Path:
    """Write a file whole (a reader sees the old file or the new one), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(partial, path)
    return path


def write_json(path: Path, value: Any) -> Path:
    return write_file(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


# --- running terraform -----------------------------------------------------------------


def find_terraform(environ: dict[str, str] | None = None) -> str:
    path = shutil.which("terraform", path=(environ or os.environ).get("PATH"))
    if path is None:
        raise InfraError(
            "terraform not found on PATH: install Terraform >= 1.10 (https://developer.hashicorp.com/terraform/install)"
        )
    return path


def require_credentials() -> None:
    """InfraError unless botocore's credential chain (environment, profiles, SSO, container or
    instance roles) finds credentials. It asks no AWS API for them to be valid."""
    import botocore.session

    session = botocore.session.Session()
    try:
        credentials = session.get_credentials()
    except Exception as e:  # a broken profile or config file: botocore names it
        raise InfraError(f"AWS credentials cannot be read: {e}") from None
    if credentials is None:
        raise InfraError(
            "AWS credentials not found: set AWS_PROFILE (after `aws configure` or `aws sso login`) "
            "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )


def terraform_steps(action: str, layer: str, paths: InfraPaths, auto_approve: bool = False) -> list[list[str]]:
    """The terraform commands (arguments after `terraform`) of one action on one layer."""
    chdir = f"-chdir={paths.layer_dir(layer)}"
    init = [chdir, "init", "-input=false", f"-backend-config={paths.backend(layer)}"]
    var_file = f"-var-file={paths.tfvars(layer)}"
    approve = ["-auto-approve"] if auto_approve else []
    if action == "init":
        return [init]
    if action == "plan":
        return [init, [chdir, "plan", "-input=false", var_file]]
    if action == "apply":
        return [init, [chdir, "apply", "-input=false", var_file, *approve]]
    if action == "destroy":
        return [init, [chdir, "destroy", "-input=false", var_file, *approve]]
    raise InfraError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")


def layers_for(action: str, layer: str | None) -> tuple[str, ...]:
    if layer is not None:
        if layer not in LAYERS:
            raise InfraError(f"unknown layer {layer!r}; expected one of {', '.join(LAYERS)}")
        return (layer,)
    return DESTROY_LAYERS if action == "destroy" else LAYERS


Runner = Callable[[list[str], dict[str, str]], int]


def run_streaming(argv: list[str], env: dict[str, str]) -> int:
    """Run a command with the terminal as its output (it streams) and return its exit code."""
    return subprocess.run(argv, env=env, check=False).returncode


def terraform_env(paths: InfraPaths, layer: str, environ: dict[str, str]) -> dict[str, str]:
    env = dict(environ)
    env["TF_DATA_DIR"] = str(paths.data_dir(layer))
    env.setdefault("TF_IN_AUTOMATION", "1")
    return env


def run_layers(terraform: str, action: str, layers: Iterable[str], paths: InfraPaths, environ: dict[str, str],
               auto_approve: bool = False, runner: Runner = run_streaming,
               announce: Callable[[str], None] = print) -> int:  # fmt: skip
    """Run `action` on each layer in order; stop at the first failing command with its exit code."""
    for layer in layers:
        env = terraform_env(paths, layer, environ)
        for args in terraform_steps(action, layer, paths, auto_approve):
            announce(f"== {layer}: terraform {' '.join(a for a in args if not a.startswith('-chdir='))}")
            code = runner([terraform, *args], env)
            if code != 0:
                return code
    return 0


def read_outputs(terraform: str, layer: str, paths: InfraPaths, environ: dict[str, str]) -> dict[str, Any]:
    """`terraform output -json` of a layer as {name: value}."""
    result = subprocess.run(
        [terraform, f"-chdir={paths.layer_dir(layer)}", "output", "-json"],
        env=terraform_env(paths, layer, environ), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise InfraError(f"terraform output ({layer}) failed: {result.stderr.strip().splitlines()[-1:]}")
    try:
        outputs = json.loads(result.stdout or "{}")
    except ValueError:
        raise InfraError(f"terraform output ({layer}) did not print JSON") from None
    return {name: entry.get("value") for name, entry in outputs.items()}


def write_outputs(config: ProjectConfig, outputs: dict[str, Any], environ: dict[str, str] | None = None) -> Path | None:
    """Keep the outputs where load_config reads them back (overrides of the [aws] keys they name)."""
    path = infra_outputs_path(config.project.name, config.project.environment, environ)
    if path is None:
        return None
    return write_json(path, outputs)


# --- render ----------------------------------------------------------------------------------


def glue_job_variables(create_job: dict[str, Any], script_key: str) -> dict[str, Any]:
    """The aws target's CreateJob request as the service layer's `glue_jobs` entry (Terraform
    sets the role, the security configuration and the log group itself)."""
    return {
        "name": create_job["Name"],
        "script_key": script_key,
        "glue_version": create_job["GlueVersion"],
        "worker_type": create_job["WorkerType"],
        "number_of_workers": create_job["NumberOfWorkers"],
        "timeout_minutes": create_job["Timeout"],
        "max_retries": create_job.get("MaxRetries", 0),
        "max_concurrent_runs": create_job.get("ExecutionProperty", {}).get("MaxConcurrentRuns", 1),
        "default_arguments": dict(create_job.get("DefaultArguments", {})),
    }


def access_prefixes(config: ProjectConfig) -> dict[str, list[str]]:
    """Which data-bucket prefixes each role reads or writes (keys from core/staging, core/layout,
    core/quarantine, core/registry, core/dataset)."""
    from ml_demo_dagster.core.layout import FEATURES_PREFIX, LIVE_PREFIX, PIPES_PREFIX, SCORING_PREFIX, STEPS_PREFIX
    from ml_demo_dagster.core.quarantine import QUARANTINE_PREFIX
    from ml_demo_dagster.core.registry import MODELS_PREFIX
    from ml_demo_dagster.core.staging import STAGING_PREFIX

    code = config.aws.code_prefix.strip("/") + "/"
    # The steps job reads and moves batches (quarantine and back), writes what each asset makes,
    # reads and deletes the transform jobs' rows and scores, and reports to the machine.
    steps = [STAGING_PREFIX, QUARANTINE_PREFIX, "raw/", FEATURES_PREFIX, "datasets/", MODELS_PREFIX, LIVE_PREFIX,
             SCORING_PREFIX, STEPS_PREFIX]  # fmt: skip
    return {
        "glue_read": [STAGING_PREFIX, code, PIPES_PREFIX],
        "glue_write": [FEATURES_PREFIX, PIPES_PREFIX],
        "steps_read": [*steps, code],
        "steps_write": steps,
        "sagemaker_read": ["datasets/", SCORING_PREFIX, MODELS_PREFIX],
        "sagemaker_write": [MODELS_PREFIX, SCORING_PREFIX],
        "state_machine_read": [STAGING_PREFIX, STEPS_PREFIX],
    }


def render(config: ProjectConfig, paths: InfraPaths, definition: dict[str, Any], code: dict[str, bytes],
           glue_jobs: dict[str, tuple[dict[str, Any], str]], algorithm_image: str) -> Rendered:  # fmt: skip
    """Write every file the three layers' `terraform plan` reads; calls no AWS API. `glue_jobs`:
    each Glue job's CreateJob request (the aws target's builders) and its script's key."""
    artifacts = [CodeArtifact(key, write_file(paths.code_dir / key, data)) for key, data in sorted(code.items())]
    definition_path = write_file(paths.definition, json.dumps(definition, indent=2) + "\n")
    jobs = {name: glue_job_variables(create, script_key) for name, (create, script_key) in glue_jobs.items()}
    layer_vars = {
        "bootstrap": bootstrap_vars(config),
        "base": base_vars(config),
        "service": service_vars(config, definition_path, artifacts, jobs, access_prefixes(config), algorithm_image),
    }
    tfvars = {layer: write_json(paths.tfvars(layer), values) for layer, values in layer_vars.items()}
    backends = {
        layer: write_file(paths.backend(layer), hcl_assignments(backend_config(config, layer, paths)))
        for layer in LAYERS
    }
    paths.bootstrap_state(config).parent.mkdir(parents=True, exist_ok=True)
    return Rendered(tfvars, backends, definition_path, artifacts)
