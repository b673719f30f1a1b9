"""`ml-demo infra`: one line when terraform or credentials are missing, terraform's exit code
on failure, layers in order, render's files complete for `terraform plan`, outputs read back.

Terraform itself is replaced by a script on PATH that records its arguments (no provider can
be downloaded here, and plan would need AWS).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from ml_demo_dagster.cli import infra as infra_cli
from ml_demo_dagster.cli import main
from ml_demo_dagster.config import load_config
from ml_demo_dagster.core import infra

REPO = Path(__file__).resolve().parents[2]
FAKE_CODE = {"code/abc/feature_job.py": b"print('glue')\n", "code/abc/ml_demo_glue.zip": b"PK\x05\x06" + bytes(18)}


@pytest.fixture
def paths(tmp_path, monkeypatch):
    """Render into a temporary build folder, with a fixed Glue code bundle (the aws target's)."""
    p = infra.InfraPaths(infra=REPO / "infra", build=tmp_path / "build")
    monkeypatch.setattr(infra, "InfraPaths", lambda: p)
    monkeypatch.setattr(infra.InfraPaths, "bootstrap_state", lambda self, config: tmp_path / "state" / "b.tfstate",
                        raising=False)  # fmt: skip
    monkeypatch.setenv("ML_DEMO_INFRA_OUTPUTS", str(tmp_path / "outputs.json"))

    def fake_render(config, _paths):
        from ml_demo_dagster.aws import requests
        from ml_demo_dagster.stepfunctions import AssetNode, build_definition

        definition = build_definition(config, [AssetNode("batch_features", frozenset({"feature_job"}))], template=True)
        create = requests.glue_job(config, "s3://b/code/abc/feature_job.py", "s3://b/code/abc/ml_demo_glue.zip")
        steps = requests.glue_steps_job(config, "s3://b/code/abc/feature_job.py", "s3://b/code/abc/ml_demo_glue.zip")
        jobs = {"features": (create, "code/abc/feature_job.py"), "steps": (steps, "code/abc/feature_job.py")}
        return infra.render(
            config, p, definition, FAKE_CODE, jobs, requests.linear_learner_image(config.project.region)
        )

    monkeypatch.setattr(infra_cli, "_render", fake_render)
    return p


def fake_terraform(folder: Path, exit_codes: dict[str, int] | None = None, outputs: dict | None = None) -> Path:
    """A `terraform` that logs argv as JSON lines, exits as told per subcommand, prints outputs."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "calls.jsonl"
    script = folder / "terraform"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys, os\n"
        f"codes = {json.dumps(exit_codes or {})}\n"
        f"outputs = {json.dumps(outputs or {})}\n"
        "args = sys.argv[1:]\n"
        "sub = next(a for a in args if not a.startswith('-'))\n"
        f"open({str(log)!r}, 'a').write(json.dumps({{'args': args, 'tf_data_dir': os.environ.get('TF_DATA_DIR')}}) + '\\n')\n"
        "if sub != 'output':\n"
        "    print(f'fake terraform {sub}', flush=True)\n"
        "else:\n"
        "    layer = next(a for a in args if a.startswith('-chdir=')).rsplit('/', 1)[1]\n"
        "    print(json.dumps({k: {'value': v} for k, v in outputs.get(layer, {}).items()}))\n"
        "sys.exit(codes.get(sub, 0))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line)["args"] for line in log.read_text().splitlines()] if log.exists() else []


def test_missing_terraform_is_one_line(paths, monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["infra", "plan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ml-demo infra: error: terraform not found on PATH: install Terraform >= 1.10 "
                   "(https://developer.hashicorp.com/terraform/install)"]  # fmt: skip


def test_missing_credentials_is_one_line_and_terraform_never_runs(paths, tmp_path, monkeypatch, capsys):
    log = fake_terraform(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["infra", "plan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ml-demo infra: error: AWS credentials not found")
    assert calls(log) == []


def test_plan_runs_every_layer_in_order_and_stops_at_the_first_failure(paths, tmp_path, monkeypatch, capfd):
    log = fake_terraform(tmp_path / "bin", exit_codes={"plan": 0})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert main(["infra", "plan"]) == 0
    seen = [(a[0].rsplit("/", 1)[1], a[1]) for a in calls(log)]
    assert seen == [("bootstrap", "init"), ("bootstrap", "plan"), ("base", "init"), ("base", "plan"),
                    ("service", "init"), ("service", "plan")]  # fmt: skip
    init, plan = calls(log)[4], calls(log)[5]
    assert f"-backend-config={paths.backend('service')}" in init
    assert f"-var-file={paths.tfvars('service')}" in plan
    assert "fake terraform plan" in capfd.readouterr().out  # terraform's output streams through

    log.unlink()
    fake_terraform(tmp_path / "bin", exit_codes={"plan": 3})
    assert main(["infra", "plan"]) == 3
    assert [a[1] for a in calls(log)] == ["init", "plan"]  # stopped after the bootstrap plan
    assert "terraform exited with code 3" in capfd.readouterr().err


def test_destroy_leaves_the_state_bucket(paths, tmp_path, monkeypatch):
    log = fake_terraform(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert main(["infra", "destroy", "--auto-approve"]) == 0
    assert [(a[0].rsplit("/", 1)[1], a[1]) for a in calls(log) if a[1] == "destroy"] == [("service", "destroy"),
                                                                                        ("base", "destroy")]  # fmt: skip
    assert all("-auto-approve" in a for a in calls(log) if a[1] == "destroy")


def test_apply_writes_outputs_that_the_config_reads_as_aws_values(paths, tmp_path, monkeypatch):
    role = "arn:aws:iam::123456789012:role/ml-demo-dev-sagemaker"
    fake_terraform(tmp_path / "bin", outputs={
        "base": {"bucket": "ml-demo-dev-data"},
        "service": {"sagemaker_role_arn": role, "glue_role_arn": role.replace("sagemaker", "glue"),
                    "state_machine_arn": "arn:aws:states:eu-west-2:123456789012:stateMachine:m"},
    })  # fmt: skip
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert load_config().aws.sagemaker_role_arn == ""
    assert main(["infra", "apply", "--auto-approve"]) == 0
    written = json.loads((tmp_path / "outputs.json").read_text())
    assert written["state_machine_arn"].endswith(":stateMachine:m")
    config = load_config()
    assert config.aws.sagemaker_role_arn == role and config.aws.glue_role_arn.endswith("role/ml-demo-dev-glue")
    # The environment still wins over Terraform's outputs.
    monkeypatch.setenv("ML_DEMO__AWS__SAGEMAKER_ROLE_ARN", "arn:aws:iam::123456789012:role/other")
    assert load_config().aws.sagemaker_role_arn.endswith("role/other")


def test_bad_outputs_file_is_one_line_naming_it(tmp_path, monkeypatch):
    from ml_demo_dagster.config import ConfigError

    (tmp_path / "o.json").write_text("{not json")
    monkeypatch.setenv("ML_DEMO_INFRA_OUTPUTS", str(tmp_path / "o.json"))
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "o.json"))):
        load_config()


def _declared_variables(layer: str) -> set[str]:
    text = (REPO / "infra" / layer / "variables.tf").read_text()
    return set(re.findall(r'(?m)^variable "([a-z0-9_]+)"', text))


def test_render_writes_everything_plan_needs_without_aws(paths, monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")  # neither terraform nor AWS is needed
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert main(["infra", "render"]) == 0
    config = load_config()
    for layer in infra.LAYERS:
        values = json.loads(paths.tfvars(layer).read_text())
        assert set(values) == _declared_variables(layer), layer  # every variable, no stray one
        backend = paths.backend(layer).read_text()
        assert backend.count("\n") >= 1
    service = json.loads(paths.tfvars("service").read_text())
    assert Path(service["state_machine_definition_file"]).is_file()
    assert all(Path(p).read_bytes() == FAKE_CODE[k] for k, p in service["code_artifacts"].items())
    assert service["glue_jobs"]["features"]["name"] == config.glue_job_name
    assert service["streamer"]["environment"]["ML_DEMO__STORE__URL"] == f"s3://{config.bucket_name}"
    assert "use_lockfile = true" in paths.backend("base").read_text()
    assert f'bucket = "{config.state_bucket_name}"' in paths.backend("service").read_text()
    assert "path = " in paths.backend("bootstrap").read_text()
    out = capsys.readouterr().out
    assert str(paths.tfvars("service")) in out


def test_render_names_follow_the_config(paths, monkeypatch):
    monkeypatch.setenv("ML_DEMO__PROJECT__ENVIRONMENT", "prod")
    monkeypatch.setenv("ML_DEMO__PROJECT__REGION", "us-east-1")
    assert main(["infra", "render"]) == 0
    base = json.loads(paths.tfvars("base").read_text())
    assert base["bucket_name"] == "ml-demo-prod-data" and base["region"] == "us-east-1"
    text = "".join(paths.tfvars(layer).read_text() for layer in infra.LAYERS)
    assert "-dev-" not in text and "eu-west-2" not in text


def test_real_render_from_a_clone_writes_the_glue_code_and_definition(tmp_path, monkeypatch):
    """`ml-demo infra render` as a user runs it: the aws target's Glue bundle, the exported machine."""
    p = infra.InfraPaths(infra=REPO / "infra", build=tmp_path / "build")
    monkeypatch.setattr(infra, "InfraPaths", lambda: p)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["infra", "render"]) == 0
    service = json.loads(p.tfvars("service").read_text())
    script_key = service["glue_jobs"]["features"]["script_key"]
    assert Path(service["code_artifacts"][script_key]).read_bytes().startswith(b"")
    assert script_key.endswith(".py") and len(service["code_artifacts"]) == 4
    steps = service["glue_jobs"]["steps"]
    assert steps["name"] == load_config().glue_steps_job_name and steps["script_key"].endswith("/steps_job.py")
    assert steps["default_arguments"]["--additional-python-modules"] == "scipy==1.17.1"
    assert steps["script_key"] in service["code_artifacts"]
    modules = service["glue_jobs"]["features"]["default_arguments"]["--extra-py-files"]
    assert (
        modules.startswith(f"s3://{load_config().bucket_name}/")
        and modules.split("/", 3)[3] in service["code_artifacts"]
    )
    definition = json.loads(Path(service["state_machine_definition_file"]).read_text())
    assert (
        definition["States"]["TuneModel"]["Parameters"]["TrainingJobDefinition"]["RoleArn"] == "${sagemaker_role_arn}"
    )
