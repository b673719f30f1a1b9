"""IG credentials and the REST login that opens a streaming session (DESIGN §2).

Credentials come from the environment (IG_IDENTIFIER, IG_PASSWORD, IG_API_KEY) or, when
`ig.secret_name` is set, from that AWS Secrets Manager secret (keys ig_identifier,
ig_password, ig_api_key; boto3 is imported only on that path). The login is IG's
`POST <base_url>/session`, version 2, with the API key in `X-IG-API-KEY`; the answer's
`CST` and `X-SECURITY-TOKEN` headers make the Lightstreamer password and its body names the
Lightstreamer endpoint.

The password, the API key and the two session tokens are held in `Secret`, whose repr and
str are `***`: printing, logging or formatting one never shows its value, and only the
two places that must send a value call `reveal()`. Errors are one line that names what
went wrong (the URL, the HTTP status, IG's error code, the missing variable or key) and
never a secret; exceptions are raised `from None`, so no underlying one rides along.
No Dagster imports.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from streamer.sources.base import SourceError

ENV_NAMES = ("IG_IDENTIFIER", "IG_PASSWORD", "IG_API_KEY")
SECRET_KEYS = ("ig_identifier", "ig_password", "ig_api_key")

# IG's error codes that say the credentials themselves are wrong, and what to tell the user.
_HINTS = {
    "error.security.invalid-details": "wrong identifier or password",
    "error.security.api-key-invalid": "wrong API key, or a demo key used on the live API (or the other way round)",
    "error.security.api-key-disabled": "the API key is disabled",
    "error.security.api-key-revoked": "the API key was revoked",
    "error.security.account-suspended": "the account is suspended",
    "error.security.account-not-yet-activated": "the account is not yet activated",
    "error.security.too-many-failed-attempts": "too many failed logins; IG has locked the account for a while",
    "error.public-api.exceeded-api-key-allowance": "the API key's request allowance is used up",
    "error.public-api.exceeded-account-allowance": "the account's request allowance is used up",
}
_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,80}$")


class Secret:
    """A value that must not be shown: repr, str and format give `***`; `reveal()` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):
        raise TypeError("a Secret is not pickled")


class IGError(SourceError):
    """The IG feed cannot be had: credentials missing or refused, or the feed lost for good."""


class IGCredentialsError(IGError):
    """The credentials cannot be read (a variable unset, the secret unreadable or incomplete)."""


class IGLoginRefused(IGError):
    """IG answered the login with a refusal: trying again with the same credentials is useless."""


class IGLoginFailed(IGError):
    """The login did not get an answer (network, timeout, IG unavailable): worth another try."""


@dataclass(frozen=True)
class Credentials:
    identifier: str
    password: Secret
    api_key: Secret
    origin: str  # where they came from, for messages: "the environment" or "secret 'name'"


@dataclass(frozen=True)
class IGSession:
    """What a login gives: the two tokens and where to stream from."""

    cst: Secret
    security_token: Secret
    lightstreamer_endpoint: str

    def streaming_password(self) -> Secret:
        """The Lightstreamer password IG expects: `CST-<cst>|XST-<token>`."""
        return Secret(f"CST-{self.cst.reveal()}|XST-{self.security_token.reveal()}")


def load_credentials(secret_name: str, region: str, environ: Mapping[str, str] | None = None) -> Credentials:
    """The IG credentials: from the secret when `secret_name` is set, else from the environment."""
    if secret_name:
        return _from_secret(secret_name, region)
    environ = os.environ if environ is None else environ
    missing = [name for name in ENV_NAMES if not environ.get(name)]
    if missing:
        raise IGCredentialsError(
            f"IG credentials: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set "
            f"(set {', '.join(ENV_NAMES)}, or ig.secret_name to read them from AWS Secrets Manager)"
        )
    return Credentials(
        identifier=environ["IG_IDENTIFIER"],
        password=Secret(environ["IG_PASSWORD"]),
        api_key=Secret(environ["IG_API_KEY"]),
        origin="the environment",
    )


