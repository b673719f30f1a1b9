"""IG credentials (environment, AWS Secrets Manager on moto) and the REST login, against the
loopback IG fake: what is sent, what is read back, and one clear line for every failure."""

from __future__ import annotations

import json
import socket

import boto3
import pytest
from ig_fakes import FakeIG

from streamer.sources.ig_login import (
    Credentials,
    IGCredentialsError,
    IGLoginFailed,
    IGLoginRefused,
    Secret,
    load_credentials,
    login,
)

REGION = "eu-west-2"


@pytest.fixture
def fake():
    with FakeIG() as f:
        yield f


def creds(fake: FakeIG, **override) -> Credentials:
    values = {"identifier": fake.identifier, "password": fake.password, "api_key": fake.api_key, **override}
    return Credentials(values["identifier"], Secret(values["password"]), Secret(values["api_key"]), "test")


def test_login_is_version_2_with_the_api_key_and_reads_tokens_and_endpoint(fake):
    session = login(fake.rest_url, creds(fake), timeout=5)
    [seen] = fake.logins
    assert seen.headers["x-ig-api-key"] == fake.api_key and seen.headers["version"] == "2"
    assert seen.headers["content-type"].startswith("application/json")
    assert seen.body == {"identifier": fake.identifier, "password": fake.password}
    assert (session.cst.reveal(), session.security_token.reveal()) == (seen.cst, seen.token)
    assert session.lightstreamer_endpoint == fake.ls_url
    assert session.streaming_password().reveal() == f"CST-{seen.cst}|XST-{seen.token}"


def test_a_base_url_with_a_trailing_slash_works(fake):
    login(fake.rest_url + "/", creds(fake), timeout=5)
    assert fake.logins[0].status == 200


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"password": "not-the-password"}, "HTTP 401 error.security.invalid-details (wrong identifier or password)"),
        ({"identifier": "someone-else"}, "HTTP 401 error.security.invalid-details (wrong identifier or password)"),
        ({"api_key": "not-the-key"}, "HTTP 403 error.security.api-key-invalid (wrong API key"),
    ],
)
def test_wrong_credentials_are_refused_in_one_line_without_secrets(fake, override, expected):
    given = creds(fake, **override)
    with pytest.raises(IGLoginRefused) as caught:
        login(fake.rest_url, given, timeout=5)
    message = str(caught.value)
    assert message.startswith(f"IG login refused at {fake.rest_url}/session: ") and expected in message
    assert "\n" not in message
    for secret in (given.password.reveal(), given.api_key.reveal(), fake.password, fake.api_key):
        assert secret not in message and secret not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_ig_unavailable_is_a_failure_worth_retrying(fake):
    fake.rest_down = True
    with pytest.raises(IGLoginFailed, match=r"failed: HTTP 503 system.error$"):
        login(fake.rest_url, creds(fake), timeout=5)


def test_nothing_listening_is_a_failure_worth_retrying():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again at once: nothing listens there
    with pytest.raises(IGLoginFailed, match=rf"IG login at http://127.0.0.1:{port}/session failed: .*refused"):
        login(f"http://127.0.0.1:{port}", creds(FakeIG()), timeout=5)


def test_an_answer_without_tokens_is_a_clear_error(fake):
    fake.omit_tokens = True
    with pytest.raises(IGLoginFailed, match=r"/session: the answer has no CST and X-SECURITY-TOKEN headers$"):
        login(fake.rest_url, creds(fake), timeout=5)


def test_a_wrong_base_url_says_what_answered(fake):
    with pytest.raises(
        IGLoginRefused, match=rf"at {fake.ls_url}/session: HTTP 404 \(no IG login there: is ig.base_url"
    ):
        login(fake.ls_url, creds(fake), timeout=5)


def test_secret_hides_its_value_everywhere_but_reveal():
    s = Secret("hunter2")
    assert "hunter2" not in f"{s} {s!r} {s:>20} {[s]} {Credentials('u', s, s, 'x')}"
    assert s.reveal() == "hunter2"
    with pytest.raises(TypeError):
        __import__("pickle").dumps(s)


# -- credentials -------------------------------------------------------------------------


def test_credentials_from_the_environment():
    c = load_credentials("", REGION, {"IG_IDENTIFIER": "me", "IG_PASSWORD": "pw", "IG_API_KEY": "key"})
    assert (c.identifier, c.password.reveal(), c.api_key.reveal(), c.origin) == ("me", "pw", "key", "the environment")


def test_missing_environment_variables_are_named():
    with pytest.raises(IGCredentialsError) as caught:
        load_credentials("", REGION, {"IG_IDENTIFIER": "me", "IG_PASSWORD": ""})
    assert str(caught.value).startswith("IG credentials: IG_PASSWORD, IG_API_KEY are not set (set IG_IDENTIFIER")


@pytest.fixture
def secrets(s3_env):
    client = boto3.client("secretsmanager", region_name=REGION)
    created = []

    def put(name: str, value: str) -> str:
        client.create_secret(Name=name, SecretString=value)
        created.append(name)
        return name

    yield put
    for name in created:
        client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def test_credentials_from_secrets_manager_win_over_the_environment(secrets):
    name = secrets("ig/creds-ok", json.dumps({"ig_identifier": "me", "ig_password": "pw!", "ig_api_key": "k3y"}))
    c = load_credentials(name, REGION, {"IG_IDENTIFIER": "env", "IG_PASSWORD": "env", "IG_API_KEY": "env"})
    assert (c.identifier, c.password.reveal(), c.api_key.reveal()) == ("me", "pw!", "k3y")
    assert c.origin == "secret 'ig/creds-ok'"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (json.dumps({"ig_identifier": "me", "ig_password": "pw-in-secret"}), "ig_api_key missing or empty"),
        (json.dumps({"ig_identifier": "me", "ig_password": "", "ig_api_key": "k"}), "ig_password missing or empty"),
        ("pw-in-secret and not JSON", "is not a JSON object; expected keys ig_identifier, ig_password, ig_api_key"),
        (json.dumps(["pw-in-secret"]), "is not a JSON object"),
    ],
)
def test_a_bad_secret_is_named_and_its_value_never_shown(secrets, value, expected):
    name = secrets("ig/creds-bad", value)
    with pytest.raises(IGCredentialsError) as caught:
        load_credentials(name, REGION)
    assert str(caught.value).startswith(f"IG credentials: AWS Secrets Manager secret {name!r} ({REGION}): ")
    assert expected in str(caught.value) and "pw-in-secret" not in str(caught.value)


def test_a_missing_secret_is_named(s3_env):
    with pytest.raises(IGCredentialsError, match=r"secret 'ig/nope' \(eu-west-2\): cannot be read: ResourceNotFound"):
        load_credentials("ig/nope", REGION)
