"""Every bad request to the endpoint gets an answer with a reason, over real HTTP on 127.0.0.1,
and the connection is never dropped: after a 400 the same connection serves the next request;
when the server must close it (a body it will not read), the answer still arrives."""

from __future__ import annotations

import http.client
import json
import socket

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_demo_dagster.core.endpoint import BadRequest, make_server, parse_csv, parse_csv_reference
from ml_demo_dagster.core.linear_learner import LinearLearnerModel
from ml_demo_dagster.core.registry import ModelRegistry
from ml_demo_dagster.core.store import LocalStore

D = 5
GOOD = b"1,2,3,4,5\n"
LIMIT = 4096  # the server's body limit in these tests


@pytest.fixture
def server(tmp_path):
    store = LocalStore(tmp_path)
    registry = ModelRegistry(store)
    model = LinearLearnerModel(np.array([1.0, 0, 0, 0, 0]), 0.0, np.zeros(D), np.ones(D), 0.5, {})
    registry.save("v1", model, {})
    registry.promote("v1")
    srv = make_server(store, port=0, max_body_bytes=LIMIT).start()  # the default host
    try:
        yield srv
    finally:
        srv.stop()


def connect(srv) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(*srv.server_address[:2], timeout=10)


def ask(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    return response, (json.loads(data) if data else None)


def raw(srv, data: bytes, *, shut_write=True) -> bytes:
    """Send bytes as they are; return everything the server answers until it closes."""
    with socket.create_connection(srv.server_address[:2], timeout=10) as s:
        s.sendall(data)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_doc(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_binds_127_0_0_1_by_default(server):
    assert server.server_address[0] == "127.0.0.1"


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (GOOD, "application/xml", "unsupported content type 'application/xml'"),
        (GOOD, None, "unsupported content type 'none'"),
        (b"1,2,3,4\n", "text/csv", "row 1 has 4 values; expected 5"),
        (b"1,2,3,4,5,6\n", "text/csv", "row 1 has 6 values; expected 5"),
        (b"1,2,x,4,5\n", "text/csv", "row 1, value 3: 'x' is not a number"),
        (b'1,2,"3",4,5\n', "text/csv", "row 1, value 3: '\"3\"' is not a number"),
        (b"1,2,3,4,\n", "text/csv", "row 1, value 5: '' is not a number"),
        (b"1,2,3,4,5\n1,2,NaN,4,5\n", "text/csv", "row 2, value 3: 'NaN' is not a finite number"),
        (b"1,2,3,4,inf\n", "text/csv", "row 1, value 5: 'inf' is not a finite number"),
        (b"1,2,3,4,1e999\n", "text/csv", "row 1, value 5: '1e999' is not a finite number"),
        (b"", "text/csv", "empty body"),
        (b"\n", "text/csv", "row 1 is empty"),
        (b'{"instances": [[1, 2, 3, 4, NaN]]}', "application/json", "value 5: nan is not a finite number"),
        (b'{"instances": [[1, 2, 3, 4, 1e999]]}', "application/json", "value 5: inf is not a finite number"),
        (b'{"instances": [[1, 2, 3, 4, 1' + b"0" * 400 + b"]]}", "application/json", "too large for a float"),
        (b'{"instances": [[1, 2, 3, true, 5]]}', "application/json", "value 4: True is not a finite number"),
        (b'{"instances": [[1, 2, 3, 4]]}', "application/json", "instance 1 has 4 values; expected 5"),
        (b"", "application/json", "empty body"),
        (b"[" * 2000 + b"]" * 2000, "application/json", "not valid JSON: nested too deeply"),
    ],
)
def test_a_bad_body_is_400_with_the_reason_and_the_connection_serves_on(server, body, content_type, reason):
    conn = connect(server)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        response, doc = ask(conn, "POST", "/invocations", body, headers)
        assert response.status == 400 and reason in doc["error"]
        response, doc = ask(conn, "POST", "/invocations", GOOD, {"Content-Type": "text/csv"})  # same connection
        assert response.status == 200 and len(doc["predictions"]) == 1
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/nope", 404, None),
        ("POST", "/nope", 404, None),
        ("DELETE", "/", 404, None),
        ("GET", "/invocations", 405, "POST"),
        ("PUT", "/invocations", 405, "POST"),
        ("POST", "/ping", 405, "GET"),
        ("PATCH", "/ping", 405, "GET"),
        ("BREW", "/ping", 405, "GET"),
    ],
)
def test_unknown_paths_are_404_and_wrong_methods_405(server, method, path, status, allow):
    conn = connect(server)
    try:
        response, doc = ask(conn, method, path, GOOD, {"Content-Type": "text/csv"})
        assert response.status == status and response.getheader("Allow") == allow
        assert (path in doc["error"]) and (status == 404 or f"{method} is not allowed" in doc["error"])
        assert ask(conn, "GET", "/ping")[0].status == 200  # the body was read: the connection is in step
    finally:
        conn.close()


