"""The local endpoint over a real socket on 127.0.0.1: SageMaker's /ping and /invocations contract."""

from __future__ import annotations

import http.client
import json
import time

import numpy as np
import pytest

from ml_demo_dagster.core.endpoint import make_server
from ml_demo_dagster.core.linear_learner import LinearLearnerModel
from ml_demo_dagster.core.registry import ModelRegistry
from ml_demo_dagster.core.store import LocalStore

D = 5


def model(sign: float, threshold: float = 0.5) -> LinearLearnerModel:
    return LinearLearnerModel(weights=np.array([sign, 0, 0, 0, 0], dtype=float), bias=0.0,
                              mean=np.zeros(D), scale=np.ones(D), threshold=threshold, hyperparameters={})  # fmt: skip


def request(server, method: str, path: str, body: bytes | None = None, content_type: str | None = "text/csv"):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"Content-Type": content_type} if content_type and body is not None else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null"), response.getheader("X-Model-Version")
    finally:
        conn.close()


def wait_until(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)  # a poll interval, not synchronisation: the loop waits on the condition


@pytest.fixture
def served(tmp_path):
    store = LocalStore(tmp_path)
    server = make_server(store, "127.0.0.1", 0, refresh_seconds=0.05).start()
    try:
        yield server, ModelRegistry(store)
    finally:
        server.stop()


def test_binds_loopback_on_a_free_port(served):
    server, _ = served
    host, port = server.server_address[:2]
    assert host == "127.0.0.1" and port > 0 and server.url == f"http://127.0.0.1:{port}"


def test_ping_is_503_without_a_champion_then_200(served):
    server, registry = served
    status, doc, _ = request(server, "GET", "/ping")
    assert status == 503 and "no champion model yet" in doc["reason"]
    status, doc, _ = request(server, "POST", "/invocations", b"1,2,3,4,5\n")
    assert status == 503 and "no champion" in doc["error"]
    registry.save("1700000000001", model(1.0), {})
    registry.promote("1700000000001")
    status, doc, version = wait_until(lambda: (r := request(server, "GET", "/ping"))[0] == 200 and r, what="ping 200")
    assert doc == {"status": "ok", "model_version": "1700000000001", "feature_dim": D}
    assert version == "1700000000001"


def test_invocations_score_csv_rows_like_linear_learner(served):
    server, registry = served
    registry.save("v1", model(1.0, threshold=0.6), {})
    registry.promote("v1")
    rows = np.array([[2.0, 0, 0, 0, 0], [-2.0, 1, 1, 1, 1], [0.1, 9, 9, 9, 9]])
    body = "\n".join(",".join(str(float(v)) for v in r) for r in rows).encode() + b"\n"
    status, doc, version = request(server, "POST", "/invocations", body, "text/csv; charset=utf-8")
    assert status == 200 and version == "v1"
    expected = 1 / (1 + np.exp(-rows[:, 0]))
    assert [p["score"] for p in doc["predictions"]] == pytest.approx(expected.tolist())
    assert [p["predicted_label"] for p in doc["predictions"]] == [1, 0, 0]  # 0.525 < threshold 0.6
    status, doc, _ = request(server, "POST", "/invocations", b"2,0,0,0,0", "text/csv")  # no final newline
    assert status == 200 and len(doc["predictions"]) == 1
    payload = json.dumps({"instances": [{"features": rows[0].tolist()}]}).encode()
    status, doc, _ = request(server, "POST", "/invocations", payload, "application/json")
    assert status == 200 and doc["predictions"][0]["predicted_label"] == 1


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"1,2,3,4,5\n1,2,3,4\n", "text/csv", 400, "row 2 has 4 values; expected 5"),
        (b"1,2,3,4,5,6\n", "text/csv", 400, "row 1 has 6 values; expected 5"),
        (b"1,2,3,4,5\n1,2,abc,4,5\n", "text/csv", 400, "row 2, value 3: 'abc' is not a number"),
        (b"1,2,nan,4,5\n", "text/csv", 400, "row 1, value 3: 'nan' is not a finite number"),
        (b"1,2,3,4,5\n\n1,2,3,4,5\n", "text/csv", 400, "row 2 is empty"),
        (b"", "text/csv", 400, "empty body"),
        (b"\xff\xfe", "text/csv", 400, "not UTF-8"),
        (b"1,2,3,4,5\n", "application/x-recordio-protobuf", 400, "unsupported content type"),
        (b"1,2,3,4,5\n", None, 400, "unsupported content type 'none'"),
        (b'{"instances": [{"features": [1, 2]}]}', "application/json", 400, "instance 1 has 2 values; expected 5"),
        (b'{"instances": [[1, 2, 3, 4, "x"]]}', "application/json", 400, "instance 1, value 5: 'x'"),
        (b"{oops", "application/json", 400, "not valid JSON"),
    ],
)
def test_bad_input_gets_a_clear_message(served, body, content_type, status, message):
    server, registry = served
    registry.save("v1", model(1.0), {})
    registry.promote("v1")
    got_status, doc, _ = request(server, "POST", "/invocations", body, content_type)
    assert got_status == status
    assert message in doc["error"]


def test_unknown_paths_are_404_and_wrong_methods_405(served):
    server, _ = served
    assert request(server, "GET", "/nope")[0] == 404
    assert request(server, "POST", "/nope", b"x")[0] == 404
    assert request(server, "POST", "/ping", b"x")[0] == 405
    assert request(server, "GET", "/invocations")[0] == 405


def test_a_new_champion_is_served_without_a_restart(served):
    server, registry = served
    registry.save("v1", model(1.0), {})
    registry.save("v2", model(-1.0), {})
    registry.promote("v1")
    row = b"3,0,0,0,0\n"

    def label_and_version():
        status, doc, version = request(server, "POST", "/invocations", row)
        assert status == 200
        return doc["predictions"][0]["predicted_label"], version

    assert wait_until(lambda: label_and_version() == (1, "v1"), what="v1 serving")
    registry.promote("v2")
    assert wait_until(lambda: label_and_version() == (0, "v2"), what="v2 serving after promotion")
    assert request(server, "GET", "/ping")[1]["model_version"] == "v2"


def test_a_broken_champion_keeps_the_previous_one_serving(served, tmp_path):
    server, registry = served
    registry.save("v1", model(1.0), {})
    registry.promote("v1")
    wait_until(lambda: request(server, "GET", "/ping")[0] == 200, what="v1 serving")
    registry.save("v2", model(-1.0), {})
    (tmp_path / "models" / "v2" / "model.json").write_bytes(b"garbage")
    registry.promote("v2")
    status, doc, _ = wait_until(
        lambda: (r := request(server, "GET", "/ping"))[1].get("warning") and r, what="the load problem reported"
    )
    assert status == 200 and doc["model_version"] == "v1" and "cannot load the champion" in doc["warning"]
