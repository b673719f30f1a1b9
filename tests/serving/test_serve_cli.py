"""`ml-demo serve` as a user runs it: a subprocess on 127.0.0.1, stopped by a signal."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np

from ml_demo_dagster.core.linear_learner import LinearLearnerModel
from ml_demo_dagster.core.registry import ModelRegistry
from ml_demo_dagster.core.store import LocalStore

CLI = [sys.executable, "-m", "ml_demo_dagster.cli"]


def start(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    line = proc.stdout.readline()  # blocks until the server has bound (or the process died)
    return proc, line


def get(port: int, path: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def test_serve_binds_loopback_follows_the_champion_and_stops_on_sigterm(tmp_path):
    registry = ModelRegistry(LocalStore(tmp_path))
    proc, line = start(["serve", "--store", str(tmp_path), "--port", "0", "--refresh-seconds", "0"])
    try:
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+) .*waiting: no champion model yet", line)
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        port = int(match.group(1))
        assert get(port, "/ping")[0] == 503
        model = LinearLearnerModel(np.ones(3), 0.0, None, None, 0.5, {})
        registry.save("1700000000001", model, {})
        registry.promote("1700000000001")
        status, doc = get(port, "/ping")  # refresh 0: every request re-reads the pointer
        assert status == 200 and doc["model_version"] == "1700000000001"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopped" in err and "Traceback" not in err


def test_serve_reports_a_busy_port_in_one_line(tmp_path):
    proc, line = start(["serve", "--store", str(tmp_path), "--port", "0"])
    try:
        port = int(re.search(r":(\d+) ", line).group(1))
        busy = subprocess.run(CLI + ["serve", "--store", str(tmp_path), "--port", str(port)], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert busy.returncode != 0
        assert busy.stderr.strip().count("\n") == 0 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
        assert "Traceback" not in busy.stderr
        bad = subprocess.run(CLI + ["serve", "--store", str(tmp_path), "--port", "70000"], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert bad.returncode != 0 and "--port must be between 0 and 65535" in bad.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