def test_head_gets_405_without_a_body(server):
    conn = connect(server)
    try:
        conn.request("HEAD", "/ping")
        response = conn.getresponse()
        assert response.status == 405 and response.read() == b""
        assert ask(conn, "GET", "/ping")[0].status == 200
    finally:
        conn.close()


def test_an_oversize_body_is_400_and_the_answer_arrives_before_the_close(server):
    body = GOOD * (10 * LIMIT // len(GOOD))  # 10x the limit, sent whole by the client
    conn = connect(server)
    try:
        response, doc = ask(conn, "POST", "/invocations", body, {"Content-Type": "text/csv"})
        assert response.status == 400 and f"over the limit of {LIMIT:,}" in doc["error"]
        assert response.getheader("Connection") == "close"
    finally:
        conn.close()


def test_an_oversize_body_announced_with_expect_100_is_refused_before_it_is_sent(server):
    head = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            b"Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n")  # fmt: skip
    status, doc = status_and_doc(raw(server, head))
    assert status == 400 and "100,000,000 bytes is over the limit" in doc["error"]


def test_a_good_body_announced_with_expect_100_is_scored(server):
    head = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nConnection: close\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(GOOD))  # fmt: skip
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        s.sendall(head)
        assert s.recv(100).startswith(b"HTTP/1.1 100")
        s.sendall(GOOD)
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    status, doc = status_and_doc(answer)
    assert status == 200 and len(doc["predictions"]) == 1


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (b"Content-Length: abc\r\n", "bad Content-Length 'abc'"),
        (b"Content-Length: -5\r\n", "bad Content-Length '-5'"),
        (b"Content-Length: 10\r\nContent-Length: 11\r\n", "bad Content-Length '10, 11'"),
        (b"Transfer-Encoding: gzip\r\n", "unsupported Transfer-Encoding 'gzip'"),
        (b"Content-Length: 50\r\n", "the body ended after 10 of 50 bytes"),
    ],
)
def test_a_body_that_cannot_be_framed_is_400_then_closed(server, headers, reason):
    request = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n" + headers + b"\r\n" + GOOD
    status, doc = status_and_doc(raw(server, request))
    assert status == 400 and reason in doc["error"]


def test_a_chunked_body_is_read(server):
    request = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nConnection: close\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n4\r\n1,2,\r\n6;ext=1\r\n3,4,5\n\r\n0\r\n\r\n")  # fmt: skip
    status, doc = status_and_doc(raw(server, request))
    assert status == 200 and len(doc["predictions"]) == 1


def test_a_malformed_chunk_is_400(server):
    request = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    )
    status, doc = status_and_doc(raw(server, request))
    assert status == 400 and "bad chunk size line" in doc["error"]


def test_a_malformed_request_line_gets_a_json_answer(server):
    status, doc = status_and_doc(raw(server, b"GARBAGE\r\n\r\n"))
    assert status == 400 and "Bad request" in doc["error"]


def test_a_failing_model_is_500_with_the_reason_not_a_dropped_connection(server, monkeypatch):
    champion, _ = server.watcher.current()

    def broken(X):
        raise FloatingPointError("the weights are gone")

    monkeypatch.setattr(champion.model, "predict", broken)
    conn = connect(server)
    try:
        response, doc = ask(conn, "POST", "/invocations", GOOD, {"Content-Type": "text/csv"})
        assert response.status == 500 and "FloatingPointError: the weights are gone" in doc["error"]
    finally:
        conn.close()


# The fast CSV path and the reference parser agree on anything ---------------------------

_cells = st.text(alphabet="0123456789.eE+-_ naifINFx\"'\t", max_size=6)
_lines = st.lists(_cells, min_size=2, max_size=4).map(",".join)
_bodies = (
    st.lists(_lines, max_size=4)
    .flatmap(lambda lines: st.sampled_from(["\n", "\r\n", "\r"]).map(lambda end: end.join(lines)))
    .flatmap(lambda text: st.sampled_from(["", "\n", "\r\n"]).map(lambda tail: (text + tail).encode()))
)


@settings(max_examples=400, deadline=None)
@given(body=_bodies)
def test_the_fast_csv_path_accepts_exactly_what_the_reference_accepts(body):
    try:
        want = parse_csv_reference(body, 3)
    except BadRequest as e:
        with pytest.raises(BadRequest) as err:
            parse_csv(body, 3)
        assert str(err.value) == str(e)
    else:
        np.testing.assert_array_equal(parse_csv(body, 3), want)


def test_the_fast_csv_path_reads_real_rows_like_the_reference():
    rng = np.random.default_rng(1)
    X = np.round(rng.normal(scale=40, size=(200, 605)), 2)
    X[0, :3] = [1e-7, -0.0, 12345678.125]
    body = ("\n".join(",".join(repr(float(v)) for v in row) for row in X) + "\n").encode()
    np.testing.assert_array_equal(parse_csv(body, 605), parse_csv_reference(body, 605))
    np.testing.assert_array_equal(parse_csv(body, 605), X)
