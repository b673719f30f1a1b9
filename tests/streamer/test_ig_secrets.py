"""The IG password, the API key and the session tokens appear in no log line, exception, CLI
output, batch file or Dagster metadata, on every path that touches them, failures included:
credentials from the environment and from Secrets Manager (good, incomplete, not JSON,
missing), wrong password, wrong API key, IG unavailable, an expired session and its fresh
login, a streaming server refusing every session, the CLI, and the batch taken through
ingest. Secrets are distinctive strings, searched for verbatim in everything produced."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import traceback

import boto3
import pytest
from ig_fakes import FakeIG
from streamer_testkit import CLI, batches_in

from ml_demo_dagster.config import load_config
from ml_demo_dagster.core.store import LocalStore
from streamer.runner import run_stream
from streamer.sources.ig import IGSource

PASSWORD = "pw-SECRET-4f1c-Zq"
API_KEY = "key-SECRET-9a7e-Xw"
FAST = {
    "ML_DEMO__IG__RETRY_DELAY_SECONDS": "0.2",
    "ML_DEMO__IG__STALLED_TIMEOUT_SECONDS": "0.2",
    "ML_DEMO__IG__RECONNECT_TIMEOUT_SECONDS": "0.2",
    "ML_DEMO__IG__SESSION_RECOVERY_TIMEOUT_SECONDS": "1",
    "ML_DEMO__IG__MAX_FAILED_ATTEMPTS": "3",
}
FIRST = {
    "UPDATE_TIME": "10:00:00", "BID": "29990", "OFFER": "30010", "CHANGE": "0", "CHANGE_PCT": "0",
    "MID_OPEN": "30000", "HIGH": "30100", "LOW": "29900", "MARKET_STATE": "TRADEABLE", "MARKET_DELAY": "0",
}  # fmt: skip
REGION = "eu-west-2"


@pytest.fixture
def fake():
    with FakeIG(password=PASSWORD, api_key=API_KEY) as f:
        yield f


def secrets_of(fake: FakeIG) -> list[str]:
    """Everything that must never show: password, API key, every token issued, and the
    Lightstreamer passwords made of them."""
    tokens = fake.tokens
    streaming = [f"CST-{a}|XST-{b}" for a, b in zip(tokens[::2], tokens[1::2], strict=True)]
    return [PASSWORD, API_KEY, *tokens, *streaming]


def assert_nowhere(fake: FakeIG, **texts: str) -> None:
    secrets = secrets_of(fake)
    assert len(secrets) >= 2
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret shows in {where}"


def exception_text(error: BaseException | None) -> str:
    if error is None:
        return ""
    return "".join(traceback.format_exception(error)) + repr(error) + str(error) + repr(error.args)


def log_text(caplog) -> str:
    return caplog.text + "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)


def config_env(fake: FakeIG, **more) -> dict[str, str]:
    return {"ML_DEMO__IG__BASE_URL": fake.rest_url, **FAST, **more}


def ig_env(fake: FakeIG, **override) -> dict[str, str]:
    return {"IG_IDENTIFIER": fake.identifier, "IG_PASSWORD": PASSWORD, "IG_API_KEY": API_KEY, **override}


def stream_in_process(fake: FakeIG, store_dir, updates, *, config_extra=None, environ=None, during=None):
    """Build the source, stream into a local store on a thread while the fake sends `updates`
    (and `during(fake)` runs after the first ones); returns (stats or None, exception or None)."""
    import threading

    outcome: dict = {}
    config = load_config(environ=config_env(fake, **(config_extra or {})))
    config = config.model_copy(update={"export": config.export.model_copy(update={"batch_size": 5})})

    def run():
        try:
            source = IGSource(config, environ=environ if environ is not None else ig_env(fake))
            outcome["stats"] = run_stream(config, source, LocalStore(store_dir), max_batches=1)
        except BaseException as e:  # noqa: BLE001 - examined by the test
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if updates:
        fake.wait_subscribed()
        fake.send_many(updates[:3])
        if during is not None:
            during(fake)
        fake.send_many(updates[3:])
    thread.join(60)
    assert not thread.is_alive(), "the stream did not end"
    return outcome.get("stats"), outcome.get("error")


def market(n: int) -> list[dict[str, str]]:
    """A first complete update, then BID and OFFER jumping by 25-75 (every deal resolves at once)."""
    updates = [FIRST]
    for i in range(1, n):
        offer = 30010 + (25 if i % 2 else -25) * (i % 3 + 1)
        updates.append({"BID": f"{offer - 20:.2f}", "OFFER": f"{offer:.2f}"})
    return updates


def batch_bytes(store_dir) -> str:
    return "".join(p.read_text() for files in batches_in(store_dir / "staging").values() for p in files.values())


def test_environment_credentials_a_stream_an_expired_session_and_a_fresh_login(fake, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)

    def expire(f: FakeIG):
        f.expire_tokens()
        f.drop()
        f.wait_subscribed(2, timeout=30)

    stats, error = stream_in_process(fake, tmp_path, market(12), during=expire)
    assert error is None and stats.batches_written == 1
    assert len(fake.logins) == 2  # the second login brought new tokens: both pairs are checked
    assert_nowhere(fake, log=log_text(caplog), batch=batch_bytes(tmp_path), stats=repr(stats))


@pytest.mark.parametrize(
    ("situation", "environ_override", "prepare"),
    [
        ("wrong password", {"IG_PASSWORD": "x" + PASSWORD}, None),
        ("wrong api key", {"IG_API_KEY": "x" + API_KEY}, None),
        ("IG unavailable", {}, lambda f: setattr(f, "rest_down", True)),
        ("sessions refused", {}, lambda f: setattr(f, "refuse_sessions", True)),
    ],
)
def test_failures_show_no_secret(fake, tmp_path, caplog, situation, environ_override, prepare):
    caplog.set_level(logging.DEBUG)
    if prepare:
        prepare(fake)
    _, error = stream_in_process(fake, tmp_path, [], environ=ig_env(fake, **environ_override))
    assert error is not None, situation
    assert_nowhere(fake, log=log_text(caplog), exception=exception_text(error))
    for wrong in environ_override.values():
        assert wrong not in exception_text(error) + log_text(caplog)


@pytest.fixture
def secret_store(s3_env):
    client = boto3.client("secretsmanager", region_name=REGION)
    names = []

    def put(name: str, value: str) -> str:
        client.create_secret(Name=name, SecretString=value)
        names.append(name)
        return name

    yield put
    for name in names:
        client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def test_secrets_manager_paths_show_no_secret(fake, tmp_path, caplog, secret_store):
    good = secret_store("ml-demo/ig-good", json.dumps(
        {"ig_identifier": fake.identifier, "ig_password": PASSWORD, "ig_api_key": API_KEY}))  # fmt: skip
    bad = [secret_store("ml-demo/ig-incomplete", json.dumps({"ig_identifier": "me", "ig_password": PASSWORD})),
           secret_store("ml-demo/ig-not-json", f"password={PASSWORD} key={API_KEY}"),
           "ml-demo/nope"]  # fmt: skip
    caplog.set_level(logging.DEBUG)  # botocore logs response bodies at DEBUG: theirs must not get through
    caplog.clear()  # (creating the secrets above logged their values: the test's doing, not the streamer's)
    stats, error = stream_in_process(fake, tmp_path / "a", market(8), environ={},
                                     config_extra={"ML_DEMO__IG__SECRET_NAME": good})  # fmt: skip
    assert error is None and stats.batches_written == 1
    errors = [stream_in_process(fake, tmp_path / "b", [], environ={},
                                config_extra={"ML_DEMO__IG__SECRET_NAME": name})[1] for name in bad]  # fmt: skip
    assert all(e is not None for e in errors)
    assert "GetSecretValue" in caplog.text  # botocore's debug log was on, and read
    assert_nowhere(fake, log=log_text(caplog), batch=batch_bytes(tmp_path / "a"),
                   exceptions="".join(exception_text(e) for e in errors))  # fmt: skip


def run_cli(fake: FakeIG, store, *args, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, **config_env(fake), **ig_env(fake), **env}
    proc = subprocess.Popen([*CLI, "stream", "--source", "ig", "--store", str(store), *args], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    return proc


@pytest.mark.slow
def test_cli_outputs_show_no_secret(fake, tmp_path, moto_endpoint, secret_store):
    # (The CLI's refusals of a wrong password or API key: test_ig_cli.py, which checks their
    # output for the secrets too.)
    outputs = []
    name = secret_store("ml-demo/ig-cli", json.dumps(
        {"ig_identifier": fake.identifier, "ig_password": PASSWORD, "ig_api_key": API_KEY}))  # fmt: skip
    proc = run_cli(fake, tmp_path / "store", "--max-batches", "1", "--batch-size", "5", IG_PASSWORD="", IG_API_KEY="",
                   ML_DEMO__IG__SECRET_NAME=name, AWS_ENDPOINT_URL=moto_endpoint)  # fmt: skip
    fake.wait_subscribed(process=proc)
    fake.send_many(market(10))
    outputs.append("".join(proc.communicate(timeout=60)))
    assert proc.returncode == 0, outputs[-1]
    assert "credentials from secret 'ml-demo/ig-cli'" in outputs[-1]
    assert_nowhere(fake, cli="\n".join(outputs), batch=batch_bytes(tmp_path / "store"))


@pytest.mark.slow
def test_dagster_metadata_of_an_ig_batch_shows_no_secret(fake, tmp_path, monkeypatch):
    import dagster as dg

    from ml_demo_dagster.defs.ingest.assets import raw_deals, raw_ticks
    from ml_demo_dagster.defs.resources import ProjectConfigResource, StoreResource

    stats, error = stream_in_process(fake, tmp_path, market(10))
    assert error is None
    [batch_id] = stats.batch_ids
    for name, value in {**config_env(fake), **ig_env(fake)}.items():
        monkeypatch.setenv(name, value)  # the run sees what the streamer saw
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", [batch_id])
    result = dg.materialize(
        [raw_ticks, raw_deals], partition_key=batch_id, instance=instance,
        resources={"store": StoreResource(url=str(tmp_path)), "project": ProjectConfigResource()},
    )  # fmt: skip
    assert result.success
    metadata = [e.materialization.metadata for e in result.get_asset_materialization_events()]
    checks = result.get_asset_check_evaluations()
    assert len(metadata) == 2 and metadata[0]["rows"].value > 0 and len(checks) == 4
    assert_nowhere(fake, metadata=repr(metadata) + repr(checks), events=repr(result.all_events))
