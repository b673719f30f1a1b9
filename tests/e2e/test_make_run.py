"""`ml-demo up` (what `make run` runs), as a user meets it: the UI shows the graph, and a
batch from the streamer is retrained on without anyone clicking; Ctrl-C stops it all,
interrupting no run; and nothing on the way prints a warning or a traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.spark]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, condition, timeout: float, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert proc.poll() is None, f"ml-demo up exited ({proc.returncode}) while waiting for {what}"
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


@pytest.mark.timeout(900)  # a clean stop waits for the run in progress
def test_up_shows_the_graph_and_retrains_each_batch_without_a_click(tmp_path):
    ui, endpoint = free_port(), free_port()
    env = dict(
        os.environ,
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        ML_DEMO__SERVING__PORT=str(endpoint),
        ML_DEMO__SIM__VOLATILITY="5",
        ML_DEMO__TUNING__MAX_JOBS="2",
        ML_DEMO__DAGSTER__SENSOR_INTERVAL_SECONDS="2",
    )
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_demo_dagster.cli", "up", "--store", str(store), "--port", str(ui),
         "--batch-size", "1500", "--speed", "300"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:

        def ui_up():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{ui}/server_info", timeout=2).status == 200
            except OSError:
                return False

        wait_for("the Dagster UI", ui_up, 120, proc)
        nodes = wait_for(
            "the asset graph",
            lambda: graphql(ui, "{ assetNodes { assetKey { path } groupName } }").get("assetNodes"),
            60, proc,
        )  # fmt: skip
        groups = {n["assetKey"]["path"][-1]: n["groupName"] for n in nodes}
        assert groups["batch_features"] == "features" and groups["deployed_model"] == "serving"

        os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
        import dagster as dg

        instance = dg.DagsterInstance.get()

        def finished_run():
            runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]))
            return runs[-1] if runs else None

        run = wait_for("a retraining run to finish", finished_run, 300, proc)
        assert run.status == dg.DagsterRunStatus.SUCCESS, run.run_id
        batch = run.tags["dagster/partition"]
        assert run.tags["dagster/run_key"] == batch
        assert (store / "staging" / f"deals-{batch}.csv").exists()
        assert (store / "models" / batch / "model.json").exists()
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C; a run in progress is let finish
        out, _ = proc.communicate(timeout=600)
        os.environ.pop("DAGSTER_HOME", None)
    assert proc.returncode == 0, out[-3000:]
    assert "stopping" in out
    # A clean start and a clean stop: no Python warning (FutureWarning, SupersessionWarning,
    # DeprecationWarning, ...) and no traceback (Python's, or Dagster's "Stack Trace:").
    lines = out.splitlines()
    noisy = [i for i, line in enumerate(lines) if "Warning" in line or "Traceback" in line or "Stack Trace" in line]
    assert not noisy, "\n".join(lines[noisy[0] - 5 : noisy[0] + 40])
    # Ctrl-C cut no run short: every run ended well or is still queued for the next start.
    statuses = {r.run_id: r.status for r in instance.get_runs()}
    cut = {k: v for k, v in statuses.items() if v not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.QUEUED)}
    assert not cut, cut
    # The streamer stopped cleanly and kept what was pending in its spool.
    assert "deals pending in" in out and "the next run continues from there" in out
    # Every batch in the store is whole: the streamer never leaves half a batch behind.
    staging = {p.name.split("-")[1] for p in (store / "staging").glob("*.csv")}
    for t in staging:
        assert (store / "staging" / f"price-{t}").exists() and (store / "staging" / f"deals-{t}").exists()
