"""The local endpoint: the champion model behind SageMaker's inference container contract.

The aws target serves from a SageMaker endpoint; the local target serves here, with the
same contract (DESIGN §4.4), so a client cannot tell them apart:

- `GET /ping`: 200 when a champion model is loaded, else 503 with the reason;
- `POST /invocations` with `Content-Type: text/csv`, one row of feature_dim numbers per
  line (linear-learner's JSON request, `{"instances": [{"features": [...]}]}`, is accepted
  too) -> `{"predictions": [{"score": s, "predicted_label": 0|1}, ...]}`, like
  linear-learner's binary classifier;
- every bad request is answered, never dropped: 400 with the reason (wrong content type,
  empty or oversize body, which row has how many values, which value is not a finite
  number, a JSON number too large for a float, a malformed body framing), 404 for an
  unknown path, 405 (with Allow) for a wrong method, 500 with the reason should the model
  fail; a connection the server must close is closed without losing the answer.

The endpoint follows the champion pointer in the store (`models/champion.json`, written
atomically by the registry): it re-reads that small object at most every
`refresh_seconds`, on the next request, and loads the new model when the version changed,
so a promotion is picked up without a restart. A champion that fails to load leaves the
previous one serving, and /ping says why. Standard library HTTP server, one thread per
connection, bound to 127.0.0.1 unless told otherwise. No Dagster, Spark or AWS imports.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ml_demo_dagster.core.registry import CHAMPION_KEY, Champion, ModelRegistry, RegistryError
from ml_demo_dagster.core.store import ObjectStore, StoreError

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024 * 1024
CSV_TYPES = ("text/csv",)
JSON_TYPES = ("application/json",)
ROUTES = {"/ping": ("GET",), "/invocations": ("POST",)}
_LINGER_SECONDS = 5.0  # how long a closing connection's unread request is drained (see shutdown_request)


class BadRequest(ValueError):
    """The request cannot be scored; the message says exactly why (answered with 400)."""


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


@functools.lru_cache(maxsize=4)
def _csv_options(feature_dim: int) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions]:
    names = [f"f{i}" for i in range(feature_dim)]
    return (
        pacsv.ReadOptions(column_names=names, use_threads=False),
        # Stricter than the reference parser: no quotes, no blank lines skipped, nothing
        # read as missing (a bare CR ending a line is caught by counting lines below).
        pacsv.ParseOptions(quote_char=False, double_quote=False, escape_char=False, ignore_empty_lines=False),
        pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.float64()),
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def parse_csv(body: bytes, feature_dim: int) -> np.ndarray:
    """Rows of comma-separated numbers -> float64 [n, feature_dim]; BadRequest names row and value.

    Arrow's CSV reader reads a good body several times faster than Python (BENCHMARKS.md,
    Endpoint). Whatever it does not read to exactly the reference's rows of finite numbers
    goes to `parse_csv_reference`, which defines what is valid and finds the row and value
    to report; a test checks that the two agree on arbitrary input."""
    lines = body.count(b"\n") + (not body.endswith(b"\n"))
    try:
        table = pacsv.read_csv(io.BytesIO(body), *_csv_options(feature_dim))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return parse_csv_reference(body, feature_dim)
    if table.num_rows != lines or not lines:
        return parse_csv_reference(body, feature_dim)
    X = np.empty((table.num_rows, feature_dim), dtype=np.float64)
    for j, column in enumerate(table.columns):
        X[:, j] = column.to_numpy()
    if not np.isfinite(X).all():
        return parse_csv_reference(body, feature_dim)
    return X


def parse_csv_reference(body: bytes, feature_dim: int) -> np.ndarray:
    """The reference parser, a row at a time: what is valid, and why not (row and value)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not UTF-8 text (byte {e.start})") from None
    lines = text.split("\n")
    if lines and lines[-1].strip() == "":
        lines.pop()  # the final newline
    if not lines:
        raise BadRequest(f"empty body: send one line of {feature_dim} comma-separated numbers per prediction")
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


