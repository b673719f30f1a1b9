"""The local endpoint: the champion model behind SageMaker's inference container contract.

The aws target serves from a SageMaker endpoint; the local target serves here, with the
same contract (DESIGN §4.4), so a client cannot tell them apart:

- `GET /ping`: 200 when a champion model is loaded, else 503 with the reason;
- `POST /invocations` with `Content-Type: text/csv`, one row of feature_dim numbers per
  line (linear-learner's JSON request, `{"instances": [{"features": [...]}]}`, is accepted
  too) -> `{"predictions": [{"score": s, "predicted_label": 0|1}, ...]}`, like
  linear-learner's binary classifier;
- bad input gets 400 (which row, how many values, which value is not a number), an
  unsupported content type 415, a body that is too large 413; nothing is half-answered.

The endpoint follows the champion pointer in the store (`models/champion.json`, written
atomically by the registry): it re-reads that small object at most every
`refresh_seconds`, on the next request, and loads the new model when the version changed,
so a promotion is picked up without a restart. A champion that fails to load leaves the
previous one serving, and /ping says why. Standard library HTTP server, one thread per
connection. No Dagster, Spark or AWS imports.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from ml_demo_dagster.core.registry import CHAMPION_KEY, Champion, ModelRegistry, RegistryError
from ml_demo_dagster.core.store import ObjectStore, StoreError

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024 * 1024
CSV_TYPES = ("text/csv",)
JSON_TYPES = ("application/json",)


class BadRequest(ValueError):
    """The request body cannot be scored; the message says exactly why."""


class ChampionWatcher:
    """The current champion, re-checked in the store at most every `refresh_seconds`."""

    def __init__(self, registry: ModelRegistry, refresh_seconds: float = 1.0, clock=time.monotonic):
        self.registry = registry
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._champion: Champion | None = None
        self._checked_at: float | None = None
        self._problem: str | None = None

    def current(self) -> tuple[Champion | None, str | None]:
        """(champion or None, why there is none or what went wrong loading a newer one)."""
        with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self.refresh_seconds:
                self._checked_at = now
                self._refresh()
            return self._champion, self._problem

    def _refresh(self) -> None:
        where = self.registry.store.uri(CHAMPION_KEY)
        try:
            pointer = self.registry.champion_pointer()
            if pointer is None:
                self._champion = None
                self._problem = f"no champion model yet ({where} does not exist)"
                return
            if self._champion is not None and self._champion.version == pointer["version"]:
                self._problem = None
                return
            model = self.registry.load(pointer["version"])
            self._champion = Champion(
                version=pointer["version"],
                model=model,
                record=pointer.get("record") or {},
                promoted_at=float(pointer.get("promoted_at") or 0.0),
            )
            self._problem = None
            log.info("serving model version %s", pointer["version"])
        except (RegistryError, StoreError) as e:
            # Keep serving what is loaded; say why the newer champion is not.
            self._problem = f"cannot load the champion: {e}"
            log.warning("%s", self._problem)


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _bad_value(parts: list[str], row: int) -> BadRequest:
    for column, text in enumerate(parts, 1):
        try:
            value = float(text)
        except ValueError:
            shown = text.strip()[:40]
            return BadRequest(f"row {row}, value {column}: {shown!r} is not a number")
        if not math.isfinite(value):
            return BadRequest(f"row {row}, value {column}: {text.strip()!r} is not a finite number")
    return BadRequest(f"row {row}: cannot read the values")


def parse_csv(body: bytes, feature_dim: int) -> np.ndarray:
    """Rows of comma-separated numbers -> float64 [n, feature_dim]; BadRequest names row and value."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not UTF-8 text (byte {e.start})") from None
    lines = text.split("\n")
    if lines and lines[-1].strip() == "":
        lines.pop()  # the final newline
    if not lines:
        raise BadRequest(f"no rows: send one line of {feature_dim} comma-separated numbers per prediction")
    X = np.empty((len(lines), feature_dim), dtype=np.float64)
    for i, line in enumerate(lines):
        parts = line.rstrip("\r").split(",")
        if len(parts) != feature_dim:
            if line.strip() == "":
                raise BadRequest(f"row {i + 1} is empty; expected {feature_dim} values")
            raise BadRequest(f"row {i + 1} has {len(parts)} values; expected {feature_dim}")
        try:
            X[i] = np.asarray(parts, dtype=np.float64)
        except ValueError:
            raise _bad_value(parts, i + 1) from None
        if not np.isfinite(X[i]).all():
            raise _bad_value(parts, i + 1)
    return X


