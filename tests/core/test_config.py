import pytest

from ml_demo_dagster.config import DEFAULT_CONFIG_PATH, ConfigError, load_config


def test_default_config_loads_with_seed_values():
    cfg = load_config(environ={})
    assert cfg.dealer.stop == 20 and cfg.dealer.limit == 20
    assert cfg.market.epic == "CS.D.BITCOIN.CFD.IP"
    assert cfg.feature_dim == 605
    assert cfg.tuning.max_jobs == 10 and cfg.tuning.max_parallel_jobs == 2
    assert cfg.tuning.ranges["l1"].scaling == "Logarithmic"
    assert cfg.static_hyperparameters()["feature_dim"] == 605
    assert cfg.bucket_name == "ml-demo-dev-data"


def test_environment_overrides_single_values():
    cfg = load_config(environ={"ML_DEMO__DEALER__STOP": "35", "ML_DEMO__PROJECT__ENVIRONMENT": "prod"})
    assert cfg.dealer.stop == 35
    assert cfg.bucket_name == "ml-demo-prod-data"


def test_store_url_defaults_by_target():
    assert load_config(environ={}).store_url.endswith(".ml-demo/store")
    aws = load_config(environ={"ML_DEMO__PROJECT__TARGET": "aws", "ML_DEMO__STORE__BUCKET": "my-bucket"})
    assert aws.store_url == "s3://my-bucket"


@pytest.mark.parametrize(
    "env, key",
    [
        ({"ML_DEMO__DEALER__STOP": "-1"}, "dealer.stop"),
        ({"ML_DEMO__EXPORT__BATCH_SIZE": "lots"}, "export.batch_size"),
        ({"ML_DEMO__PROJECT__TARGET": "gcp"}, "project.target"),
        ({"ML_DEMO__TRAINING__SPLIT": "[0.5, 0.5, 0.5]"}, "training.split"),
        ({"ML_DEMO__TUNING__MAX_PARALLEL_JOBS": "20"}, "tuning"),
        ({"ML_DEMO__TUNING__RANGES__L1__MIN": "0"}, "tuning.ranges.l1"),
        ({"ML_DEMO__DEALER__STOPP": "3"}, "dealer.stopp"),
    ],
)
def test_bad_value_gives_one_line_naming_the_key(env, key):
    with pytest.raises(ConfigError) as err:
        load_config(environ=env)
    message = str(err.value)
    assert "\n" not in message
    assert f": {key}" in message
    assert str(DEFAULT_CONFIG_PATH) in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[project\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})
