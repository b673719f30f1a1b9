"""The code location loads, and its graph is the one the README describes."""

import dagster as dg

from ml_demo_dagster.definitions import build_definitions, defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("batch_job")
    assert job.partitions_def.name == "batches"


def test_assets_are_grouped_by_stage_with_one_line_docstrings():
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {
        "raw_ticks": "ingest",
        "raw_deals": "ingest",
        "batch_features": "features",
        "training_dataset": "training",
        "tuned_model": "training",
        "live_precision": "serving",
        "deployed_model": "serving",
    }
    for key in graph.get_all_asset_keys():
        description = graph.get(key).description
        assert description and "\n" not in description.strip(), key


def test_checks_are_declared():
    graph = defs.resolve_asset_graph()
    names = {key.name for key in graph.asset_check_keys}
    assert {
        "ticks_are_ordered", "spread_is_positive", "features_have_no_nan", "feature_width_is_605",
        "label_balance_is_reported", "model_beats_chance_on_test",
    } <= names  # fmt: skip


def test_live_precision_is_scored_before_the_deployment():
    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("deployed_model")).parent_keys}
    assert parents == {"tuned_model", "live_precision"}


def test_sensor_is_running_by_default():
    sensor = defs.resolve_sensor_def("staging_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_unknown_target_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="target 'gcp' is not available in this build"):
        build_definitions("gcp")


def test_the_aws_target_has_the_same_graph_and_other_resources(monkeypatch):
    import pytest

    from ml_demo_dagster.config import ConfigError

    with pytest.raises(ConfigError, match="aws.glue_role_arn is empty"):
        build_definitions("aws")
    monkeypatch.setenv("ML_DEMO__AWS__GLUE_ROLE_ARN", "arn:aws:iam::123456789012:role/glue")
    monkeypatch.setenv("ML_DEMO__AWS__SAGEMAKER_ROLE_ARN", "arn:aws:iam::123456789012:role/sagemaker")
    aws = build_definitions("aws")
    dg.Definitions.validate_loadable(aws)
    local_graph, aws_graph = defs.resolve_asset_graph(), aws.resolve_asset_graph()
    assert aws_graph.get_all_asset_keys() == local_graph.get_all_asset_keys()
    for key in local_graph.get_all_asset_keys():
        assert aws_graph.get(key).parent_keys == local_graph.get(key).parent_keys
    assert aws_graph.asset_check_keys == local_graph.asset_check_keys
    assert set(aws.resources) == set(defs.resources)
    assert type(aws.resources["feature_job"]).__name__ == "GlueFeatureJob"
    assert type(aws.resources["deployer"]).__name__ == "SageMakerDeployer"


def test_make_run_instance_runs_one_at_a_time_dequeues_every_second_and_retries(tmp_path, monkeypatch):
    from ml_demo_dagster.cli.up import dagster_home

    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    home.mkdir()
    (home / "dagster.yaml").write_text("# Written by `ml-demo up`. (an older version)\n")
    assert dagster_home() == home
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 1
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    finally:
        instance.dispose()
    mine = "telemetry:\n  enabled: false\n"
    (home / "dagster.yaml").write_text(mine)
    dagster_home()
    assert (home / "dagster.yaml").read_text() == mine  # a user's own settings are left alone
