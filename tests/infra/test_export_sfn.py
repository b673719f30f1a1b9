"""`ml-demo export-sfn`: valid ASL (asl-validator, moto's parser), the same requests as the aws
target's builders, states in the asset graph's order, nothing account-specific hard-coded."""

from __future__ import annotations

import json
import re
import subprocess

import boto3
import infra_tools
import pytest
import requests as http

from ml_demo_dagster.aws import requests
from ml_demo_dagster.aws.steps_job import STEPS
from ml_demo_dagster.cli import main
from ml_demo_dagster.config import load_config
from ml_demo_dagster.core.batch_steps import StepSettings
from ml_demo_dagster.core.layout import features_prefix
from ml_demo_dagster.core.sfn import SfnExportError
from ml_demo_dagster.core.staging import deals_key, price_key
from ml_demo_dagster.definitions import build_definitions
from ml_demo_dagster.stepfunctions import AssetNode, build_definition, export_definition, graph_nodes

BATCH = "1700000000000"
ATTEMPT = "12"
ROLE = "arn:aws:iam::123456789012:role/ml-demo-dev-sagemaker"


@pytest.fixture(scope="module")
def definition():
    return export_definition(load_config(), template=True)


def resolve(params, data):
    """Evaluate Task Parameters against an input, as Step Functions does for `.$` keys."""

    def path(expr):
        if expr.startswith("States.JsonToString("):
            return json.dumps(path(expr[len("States.JsonToString(") : -1]))
        node = data
        for part in expr[2:].split("."):
            node = node[part]
        return node

    if isinstance(params, dict):
        out = {}
        for key, value in params.items():
            if key.endswith(".$"):
                m = re.fullmatch(r"States\.Format\('((?:[^'\\]|\\.)*)', (.*)\)", value)
                if m:
                    args = iter(path(a.strip()) for a in m.group(2).split(","))
                    text = re.sub(
                        r"\\(.)|\{\}", lambda x, args=args: x.group(1) if x.group(1) else str(next(args)), m.group(1)
                    )
                    out[key[:-2]] = text
                else:
                    out[key[:-2]] = path(value)
            else:
                out[key] = resolve(value, data)
        return out
    if isinstance(params, list):
        return [resolve(v, data) for v in params]
    return params


