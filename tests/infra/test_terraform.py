"""The Terraform in infra/: formatted, checkov-clean, least privilege, nothing hard-coded.

`terraform init/validate/plan` need the AWS provider, which cannot be downloaded here:
`validate` runs only where a local provider mirror exists (TF_PROVIDER_MIRROR, default
/opt/tf-plugins), and `plan` never (it needs credentials and AWS).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import hcl2
import infra_tools as tools
import pytest

INFRA = tools.REPO / "infra"
LAYERS = ("bootstrap", "base", "service")
MIRROR = Path(os.environ.get("TF_PROVIDER_MIRROR", "/opt/tf-plugins"))

# Actions that accept no resource narrower than "*" (AWS's service authorization reference):
# for these, "*" is the narrowest resource there is.
ONLY_STAR_RESOURCE = {
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets",
    "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
}  # fmt: skip
# Key policies: their Resource can only be "*" (the key they are attached to); the root
# statement is AWS's default key policy (delegation to IAM), without which a key can be
# locked out for good.
KEY_POLICIES = {"project_key", "state_key"}


def _tf_files() -> list[Path]:
    return sorted(INFRA.rglob("*.tf"))


def _plain(node):
    """python-hcl2's tree without its quoting of strings and keys and its block markers."""
    if isinstance(node, dict):
        return {_plain(k): _plain(v) for k, v in node.items() if k != "__is_block__"}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str) and len(node) >= 2 and node[0] == node[-1] == '"':
        return node[1:-1]
    return node


def _policy_documents() -> dict[str, list[dict]]:
    """Every aws_iam_policy_document in infra/: '<layer>/<name>' -> statements."""
    docs = {}
    for path in _tf_files():
        parsed = _plain(hcl2.loads(path.read_text()))
        for block in parsed.get("data", []):
            for name, body in block.get("aws_iam_policy_document", {}).items():
                docs[f"{path.parent.name}/{name}"] = body.get("statement", [])
    return docs


def _strip(value) -> str:
    return str(value)


