"""Loopback fakes of IG's two services, for the tests of `--source ig` (DESIGN §5).

- IG REST: `POST /session` (version 2) checks the identifier, password and API key and
  answers with fresh `CST` / `X-SECURITY-TOKEN` headers and a `lightstreamerEndpoint`.
- Lightstreamer: the TLCP 2.5 server side that the real `lightstreamer-client-lib` talks to,
  over WebSocket (`/lightstreamer`, subprotocol `TLCP-2.5.0.lightstreamer.com`) and, for the
  client's session recovery, HTTP (`/lightstreamer/bind_session.txt`). A session is created
  only for user = identifier and password = `CST-<cst>|XST-<token>` of a login whose tokens
  have not expired; a subscription gets `REQOK`, `SUBOK`, the item's snapshot, then whatever
  the test sends, encoded as MERGE updates (an empty field = unchanged).

Both servers run on 127.0.0.1 with ports picked by the OS, in one asyncio loop on a
background thread. The test thread drives them (send updates, drop the connection, expire
the tokens) and waits on conditions with deadlines (`wait_for`).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote

from aiohttp import WSMsgType, web

TLCP_PROTOCOL = "TLCP-2.5.0.lightstreamer.com"
UNCHANGED = object()  # a field left out of a MERGE update (sent as an empty field)


@dataclass
class _Subscription:
    sub_id: int
    item: str
    fields: list[str]
    mode: str
    snapshot: bool
    updated: bool = False  # has had its first update


@dataclass
class _Session:
    sid: str
    user: str
    write: Callable[[str], asyncio.Future]  # sends one line (or several, \r\n-joined)
    abort: Callable[[], None]
    subscriptions: dict[int, _Subscription] = field(default_factory=dict)
    closed: bool = False


@dataclass
class Login:
    """One `POST /session` as the fake saw it (secrets included: for the tests' assertions)."""

    headers: dict[str, str]  # names in lower case
    body: dict
    status: int
    cst: str | None = None
    token: str | None = None


class FakeIG:
    """IG REST + Lightstreamer on loopback. Use as a context manager."""

    def __init__(
        self,
        identifier: str = "demo-user",
        password: str = "pa55-w0rd-!secret",
        api_key: str = "api-key-0123456789abcdef",
        *,
        keepalive_ms: int = 200,
    ):
        self.identifier, self.password, self.api_key = identifier, password, api_key
        self.keepalive_ms = keepalive_ms
        self.logins: list[Login] = []
        self.create_requests: list[dict[str, str]] = []  # create_session parameters, in order
        self.refused_sessions = 0  # create_session answered with CONERR (tokens not valid)
        self.subscriptions: list[_Subscription] = []  # every subscription ever made, in order
        self.sent_rows: list[dict[str, str | None]] = []  # item state after each update sent
        self.item_state: dict[str, str | None] = {}
        self.rest_down = False  # True: POST /session answers 503
        self.omit_tokens = False  # True: a good login is answered without CST / X-SECURITY-TOKEN
        self.refuse_sessions = False  # True: every create_session gets CONERR, valid tokens or not
        self.end_sessions = False  # True: every session is ended (END) right after its subscription
        self._valid_tokens: set[tuple[str, str]] = set()
        self._sessions: dict[str, _Session] = {}
        self._connections: set[Callable[[], None]] = set()  # how to cut each open WebSocket
        self._current: _Session | None = None
        self._sid = itertools.count(1)
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-ig", daemon=True)
        self._runners: list[web.AppRunner] = []
        self.rest_url = self.ls_url = ""

    # -- life ---------------------------------------------------------------------------

    def __enter__(self) -> FakeIG:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        rest = web.Application()
        rest.router.add_post("/session", self._rest_login)
        ls = web.Application()
        ls.router.add_get("/lightstreamer", self._ls_websocket)
        ls.router.add_post("/lightstreamer/{request}.txt", self._ls_http)
        for app, attr in ((rest, "rest_url"), (ls, "ls_url")):
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            setattr(self, attr, f"http://127.0.0.1:{port}")
            self._runners.append(runner)

    async def _stop(self) -> None:
        for abort in list(self._connections):  # every WebSocket, in a session or not
            abort()
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    def _call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
        """Block until predicate() is true (checked on every event of the fakes), or fail."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"fake IG: timed out after {timeout} s waiting for {what}")
                self._cond.wait(min(remaining, 0.5))

    def wait_subscribed(self, count: int = 1, timeout: float = 20, process=None) -> _Subscription:
        """Wait until `count` subscriptions were made in all; returns the latest. With a
        `process` (a Popen of the streamer), fail at once with its output if it ends first."""
        self.wait_for(
            lambda: len(self.subscriptions) >= count or (process is not None and process.poll() is not None),
            timeout,
            f"subscription #{count}",
        )
        if len(self.subscriptions) < count:
            out, err = process.communicate()
            raise AssertionError(f"the streamer ended (exit {process.returncode}) before subscribing:\n{out}{err}")
        return self.subscriptions[-1]

    # -- IG REST ------------------------------------------------------------------------

    @property
    def tokens(self) -> list[str]:
        """Every CST and X-SECURITY-TOKEN ever issued."""
        return [t for login in self.logins if login.cst for t in (login.cst, login.token)]

    async def _rest_login(self, request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = await request.json()
        except ValueError:
            body = {}
        login = Login(headers=headers, body=body, status=200)
        self.logins.append(login)
        try:
            if self.rest_down:
                login.status = 503
                return web.json_response({"errorCode": "system.error"}, status=503)
            if request.headers.get("X-IG-API-KEY") != self.api_key:
                login.status = 403
                return web.json_response({"errorCode": "error.security.api-key-invalid"}, status=403)
            if request.headers.get("Version") != "2":
                login.status = 400
                return web.json_response({"errorCode": "invalid.request.version"}, status=400)
            if body.get("identifier") != self.identifier or body.get("password") != self.password:
                login.status = 401
                return web.json_response({"errorCode": "error.security.invalid-details"}, status=401)
            if self.omit_tokens:
                return web.json_response({"lightstreamerEndpoint": self.ls_url})
            login.cst, login.token = secrets.token_hex(16), secrets.token_hex(16)
            self._valid_tokens.add((login.cst, login.token))
            return web.json_response(
                {"accountType": "CFD", "currentAccountId": "ABC12", "lightstreamerEndpoint": self.ls_url},
                headers={"CST": login.cst, "X-SECURITY-TOKEN": login.token},
            )
        finally:
            self._changed()

    def expire_tokens(self) -> None:
        """IG's session expires: every token issued so far stops opening streaming sessions."""
        self._call(self._expire())

    async def _expire(self) -> None:
        self._valid_tokens.clear()

    # -- Lightstreamer --------------------------------------------------------------------

    def _password_ok(self, user: str | None, password: str | None) -> bool:
        if user != self.identifier or not password:
            return False
        cst, _, token = password.partition("|")
        return (cst.removeprefix("CST-"), token.removeprefix("XST-")) in self._valid_tokens

    async def _ls_websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(TLCP_PROTOCOL,), autoping=True)
        await ws.prepare(request)
        session: _Session | None = None

        async def write(text: str) -> None:
            if not ws.closed:
                await ws.send_str(text)

        def abort() -> None:
            # The connection is cut under the WebSocket: what was sent arrives, then the TCP
            # connection ends, with no close frame and no END (as when a proxy drops it).
            if request.transport is not None:
                request.transport.close()

        self._connections.add(abort)
        keepalive = asyncio.ensure_future(self._probes(write))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                lines = msg.data.split("\r\n")
                verb, params = lines[0], [dict(parse_qsl(line, keep_blank_values=True)) for line in lines[1:] if line]
                if verb == "wsok":
                    await write("WSOK")
                elif verb == "create_session":
                    session = await self._create_session(params[0], write, abort)
                elif verb == "bind_session":
                    await write("CONERR,20,Session not found")  # sessions do not outlive a connection here
                elif verb == "control":
                    await self._control(session, params, write)
                elif verb == "heartbeat":
                    pass
                self._changed()
        finally:
            keepalive.cancel()
            self._connections.discard(abort)
            if session is not None:
                self._close(session)
        return ws

    async def _ls_http(self, request: web.Request) -> web.Response:
        # Over HTTP the client only comes to recover a session after a drop; sessions do
        # not outlive their connection here, so it is told to create a new one.
        return web.Response(text="CONERR,20,Session not found\r\n", content_type="text/plain")

    async def _probes(self, write) -> None:
        """Keepalives while the connection is quiet (the client's stall detection counts on them)."""
        while True:
            await asyncio.sleep(self.keepalive_ms / 1000)
            try:
                await write("PROBE")
            except ConnectionError:
                return

    async def _create_session(self, params: Mapping[str, str], write, abort) -> _Session | None:
        self.create_requests.append(dict(params))
        if self.refuse_sessions or not self._password_ok(params.get("LS_user"), params.get("LS_password")):
            self.refused_sessions += 1
            await write("CONERR,1,User/password check failed")
            return None
        sid = f"S{next(self._sid)}"
        session = _Session(sid=sid, user=params["LS_user"], write=write, abort=abort)
        self._sessions[sid] = session
        self._current = session
        await write(f"CONOK,{sid},50000,{self.keepalive_ms},*\r\nSERVNAME,Fake IG Lightstreamer\r\nCLIENTIP,127.0.0.1")
        return session

    async def _control(self, session: _Session | None, requests: Sequence[Mapping[str, str]], write) -> None:
        for req in requests:
            req_id = req.get("LS_reqId", "0")
            if session is None:
                await write(f"REQERR,{req_id},65,No session")
                continue
            op = req.get("LS_op")
            if op == "add":
                sub = _Subscription(
                    sub_id=int(req["LS_subId"]),
                    item=req["LS_group"],
                    fields=req["LS_schema"].split(" "),
                    mode=req["LS_mode"],
                    snapshot=req.get("LS_snapshot") == "true",
                )
                session.subscriptions[sub.sub_id] = sub
                await write(f"REQOK,{req_id}")
                await write(f"SUBOK,{sub.sub_id},1,{len(sub.fields)}")
                if sub.snapshot and self.item_state:
                    await write(self._update_line(sub, dict(self.item_state), record=True))
                self.subscriptions.append(sub)
                if self.end_sessions:
                    await write("END,33,Unexpected error on the server")
                    self._close(session)
            elif op == "delete":
                session.subscriptions.pop(int(req.get("LS_subId", -1)), None)
                await write(f"REQOK,{req_id}")
                await write(f"UNSUB,{req.get('LS_subId')}")
            elif op == "destroy":
                await write(f"REQOK,{req_id}")
                await write("END,31,Destroyed by the client")
                self._close(session)
            else:
                await write(f"REQOK,{req_id}")

    def _close(self, session: _Session) -> None:
        session.closed = True
        self._sessions.pop(session.sid, None)
        if self._current is session:
            self._current = None
        self._changed()

    # -- what the tests do ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._current is not None and not self._current.closed and bool(self._current.subscriptions)

    def _update_line(self, sub: _Subscription, changes: Mapping[str, object], record: bool) -> str:
        encoded = []
        first = not sub.updated  # a subscription's first update carries every field, as a real server's
        sub.updated = True
        for name in sub.fields:
            value = changes.get(name, UNCHANGED)
            if value is UNCHANGED and first:
                value = self.item_state.get(name)
            if value is UNCHANGED:
                encoded.append("")
                continue
            self.item_state[name] = value
            encoded.append("#" if value is None else "$" if value == "" else quote(str(value), safe=" .:-_+"))
        if record:
            self.sent_rows.append(dict(self.item_state))
        return f"U,{sub.sub_id},1,{'|'.join(encoded)}"

    def send(self, changes: Mapping[str, object]) -> None:
        """One MERGE update of the subscribed item: only the fields in `changes` are sent."""
        self._call(self._send(changes))

    async def _send(self, changes: Mapping[str, object]) -> None:
        session = self._current
        if session is None or not session.subscriptions:
            raise AssertionError("fake IG: no subscribed session to send to")
        for sub in session.subscriptions.values():
            await session.write(self._update_line(sub, changes, record=True))
        self._changed()

    def send_many(self, updates: Sequence[Mapping[str, object]]) -> None:
        self._call(self._send_many(updates))

    async def _send_many(self, updates: Sequence[Mapping[str, object]]) -> None:
        for changes in updates:
            await self._send(changes)

    def drop(self) -> None:
        """Cut the streaming connection without a word, as a network failure would."""
        self._call(self._drop())

    async def _drop(self) -> None:
        session = self._current
        if session is None:
            raise AssertionError("fake IG: no session to drop")
        session.abort()
        self._close(session)

    def end_session(self, code: int = 32, message: str = "Session closed by the server") -> None:
        """Close the session on the server side with END (the client does not retry by itself)."""
        self._call(self._end(code, message))

    async def _end(self, code: int, message: str) -> None:
        session = self._current
        if session is None:
            raise AssertionError("fake IG: no session to end")
        await session.write(f"END,{code},{quote(message)}")
        self._close(session)

    def stop_serving(self) -> None:
        """Take both servers down for good (connections refused from now on)."""
        self._call(self._stop())