def parse_json(body: bytes, feature_dim: int) -> np.ndarray:
    """linear-learner's JSON request: {"instances": [{"features": [...]}, ...]}."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    instances = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(instances, list) or not instances:
        raise BadRequest('expected {"instances": [{"features": [...]}, ...]} with at least one instance')
    X = np.empty((len(instances), feature_dim), dtype=np.float64)
    for i, item in enumerate(instances):
        values = item.get("features") if isinstance(item, dict) else item
        if not isinstance(values, list):
            raise BadRequest(f'instance {i + 1}: expected {{"features": [{feature_dim} numbers]}}')
        if len(values) != feature_dim:
            raise BadRequest(f"instance {i + 1} has {len(values)} values; expected {feature_dim}")
        for j, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise BadRequest(f"instance {i + 1}, value {j + 1}: {v!r} is not a finite number")
        X[i] = values
    return X


class _Handler(BaseHTTPRequestHandler):
    server: EndpointServer
    protocol_version = "HTTP/1.1"
    server_version = "ml-demo-endpoint/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, doc: dict[str, Any], version: str | None = None) -> None:
        body = json.dumps(doc).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if version:
            self.send_header("X-Model-Version", version)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: HTTPStatus, message: str) -> None:
        if status >= 500 or status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
            self.close_connection = True
        self._send(status, {"error": message})

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.split("?", 1)[0] != "/ping":
            self._error(HTTPStatus.NOT_FOUND, f"no such path {self.path!r}: use GET /ping or POST /invocations")
            return
        champion, problem = self.server.watcher.current()
        if champion is None:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "unavailable", "reason": problem})
            return
        doc = {"status": "ok", "model_version": champion.version, "feature_dim": champion.model.feature_dim}
        if problem:
            doc["warning"] = problem
        self._send(HTTPStatus.OK, doc, champion.version)

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._error(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length (chunked is not supported)")
            return None
        if length is None:
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
            return None
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}")
            return None
        if n > MAX_BODY_BYTES:
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {n} bytes exceeds the limit of {MAX_BODY_BYTES}; send fewer rows per request",
            )
            return None
        return self.rfile.read(n)

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != "/invocations":
            self._error(HTTPStatus.NOT_FOUND, f"no such path {self.path!r}: use GET /ping or POST /invocations")
            return
        body = self._read_body()
        if body is None:
            return
        media = _media_type(self.headers.get("Content-Type"))
        if media not in CSV_TYPES + JSON_TYPES:
            shown = self.headers.get("Content-Type") or "none"
            self._error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"unsupported content type {shown!r}: send text/csv (one row of numbers per line) or application/json",
            )
            return
        champion, problem = self.server.watcher.current()
        if champion is None:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, problem or "no champion model")
            return
        model = champion.model
        try:
            parse = parse_csv if media in CSV_TYPES else parse_json
            X = parse(body, model.feature_dim)
        except BadRequest as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
            return
        scores, labels = model.predict(X)
        predictions = [{"score": float(s), "predicted_label": int(p)} for s, p in zip(scores, labels, strict=False)]
        self._send(HTTPStatus.OK, {"predictions": predictions}, champion.version)


class EndpointServer(ThreadingHTTPServer):
    """A threading HTTP server that serves the store's champion."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], watcher: ChampionWatcher):
        self.watcher = watcher
        self._thread: threading.Thread | None = None
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> EndpointServer:
        """Serve on a background thread (for tests and in-process use)."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="ml-demo-endpoint", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()


def make_server(
    store: ObjectStore, host: str = "127.0.0.1", port: int = 8080, *, refresh_seconds: float = 1.0
) -> EndpointServer:
    """An endpoint bound to host:port (port 0: any free port) that serves the store's champion."""
    return EndpointServer((host, port), ChampionWatcher(ModelRegistry(store), refresh_seconds))
