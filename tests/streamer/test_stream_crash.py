"""The issue's done-when for the streamer, with real processes: replaying one price file,
`ml-demo stream` killed with SIGKILL at random moments and restarted each time writes
exactly the deals, batch for batch, of a run never interrupted. Nothing lost, nothing twice.

The moments are drawn by a seeded RNG among conditions the test waits for (never a plain
sleep): "k more batches exist", "the spool changed k times", "a batch is half uploaded".
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from streamer_testkit import CLI, batches_in, read_batch, run_cli

from ml_demo_dagster.config import default_config
from ml_demo_dagster.core.staging import PRICE_SCHEMA
from streamer.formatting import format_csv
from streamer.sources.sim import SimSource

KILLS = 6
SEED = 20261


def deals_files(store: Path) -> set[str]:
    return {p.name for p in (store / "staging").glob("deals-*.csv")} if (store / "staging").exists() else set()


def more_batches(k):
    def start(store, spool):
        before = len(deals_files(store))
        return lambda: len(deals_files(store)) >= before + k

    start.what = f"{k} more batches"
    return start


def spool_changes(k):
    def start(store, spool):
        seen = {"last": _stat(spool), "changes": 0}

        def met():
            now = _stat(spool)
            if now != seen["last"]:
                seen["last"], seen["changes"] = now, seen["changes"] + 1
            return seen["changes"] >= k

        return met

    start.what = f"the spool changed {k} times"
    return start


def half_uploaded(store: Path) -> set[str]:
    """Batches whose price file is there and deals file is not (yet)."""
    prices = {p.name[len("price-") :] for p in (store / "staging").glob("price-*.csv")}
    return prices - {d[len("deals-") :] for d in deals_files(store)}


def half_uploaded_or(k):
    """A batch half uploaded by this run, or else k more batches."""

    def start(store, spool):
        enough = more_batches(k)(store, spool)
        before = half_uploaded(store)  # left by the previous kill: not this run's
        return lambda: bool(half_uploaded(store) - before) or enough()

    start.what = f"a batch half uploaded (or {k} more batches)"
    return start


def _stat(path: Path):
    try:
        st = os.stat(path)
        return st.st_ino, st.st_size
    except FileNotFoundError:
        return None


def wait_for(condition, proc, timeout=120.0) -> bool:
    """True once `condition()` holds; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "timed out waiting for the kill condition"
        time.sleep(0.001)  # a poll interval: the wait itself is on the condition
    return True


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_deal_and_writes_none_twice(tmp_path):
    rng = random.Random(SEED)
    config = default_config()
    ticks = list(itertools.islice(SimSource(config, seed=11, start_ms=1_767_225_600_000), 30_000))
    price_file = tmp_path / "price-replay.csv"
    price_file.write_bytes(format_csv(ticks, PRICE_SCHEMA))
    args = ["stream", "--source", "replay", "--replay-file", str(price_file), "--batch-size", "150"]

    reference = tmp_path / "reference"
    result = run_cli(*args, "--store", str(reference), "--spool", str(tmp_path / "reference.spool"))
    assert result.returncode == 0, result.stderr
    expected = [read_batch(f)[0] for _, f in sorted(batches_in(reference / "staging").items())]
    assert len(expected) >= 150

    store, spool = tmp_path / "store", tmp_path / "crashed.spool"
    conditions = [more_batches, spool_changes, half_uploaded_or]
    kills = []
    while True:
        # Paced while it is to be killed (so it is still running when the moment comes), then
        # one last run to the end of the file, unpaced.
        pace = ["--speed", "20000"] if len(kills) < KILLS else []
        proc = subprocess.Popen([*CLI, *args, *pace, "--store", str(store), "--spool", str(spool)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            if len(kills) == KILLS:
                out, err = proc.communicate(timeout=180)
                break
            make = rng.choice(conditions)(rng.randint(1, 12))
            condition = make(store, spool)
            assert wait_for(condition, proc), f"the stream ended before {make.what}: {proc.communicate()}"
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL
            kills.append((make.what, len(deals_files(store))))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    assert proc.returncode == 0, err
    assert "stream complete, spool removed" in out and not spool.exists()
    assert len(kills) == KILLS and kills[-1][1] < len(expected), kills  # every kill came before the end
    # A kill in the middle of a local store's write leaves its temporary file (a dot-file,
    # never listed by the store); the key it was for was written whole by a later run.
    for tmp in (store / "staging").glob(".*.tmp"):
        assert (store / "staging" / tmp.name[1:].split(".csv.")[0]).with_suffix(".csv").exists(), tmp.name
        tmp.unlink()
    got = [read_batch(f)[0] for _, f in sorted(batches_in(store / "staging").items())]
    assert got == expected  # the same deals in the same batches: nothing lost, nothing twice