def test_asl_validator_accepts_the_export(tmp_path, monkeypatch):
    out = tmp_path / "build" / "state_machine.json"
    assert main(["export-sfn", "--out", str(out)]) == 0
    result = subprocess.run([str(infra_tools.asl_validator()), "--json-path", str(out)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    broken = json.loads(out.read_text())
    broken["States"]["ClaimBatch"]["Next"] = "NoSuchState"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    result = subprocess.run([str(infra_tools.asl_validator()), "--json-path", str(tmp_path / "broken.json")],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode != 0


def test_moto_parses_the_export_and_rejects_a_broken_one(definition, moto_endpoint):
    http.post(f"{moto_endpoint}/moto-api/config", json={"stepfunctions": {"execute_state_machine": True}}, timeout=10)
    try:
        sfn = boto3.client("stepfunctions", endpoint_url=moto_endpoint, region_name="eu-west-2")
        text = json.dumps(definition).replace("${sagemaker_role_arn}", ROLE)
        arn = sfn.create_state_machine(name="export-ok", definition=text, roleArn=ROLE)["stateMachineArn"]
        assert json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"]) == json.loads(text)
        broken = json.loads(text)
        broken["States"]["ReadBatchKey"]["Type"] = "Decide"
        with pytest.raises(Exception, match="ASLParserException|InvalidDefinition"):
            sfn.create_state_machine(name="export-bad", definition=json.dumps(broken), roleArn=ROLE)
    finally:
        http.post(f"{moto_endpoint}/moto-api/config", json={"stepfunctions": {"execute_state_machine": False}},
                  timeout=10)  # fmt: skip


def test_task_parameters_are_the_aws_target_requests(definition):
    config = load_config(environ={"ML_DEMO__AWS__SAGEMAKER_ROLE_ARN": ROLE})
    states = json.loads(json.dumps(definition).replace("${sagemaker_role_arn}", ROLE))["States"]
    url = "s3://ml-demo-dev-data/models/x/model.tar.gz"
    data = {"batch": BATCH, "claim": {"attempt": ATTEMPT}, "tuning": {"job": "t", "best": {"model_data_url": url}},
            "results": {"live_precision_prepare": {"value": {"model_name": "champion-model"}},
                        "deployed_model_prepare": {"value": {"model_name": "champion-model"}}}}  # fmt: skip
    uri = lambda key: f"s3://{config.bucket_name}/{key}"  # noqa: E731
    assert resolve(states["BuildFeatures"]["Parameters"], data) == requests.glue_job_run(
        config, BATCH, uri(deals_key(BATCH)), uri(price_key(BATCH)), uri(features_prefix(BATCH))
    )
    assert resolve(states["TuneModel"]["Parameters"], data) == requests.tuning_job(
        config, requests.tuning_job_name(config, BATCH, ATTEMPT), uri(f"datasets/{BATCH}/train/"),
        uri(f"datasets/{BATCH}/validation/"), uri(f"models/{BATCH}/tuning/"),
    )  # fmt: skip
    model = requests.model_name(config, BATCH, ATTEMPT)
    assert resolve(states["CreateModel"]["Parameters"], data) == requests.model(config, model, url)
    endpoint_config = requests.endpoint_config_name(config, BATCH, ATTEMPT)
    assert resolve(states["NameEndpointConfig"]["Parameters"], data) == {"name": endpoint_config}
    assert resolve(states["CreateEndpointConfig"]["Parameters"], data) == requests.endpoint_config(
        config, endpoint_config, model
    )
    for name in ("CreateEndpoint", "UpdateEndpoint"):
        assert resolve(states[name]["Parameters"], data) == requests.endpoint(config, endpoint_config)
    for state, asset, scored_by in (("ScoreBestModel", "tuned_model", model),
                                    ("Score live_precision", "live_precision", "champion-model"),
                                    ("Score deployed_model", "deployed_model", "champion-model")):  # fmt: skip
        rows = f"scoring/{BATCH}-{ATTEMPT}-{asset}"
        assert resolve(states[state]["Parameters"], data) == requests.transform_job(
            config, requests.transform_job_name(config, f"{BATCH}-{asset.replace('_', '-')}", ATTEMPT), scored_by,
            uri(f"{rows}/input/"), uri(f"{rows}/output"),
        )  # fmt: skip
    settings = StepSettings.from_config(config).to_json()
    assert resolve(states["Steps tuned_model + deployed_model:prepare"]["Parameters"], data) == requests.steps_job_run(
        config, ["tuned_model", "deployed_model:prepare"], BATCH, ATTEMPT, f"s3://{config.bucket_name}", settings,
        {"tuning": json.dumps(data["tuning"]), "model_name": model},
    )  # fmt: skip
    assert StepSettings.from_json(settings) == StepSettings.from_config(config)
    # The tuning job carries the configured ranges, limits and objective.
    tuning = states["TuneModel"]["Parameters"]["HyperParameterTuningJobConfig"]
    assert tuning["ResourceLimits"]["MaxNumberOfTrainingJobs"] == config.tuning.max_jobs
    assert tuning["HyperParameterTuningJobObjective"]["MetricName"] == config.tuning.objective_metric


def test_every_step_the_machine_runs_is_a_step_of_the_steps_job_and_every_asset_has_one(definition):
    runs = [s for s in definition["States"].values()
            if s.get("Resource", "").endswith("glue:startJobRun.sync") and "--steps" in s["Parameters"]["Arguments"]]  # fmt: skip
    asked = [step for s in runs for step in s["Parameters"]["Arguments"]["--steps"].split(",")]
    assert sorted(asked) == sorted(STEPS) and len(asked) == len(set(asked))
    assets = [n.name for n in graph_nodes(build_definitions("local"))]
    assert set(assets) <= set(asked)
    with pytest.raises(SfnExportError, match="asset new_asset: the steps job has no step 'new_asset'"):
        build_definition(load_config(), [AssetNode("new_asset", frozenset({"store"}))], template=True)


def test_a_name_the_machine_cannot_compute_at_run_time_is_refused():
    config = load_config(
        environ={"ML_DEMO__PROJECT__NAME": "ml-demo-longer", "ML_DEMO__PROJECT__ENVIRONMENT": "staging"}
    )
    with pytest.raises(SfnExportError, match="HyperParameterTuningJobName.*shorten project.name"):
        export_definition(config, template=True)


def test_a_config_change_changes_the_export():
    base = export_definition(load_config(), template=True)
    changed = export_definition(load_config(environ={"ML_DEMO__TUNING__MAX_JOBS": "4",
                                                     "ML_DEMO__PROJECT__ENVIRONMENT": "prod"}), template=True)  # fmt: skip
    assert changed["States"]["TuneModel"]["Parameters"]["HyperParameterTuningJobConfig"]["ResourceLimits"][
        "MaxNumberOfTrainingJobs"] == 4  # fmt: skip
    assert "ml-demo-prod-runs" in json.dumps(changed) and "ml-demo-dev" not in json.dumps(changed)
    assert base != changed


def _order(definition) -> list[str]:
    """States on the success path from the run lock, following Next (a Choice: its Default)."""
    states, name, seen = definition["States"], "AcquireRunLock", []
    while name in states and name not in seen:
        seen.append(name)
        name = states[name].get("Next") or states[name].get("Default")
    return seen


def test_states_follow_the_asset_graph_order(definition):
    path = _order(definition)
    runs = [n for n in path if n.startswith("Steps ")]
    assert runs == ["Steps raw_ticks + raw_deals", "Steps batch_features + live_precision:prepare",
                    "Steps live_precision + training_dataset + tuned_model:prepare",
                    "Steps tuned_model + deployed_model:prepare", "Steps deployed_model"]  # fmt: skip
    assert path.index("Steps raw_ticks + raw_deals") < path.index("BuildFeatures") < path.index(runs[1])
    assert path.index(runs[2]) < path.index("TuneModel") < path.index("SelectBestModel") < path.index(
        "CreateModel") < path.index("ScoreBestModel") < path.index(runs[3]) < path.index("Steps deployed_model")  # fmt: skip
    states = definition["States"]
    # The gate's decision chooses between the endpoint's states and the end.
    assert states["ShouldDeploy"]["Default"] == "ReleaseRunLock"
    assert states["ShouldDeploy"]["Choices"][0]["Next"] == "NameEndpointConfig"
    assert states["PromoteChampion"]["Next"] == "ReleaseRunLock" and states["ReleaseRunLock"]["Next"] == "BatchDone"
    # A serving model's scores only when the prepare step found one.
    assert states["Score with live_precision serving model?"]["Default"] == runs[2]
    assert states["BuildFeatures"]["Comment"].startswith("The Glue feature job")
    assert states["CreateModel"]["Comment"] == "asset tuned_model"


def test_adding_an_asset_adds_its_states_in_graph_order():
    config = load_config()
    nodes = [AssetNode("a_features", frozenset({"feature_job"})), AssetNode("b_local", frozenset({"store"})),
             AssetNode("c_features", frozenset({"feature_job"})), AssetNode("d_scored", frozenset({"scorer"}))]  # fmt: skip
    d = build_definition(config, nodes, template=True, steps={"a_features", "b_local", "c_features", "d_scored",
                                                               "d_scored:prepare"})  # fmt: skip
    assert "BuildFeatures" in d["States"] and "c_features.BuildFeatures" in d["States"]
    path = _order(d)
    assert path.index("BuildFeatures") < path.index("Steps a_features + b_local") < path.index(
        "c_features.BuildFeatures") < path.index("Steps c_features + d_scored:prepare") < path.index(
        "Read d_scored:prepare")  # fmt: skip
    with pytest.raises(SfnExportError, match="empty"):
        build_definition(config, [])


def test_no_account_arn_or_bucket_that_did_not_come_from_config(definition):
    config = load_config()
    text = json.dumps(definition)
    image = requests.linear_learner_image(config.project.region)
    assert re.findall(r"\b\d{12}\b", text.replace(image, "")) == []  # the only account: SageMaker's own image
    assert re.findall(r"arn:aws[a-z-]*:(?!states:::)[^\"]*", text) == []  # only integration ARNs
    buckets = set(re.findall(r"s3://([a-z0-9.-]+)", text)) | set(re.findall(r'"Bucket": "([^"]+)"', text))
    assert buckets == {config.bucket_name}
    assert not re.search(r"\b1[0-9]{12}\b", text.replace(image, ""))  # no batch key


def test_failures_end_in_a_fail_state_with_the_cause(definition):
    states = definition["States"]
    assert states["PipelineFailed"] == {"Type": "Fail", "Error": "PipelineFailed",
                                        "CausePath": "States.Format('{}: {}', $.error.Error, $.error.Cause)"}  # fmt: skip
    for name, state in states.items():
        if state["Type"] == "Task" and name not in {"ListDealsFile", "ListPriceFile", "ReleaseRunLock"}:
            assert state.get("Catch"), name
        if state["Type"] == "Task":
            (retry,) = state["Retry"]
            assert retry["JitterStrategy"] == "FULL" and retry["BackoffRate"] > 1


def test_export_sfn_without_role_in_config_refers_to_terraform(tmp_path, capsys):
    out = tmp_path / "sm.json"
    assert main(["export-sfn", "--out", str(out)]) == 0
    assert "${sagemaker_role_arn}" in out.read_text()
    assert "aws.sagemaker_role_arn is not set" in capsys.readouterr().err


def test_export_sfn_uses_the_role_from_config(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_DEMO__AWS__SAGEMAKER_ROLE_ARN", ROLE)
    out = tmp_path / "sm.json"
    assert main(["export-sfn", "--out", str(out)]) == 0
    assert ROLE in out.read_text() and "${" not in out.read_text()