def test_terraform_fmt_is_clean():
    result = subprocess.run([tools.terraform(), "fmt", "-check", "-recursive", "-diff", str(INFRA)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}"


@pytest.mark.skipif(not (MIRROR / "registry.terraform.io" / "hashicorp" / "aws").is_dir(),
                    reason="no local AWS provider mirror: terraform validate needs the provider, which cannot be downloaded here")  # fmt: skip
@pytest.mark.parametrize("layer", LAYERS)
def test_terraform_validate_with_local_provider_mirror(layer, tmp_path):
    cli_config = tmp_path / "cli.tfrc"
    cli_config.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n  }}\n}}\n')
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(cli_config), "TF_DATA_DIR": str(tmp_path / "data"),
           "CHECKPOINT_DISABLE": "1"}  # fmt: skip
    work = tmp_path / layer
    work.mkdir()
    for f in (INFRA / layer).glob("*.tf"):
        (work / f.name).write_text(f.read_text())
    init = subprocess.run([tools.terraform(), f"-chdir={work}", "init", "-backend=false", "-input=false", "-no-color"],
                          capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    validate = subprocess.run([tools.terraform(), f"-chdir={work}", "validate", "-no-color"],
                              capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert validate.returncode == 0, validate.stdout + validate.stderr


@pytest.mark.slow
def test_checkov_finds_no_failed_check_and_every_skip_has_its_reason():
    result = subprocess.run(
        [str(tools.checkov()), "-d", str(INFRA), "--framework", "terraform", "--skip-download", "--quiet",
         "--compact", "-o", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r["results"].get("failed_checks", [])]
    skipped = [c for r in reports for c in r["results"].get("skipped_checks", [])]
    passed = sum(r["summary"]["passed"] for r in reports)
    # Offline (--skip-download) checkov knows no severities, so no failure is allowed at all:
    # stricter than "no HIGH or CRITICAL".
    assert not failed, [(c["check_id"], c["resource"], c["check_name"]) for c in failed]
    assert passed > 300
    for check in skipped:
        reason = (check.get("suppress_comment") or "").strip()
        assert len(reason) > 20 and reason != "No comment provided", (check["check_id"], check["resource"])
    # Skips are in the code, next to what they skip: no --skip-check anywhere.
    assert all("#checkov:skip=" in (INFRA / c["file_path"].lstrip("/")).read_text() for c in skipped)


def test_no_allow_statement_has_a_wildcard_where_a_narrower_one_exists():
    docs = _policy_documents()
    assert len(docs) >= 15
    problems = []
    for name, statements in docs.items():
        for st in statements:
            if _strip(st.get("effect", "Allow")) == "Deny":
                continue  # a Deny on "*" only narrows
            actions = [_strip(a) for a in st.get("actions", [])]
            resources = [_strip(r) for r in st.get("resources", [])]
            sid = _strip(st.get("sid", "?"))
            for action in actions:
                if action == "*" or (action.endswith(":*") and name.split("/")[1] not in KEY_POLICIES):
                    problems.append(f"{name} {sid}: action {action}")
            if "*" in resources and name.split("/")[1] not in KEY_POLICIES:
                wide = [a for a in actions if a not in ONLY_STAR_RESOURCE]
                if wide:
                    problems.append(f"{name} {sid}: resource * for {wide}")
            if not resources and actions != ["sts:AssumeRole"]:  # a trust policy names no resource
                problems.append(f"{name} {sid}: no resources")
    assert not problems, problems


def test_the_ig_secret_is_readable_only_by_the_streamer_task_role():
    docs = _policy_documents()
    readers = {
        name for name, statements in docs.items() for st in statements
        if _strip(st.get("effect", "Allow")) == "Allow"
        and any(_strip(a) in ("secretsmanager:GetSecretValue", "secretsmanager:*", "*") for a in st.get("actions", []))
    }  # fmt: skip
    assert readers == {"service/streamer_task"}
    granted = [st for st in docs["service/streamer_task"] if "secretsmanager:GetSecretValue" in st["actions"]]
    assert [_strip(r) for st in granted for r in st["resources"]] == ["${local.base.ig_secret_arn}"]
    # The secret's own policy denies every other principal, whatever IAM elsewhere says.
    (deny,) = docs["service/ig_secret"]
    assert _strip(deny["effect"]) == "Deny" and deny["actions"] == ["secretsmanager:GetSecretValue"]
    (condition,) = deny["condition"]
    assert _strip(condition["test"]) == "StringNotEquals" and _strip(condition["variable"]) == "aws:PrincipalArn"
    assert [_strip(v) for v in condition["values"]] == ["${aws_iam_role.streamer_task.arn}"]
    service = "".join(p.read_text() for p in (INFRA / "service").glob("*.tf"))
    assert re.search(r"secret_arn\s*=\s*local\.base\.ig_secret_arn", service)
    # The execution role (ECS itself) gets no secrets: the streamer reads the secret at run time.
    assert "secretsmanager" not in json.dumps(docs["service/streamer_execution"])


def test_nothing_account_specific_is_hard_coded():
    for path in _tf_files():
        text = re.sub(r"(?m)^\s*#.*$", "", path.read_text())
        assert not re.search(r"\b\d{12}\b", text), f"{path}: an account ID"
        assert "arn:aws:" not in text, f"{path}: an ARN literal (use the partition data source)"
        assert not re.search(r"s3://[a-z0-9]", text), f"{path}: a bucket literal"
        assert not re.search(r"\b(eu|us|ap|sa|ca|me|af)-[a-z]+-\d\b", text), f"{path}: a region literal"


# IAM names that differ from the API's: (service, API action) -> IAM action.
IAM_ACTION = {("s3", "ListObjectsV2"): "s3:ListBucket", ("sfn", "DescribeExecution"): "states:DescribeExecution"}
# What a `.sync` integration calls while it waits (AWS Step Functions' IAM policies for them).
SYNC_CALLS = {
    "glue:StartJobRun": ["glue:GetJobRun"],
    "sagemaker:CreateHyperParameterTuningJob": ["sagemaker:DescribeHyperParameterTuningJob"],
    "sagemaker:CreateTransformJob": ["sagemaker:DescribeTransformJob"],
}


def _machine_actions(states: dict) -> set[str]:
    """The IAM actions the states' Task resources call (nested Parallel/Map included)."""
    actions = set()
    for state in states.values():
        for branch in [*state.get("Branches", []), *([state["ItemProcessor"]] if "ItemProcessor" in state else [])]:
            actions |= _machine_actions(branch["States"])
        if state["Type"] != "Task":
            continue
        service, api = state["Resource"].removeprefix("arn:aws:states:::").removeprefix("aws-sdk:").split(":")
        api, sync = api.removesuffix(".sync"), api.endswith(".sync")
        action = IAM_ACTION.get((service, api[0].upper() + api[1:]), f"{service}:{api[0].upper() + api[1:]}")
        actions |= {action, *(SYNC_CALLS[action] if sync else [])}
    return actions


def test_the_state_machine_role_grants_every_call_of_the_exported_machine():
    from ml_demo_dagster.config import load_config
    from ml_demo_dagster.stepfunctions import export_definition

    needed = _machine_actions(export_definition(load_config(environ={}), template=True)["States"])
    assert {"glue:StartJobRun", "sagemaker:CreateTransformJob", "dynamodb:UpdateItem", "s3:GetObject"} <= needed
    granted = {_strip(a) for st in _policy_documents()["service/sfn"] for a in st.get("actions", [])}
    assert needed <= granted, sorted(needed - granted)
