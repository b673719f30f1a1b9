"""A fault-injecting HTTP proxy in front of moto's server, for S3 retry tests.

It listens on 127.0.0.1 (a free port), forwards every request to the upstream server, and
answers chosen requests itself with S3's error responses instead: 503 SlowDown (throttling),
500 InternalError, 503 ServiceUnavailable. `fail(n, ...)` arms the next n matching requests;
`log` records what arrived and what was injected, with arrival times.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

ERRORS = {
    "SlowDown": (503, "Please reduce your request rate."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "ServiceUnavailable": (503, "Service is unable to handle request."),
}
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Arrival:
    at: float
    method: str
    path: str
    injected: str | None


@dataclass
class _Plan:
    remaining: int
    code: str
    match: Callable[[str, str], bool]


@dataclass
class FaultProxy:
    upstream: str
    log: list[Arrival] = field(default_factory=list)

    def __post_init__(self):
        self._plans: list[_Plan] = []
        self._lock = threading.Lock()
        target = urlparse(self.upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._body()
                code = proxy._take(self.command, self.path)
                proxy.log.append(Arrival(time.monotonic(), self.command, self.path, code))
                if code is not None:
                    status, message = ERRORS[code]
                    xml = (
                        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                        f"<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(xml)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if body or "Content-Length" in self.headers or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                head = self.command == "HEAD"  # its Content-Length is the object's, with no body
                for name, value in answer.getheaders():
                    if name.lower() not in _HOP and (head or name.lower() != "content-length"):
                        self.send_header(name, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def fail(self, n: int, code: str = "SlowDown", match: Callable[[str, str], bool] | None = None) -> None:
        """Answer the next n requests that `match(method, path)` with the S3 error `code`."""
        with self._lock:
            self._plans.append(_Plan(n, code, match or (lambda method, path: True)))

    def _take(self, method: str, path: str) -> str | None:
        with self._lock:
            for plan in self._plans:
                if plan.remaining > 0 and plan.match(method, path):
                    plan.remaining -= 1
                    return plan.code
        return None

    def injected(self) -> list[Arrival]:
        return [a for a in self.log if a.injected]