def _finite_float(v: Any) -> float | None:
    """v as a finite float, or None (bools, strings, lists, NaN, infinities, huge integers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)  # an integer beyond float's range raises OverflowError
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def parse_json(body: bytes, feature_dim: int) -> np.ndarray:
    """linear-learner's JSON request: {"instances": [{"features": [...]}, ...]}."""
    if not body.strip():
        raise BadRequest('empty body: send {"instances": [{"features": [...]}, ...]}')
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise BadRequest("the body is not valid JSON: nested too deeply") from None
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
        row = X[i]
        for j, v in enumerate(values):
            f = _finite_float(v)
            if f is None:
                shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
                why = (
                    "too large for a float" if isinstance(v, int) and not isinstance(v, bool) else "not a finite number"
                )
                raise BadRequest(f"instance {i + 1}, value {j + 1}: {shown} is {why}")
            row[j] = f
    return X


class _Handler(BaseHTTPRequestHandler):
    """One connection: requests answered in turn (keep-alive), every one of them answered."""

    server: EndpointServer
    protocol_version = "HTTP/1.1"
    server_version = "ml-demo-endpoint/1"
    timeout = 60  # seconds a connection may sit idle, or stall mid-request, before it is closed

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def __getattr__(self, name: str) -> Any:
        # http.server looks up do_<METHOD> and answers 501 when there is none: here every
        # method reaches the router, which answers 404 or 405 with the reason.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    # Answering ---------------------------------------------------------------------------

    def _send(self, status: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(doc).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        if status >= 500:
            self.close_connection = True
        self._send(status, {"error": message}, headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a malformed request line or header): JSON like ours."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self.request_version = "HTTP/1.1"  # a garbled request line leaves HTTP/0.9: no status line
        reason = message or self.responses.get(code, ("error",))[0]
        self._send(code, {"error": f"{reason}{': ' + explain if explain else ''}"})

    # Routing -----------------------------------------------------------------------------

    def _route_problem(self) -> tuple[int, str, dict[str, str]] | None:
        path = self.path.split("?", 1)[0]
        allowed = ROUTES.get(path)
        if allowed is None:
            return HTTPStatus.NOT_FOUND, f"no such path {path!r}: use GET /ping or POST /invocations", {}
        if self.command not in allowed:
            return (
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{self.command} is not allowed on {path}: use {' or '.join(allowed)}",
                {"Allow": ", ".join(allowed)},
            )
        return None

    def handle_expect_100(self) -> bool:
        # A client that asks first (curl does, for bodies over 1 MB) is told at once when
        # the request cannot succeed, before it sends the body.
        problem = self._route_problem()
        if problem is None:
            try:
                self._content_length()
            except BadRequest as e:
                problem = HTTPStatus.BAD_REQUEST, str(e), {}
        if problem is not None:
            self.close_connection = True
            self._error(*problem)
            return False
        return super().handle_expect_100()

    def _handle(self) -> None:
        try:
            body_problem = None
            try:
                body = self._read_body()  # first, so the connection stays in step whatever the answer
            except BadRequest as e:
                body, body_problem = b"", e
            route_problem = self._route_problem()
            if route_problem is not None:
                self._error(*route_problem)
            elif body_problem is not None:
                self._error(HTTPStatus.BAD_REQUEST, str(body_problem))
            elif self.command == "GET":
                self._ping()
            else:
                self._invocations(body)
        except BadRequest as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
        except Exception as e:  # a bug or a failing model: answered, never a dropped connection
            log.exception("error answering %s %s", self.command, self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(e).__name__}: {e}")

    # The body ----------------------------------------------------------------------------

    def _unframed(self, message: str) -> BadRequest:
        """A body whose end cannot be known: answer, then close the connection."""
        self.close_connection = True
        return BadRequest(message)

    def _content_length(self) -> int | None:
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return None
        text = values[0].strip()
        if not text.isdigit() or any(v.strip() != text for v in values):
            raise self._unframed(f"bad Content-Length {', '.join(values)!r}")
        n = int(text)
        if n > self.server.max_body_bytes:
            raise self._unframed(
                f"body of {n:,} bytes is over the limit of {self.server.max_body_bytes:,}; send fewer rows per request"
            )
        return n

    def _read_body(self) -> bytes:
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise self._unframed(f"unsupported Transfer-Encoding {encoding!r}: send chunked or a Content-Length")
            return self._read_chunked()
        n = self._content_length()
        if not n:
            return b""
        try:
            body = self.rfile.read(n)
        except TimeoutError:
            raise self._unframed(f"timed out after {self.timeout} s reading a body of {n:,} bytes") from None
        if len(body) < n:
            raise self._unframed(f"the body ended after {len(body):,} of {n:,} bytes (Content-Length)")
        return body

    def _read_chunked(self) -> bytes:
        chunks, total = [], 0
        try:
            while True:
                line = self.rfile.readline(1024)
                size_text = line.split(b";", 1)[0].strip()
                if not line.endswith(b"\n") or not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                    raise self._unframed(f"bad chunk size line {line[:40]!r}")
                size = int(size_text, 16)
                if size == 0:
                    break
                total += size
                if total > self.server.max_body_bytes:
                    raise self._unframed(
                        f"body over the limit of {self.server.max_body_bytes:,} bytes; send fewer rows per request"
                    )
                data = self.rfile.read(size)
                if len(data) < size or self.rfile.readline(3).rstrip(b"\r\n"):
                    raise self._unframed("a chunk ended early or without its line end")
                chunks.append(data)
            while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):  # trailers, ignored
                pass
        except TimeoutError:
            raise self._unframed(f"timed out after {self.timeout} s reading a chunked body") from None
        return b"".join(chunks)

    # The two routes ----------------------------------------------------------------------

    def _ping(self) -> None:
        champion, problem = self.server.watcher.current()
        if champion is None:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "unavailable", "reason": problem})
            return
        doc = {"status": "ok", "model_version": champion.version, "feature_dim": champion.model.feature_dim}
        if problem:
            doc["warning"] = problem
        self._send(HTTPStatus.OK, doc, {"X-Model-Version": champion.version})

    def _invocations(self, body: bytes) -> None:
        media = _media_type(self.headers.get("Content-Type"))
        if media not in CSV_TYPES + JSON_TYPES:
            shown = self.headers.get("Content-Type") or "none"
            raise BadRequest(
                f"unsupported content type {shown!r}: send text/csv (one row of numbers per line) or application/json"
            )
        champion, problem = self.server.watcher.current()
        if champion is None:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, problem or "no champion model")
            return
        model = champion.model
        X = (parse_csv if media in CSV_TYPES else parse_json)(body, model.feature_dim)
        scores, labels = model.predict(X)
        predictions = [
            {"score": s, "predicted_label": p} for s, p in zip(scores.tolist(), labels.tolist(), strict=True)
        ]
        self._send(HTTPStatus.OK, {"predictions": predictions}, {"X-Model-Version": champion.version})


