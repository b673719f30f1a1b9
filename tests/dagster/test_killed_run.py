"""A `ml-demo pipeline` killed with SIGKILL halfway (during features, then during tuning) is
finished by the next invocation, and leaves nothing half-written that a later training
window, the registry or the dataset reader would take for finished.

The kills wait on conditions seen from outside (files in the store, a Spark JVM in the
process group), never on a sleep. The whole process group is killed, as a container
stop or the OOM killer's cgroup kill would: the Spark JVM and tuner workers die with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_demo_dagster.cli import main
from ml_demo_dagster.core.layout import batches_with_features
from ml_demo_dagster.core.registry import ModelRegistry
from ml_demo_dagster.core.store import LocalStore

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SMALL = {
    "ML_DEMO__EXPORT__BATCH_SIZE": "2000",
    "ML_DEMO__SIM__VOLATILITY": "5",
    "ML_DEMO__TUNING__MAX_JOBS": "6",
    "ML_DEMO__TUNING__MAX_PARALLEL_JOBS": "2",
}
DEADLINE_S = 300


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, command) of every live process in the process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append((int(entry.name), cmd))
    return members


def pipeline(store_dir: Path) -> subprocess.Popen:
    env = {**os.environ, **SMALL}
    cmd = [sys.executable, "-m", "ml_demo_dagster.cli", "pipeline", "--json", "--store", str(store_dir)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def kill_when(proc: subprocess.Popen, condition, what: str) -> None:
    """SIGKILL the process group as soon as `condition()` holds; fail if the run ends first."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the pipeline ended before {what}: {proc.returncode} {out[-500:]!r} {err[-2000:]!r}")
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            gone = time.monotonic() + 30
            while group_members(proc.pid) and time.monotonic() < gone:
                time.sleep(0.05)
            assert not group_members(proc.pid), "processes of the killed run are still alive"
            proc.stdout.close()
            proc.stderr.close()
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"{what} did not happen within {DEADLINE_S} s")


def test_a_run_killed_during_features_then_during_tuning_is_finished_next_time(tmp_path, monkeypatch):
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    store_dir = tmp_path / "store"
    assert main(["stream", "--source", "sim", "--seed", "3", "--max-batches", "1", "--store", str(store_dir)]) == 0
    store = LocalStore(store_dir)
    (key,) = store.list_keys("staging/deals-")
    t = key.split("-")[1].split(".")[0]

    # 1. Killed during features: ingest done, Spark's JVM running, no _SUCCESS yet.
    run = pipeline(store_dir)
    kill_when(
        run,
        lambda: (
            store.exists(f"raw/deals/{t}.parquet")
            and any("java" in cmd for _, cmd in group_members(run.pid))
            and not store.exists(f"features/{t}/_SUCCESS")
        ),
        "features",
    )
    assert t not in batches_with_features(store)  # part files, if any, are never read without _SUCCESS
    assert json.loads(store.get_text("state/pipeline.json"))["pending"] == [t]

    # 2. Killed during tuning: the dataset written, the model not yet saved.
    run = pipeline(store_dir)
    kill_when(
        run,
        lambda: store.exists(f"datasets/{t}/dataset.parquet") and not store.exists(f"models/{t}/record.json"),
        "tuning",
    )
    assert t in batches_with_features(store)  # features finished this time
    registry = ModelRegistry(store)
    assert t not in registry.versions() and registry.champion() is None
    assert json.loads(store.get_text("state/pipeline.json"))["pending"] == [t]

    # 3. The next invocation finishes the batch.
    run = pipeline(store_dir)
    out, err = run.communicate(timeout=DEADLINE_S)
    assert run.returncode == 0, err[-3000:]
    summary = json.loads(out)
    (row,) = summary["batches"]
    assert row["batch"] == t and row["status"] == "trained" and row["trials"] == 6
    assert t in registry.versions()
    assert json.loads(store.get_text("state/pipeline.json"))["pending"] == []