class _Drop(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextmanager
def _botocore_bodies_unlogged():
    """botocore logs every response body at DEBUG (botocore.parsers): with a secret's value
    in it, that record must not reach any handler, whatever the process's log level."""
    logger, drop = logging.getLogger("botocore.parsers"), _Drop()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _from_secret(name: str, region: str) -> Credentials:
    import boto3  # only here: the environment path and the rest of the streamer never load boto3
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"IG credentials: AWS Secrets Manager secret {name!r} ({region})"
    try:
        with _botocore_bodies_unlogged():
            answer = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=name)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "error")
        raise IGCredentialsError(f"{where}: cannot be read: {code}") from None
    except BotoCoreError as e:
        raise IGCredentialsError(f"{where}: cannot be read: {type(e).__name__}") from None
    text = answer.get("SecretString")
    if text is None:
        raise IGCredentialsError(
            f"{where}: has no text value (a binary secret); expected JSON with keys {', '.join(SECRET_KEYS)}"
        )
    try:
        values = json.loads(text)
    except ValueError:
        values = None
    if not isinstance(values, dict):
        raise IGCredentialsError(f"{where}: is not a JSON object; expected keys {', '.join(SECRET_KEYS)}")
    missing = [k for k in SECRET_KEYS if not isinstance(values.get(k), str) or not values[k]]
    if missing:
        raise IGCredentialsError(f"{where}: {', '.join(missing)} missing or empty")
    return Credentials(
        identifier=values["ig_identifier"],
        password=Secret(values["ig_password"]),
        api_key=Secret(values["ig_api_key"]),
        origin=f"secret {name!r}",
    )


def _ig_error_code(body: bytes) -> str | None:
    """IG's `errorCode` from an error answer, when it is one (and looks like a code)."""
    try:
        code = json.loads(body.decode("utf-8", "replace")).get("errorCode")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) and _SAFE_CODE.match(code) else None


def login(base_url: str, credentials: Credentials, timeout: float) -> IGSession:
    """IG's REST login (version 2). Raises IGLoginRefused or IGLoginFailed, one line each."""
    url = base_url.rstrip("/") + "/session"
    body = json.dumps({"identifier": credentials.identifier, "password": credentials.password.reveal()})
    request = urllib.request.Request(
        url,
        data=body.encode("utf-8"),
        method="POST",
        headers={
            "X-IG-API-KEY": credentials.api_key.reveal(),
            "Version": "2",
            "Content-Type": "application/json; charset=UTF-8",
            "Accept": "application/json; charset=UTF-8",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            headers, data = answer.headers, answer.read()
    except urllib.error.HTTPError as e:
        try:
            status, code = e.code, _ig_error_code(e.read())
        except OSError:
            status, code = e.code, None
        finally:
            e.close()
        said = f"HTTP {status}" + (f" {code}" if code else "")
        if status in (404, 405):
            hint = "no IG login there: is ig.base_url IG's REST API?"
            raise IGLoginRefused(f"IG login refused at {url}: {said} ({hint})") from None
        if status in (400, 401, 403) or (code and code in _HINTS):
            hint = _HINTS.get(code or "", "")
            raise IGLoginRefused(f"IG login refused at {url}: {said}" + (f" ({hint})" if hint else "")) from None
        raise IGLoginFailed(f"IG login at {url} failed: {said}") from None
    except urllib.error.URLError as e:
        reason = e.reason.strerror if isinstance(e.reason, OSError) and e.reason.strerror else str(e.reason)
        raise IGLoginFailed(f"IG login at {url} failed: {reason}") from None
    except TimeoutError:
        raise IGLoginFailed(f"IG login at {url} failed: no answer within {timeout:g} s") from None
    except OSError as e:
        raise IGLoginFailed(f"IG login at {url} failed: {e.strerror or type(e).__name__}") from None
    cst, token = headers.get("CST"), headers.get("X-SECURITY-TOKEN")
    if not cst or not token:
        raise IGLoginFailed(f"IG login at {url}: the answer has no CST and X-SECURITY-TOKEN headers")
    try:
        endpoint = json.loads(data.decode("utf-8")).get("lightstreamerEndpoint")
    except (ValueError, AttributeError):
        endpoint = None
    if not isinstance(endpoint, str) or not re.match(r"^https?://\S+$", endpoint):
        raise IGLoginFailed(f"IG login at {url}: the answer names no lightstreamerEndpoint URL")
    return IGSession(cst=Secret(cst), security_token=Secret(token), lightstreamer_endpoint=endpoint.rstrip("/"))