class EndpointServer(ThreadingHTTPServer):
    """A threading HTTP server that serves the store's champion."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], watcher: ChampionWatcher, max_body_bytes: int = MAX_BODY_BYTES):
        self.watcher = watcher
        self.max_body_bytes = max_body_bytes
        self._thread: threading.Thread | None = None
        super().__init__(address, _Handler)

    def shutdown_request(self, request: socket.socket) -> None:
        """Close a connection without losing the answer: a lingering close.

        When the server closes first (a body it would not read, an error that ends the
        connection), unread request bytes make the kernel send a reset, and a client still
        sending can lose the answer already sent. So: end our side, read and drop what the
        client still sends (for a few seconds at most), then close."""
        try:
            request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER_SECONDS
            drained = 0
            while drained < 2 * self.max_body_bytes and (left := deadline - time.monotonic()) > 0:
                request.settimeout(left)
                data = request.recv(65536)
                if not data:
                    break
                drained += len(data)
        except OSError:  # the client is gone, or took too long: nothing more to do
            pass
        self.close_request(request)

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
    store: ObjectStore,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    refresh_seconds: float = 1.0,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> EndpointServer:
    """An endpoint bound to host:port (port 0: any free port) that serves the store's champion."""
    return EndpointServer((host, port), ChampionWatcher(ModelRegistry(store), refresh_seconds), max_body_bytes)
