"""`ml-demo up` (what `make run` runs): the whole system on this machine.

Starts, each in its own process group: the Dagster UI and daemon (`dagster dev` on
127.0.0.1:3000, with a DAGSTER_HOME that persists across restarts), the local endpoint
(`ml-demo serve`), and the simulated streamer writing batches into the local store. The
staging sensor is on by default, so each batch is retrained on without a click. Ctrl-C
(or SIGTERM) stops all three; if one dies, the others are stopped too.

A clean stop interrupts nothing: the streamer keeps what is pending in its spool, and
Dagster stops launching runs but lets a run in progress finish (its code server shuts down
once it has), so no run is cut short halfway; runs still queued start at the next `up`. A second
Ctrl-C stops at once: a run cut short then is started again at the next `up` (run retries).

With project.target = "aws" (e.g. against `ml-demo sandbox`), the store is S3 and the model
is served by the SageMaker endpoint, so no local endpoint is started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ml_demo_dagster.cli.common import UserError
from ml_demo_dagster.config import REPO_DIR, default_config
from ml_demo_dagster.core.store import open_store
from streamer.spool import spool_path

HEADER = "# Written by `ml-demo up`."
DAGSTER_YAML = f"""\
{HEADER} One retraining run at a time: runs for batches that land
# while one is busy wait in the queue (none is dropped), and each sees the champion
# that the previous run left.
concurrency:
  runs:
    max_concurrent_runs: 1
# The queue is checked every second (Dagster's default is 5 s): a batch's run starts sooner.
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
# A run cut short (a second Ctrl-C, a crash) is started again, so its batch is not lost; a
# run that failed on its data (a malformed batch, a failed check) is not.
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
telemetry:
  enabled: false
"""


def dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or REPO_DIR / ".ml-demo" / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    # Ours (it starts with our header) is kept up to date; one a user wrote is left alone.
    if not settings.exists() or settings.read_text().startswith(HEADER):
        settings.write_text(DAGSTER_YAML)
    return home


# `dagster dev` is superseded by `dg dev` (the dagster-dg CLI, which wants the project laid
# out as a dg project) and says so on every start; `dagster dev` is still the documented way
# to run a workspace.yaml, so that one message, and nothing else, is filtered.
DAGSTER_DEV_WARNINGS = "ignore:Function `dev_command` is superseded"
RUN_GRACE_SECONDS = 600.0  # how long a clean stop waits for a run in progress


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # it has just exited
            os.killpg(proc.pid, sig)


def _wait_for(condition, timeout: float, stop: threading.Event | None = None) -> bool:
    """True when `condition()` holds within `timeout` (False early if `stop` is set)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or (stop is not None and stop.is_set()):
            return False
        time.sleep(0.2)  # a poll interval: the wait is on the condition
    return True


def _wait(procs: list[subprocess.Popen], timeout: float) -> bool:
    """True when all have exited within `timeout`."""
    return _wait_for(lambda: all(p.poll() is not None for p in procs), timeout)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(procs: dict[str, subprocess.Popen], again: threading.Event, grace: float = 20.0) -> None:
    """Stop the streamer and the endpoint, then Dagster, letting a run in progress finish.

    `dagster dev` alone gets SIGTERM, not its process group: it stops its UI and its daemon
    (so no run is launched any more) and tells its code server to shut down, which that does
    once the runs it executes have finished. So the wait is for the whole group to be gone.
    Signalling the group would interrupt a run halfway (Dagster then reports it failed, with
    a stack trace). `again` (a second Ctrl-C) or RUN_GRACE_SECONDS ends the wait: then the
    group is stopped, and run retries start the run again at the next `up`."""
    others = [p for name, p in procs.items() if name != "dagster"]
    for proc in others:
        _signal_group(proc, signal.SIGTERM)
    dagster = procs.get("dagster")
    if dagster is not None and dagster.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(dagster.pid, signal.SIGTERM)
    if not _wait(others, grace):
        for proc in others:
            _signal_group(proc, signal.SIGKILL)
    if dagster is not None:

        def group_gone() -> bool:
            dagster.poll()  # reaps dagster dev once it exits (a zombie still counts as in the group)
            return not _group_alive(dagster.pid)

        if not _wait_for(group_gone, 5.0):
            print("waiting for the run in progress to finish (Ctrl-C again to stop it now) ...", flush=True)
            if not _wait_for(group_gone, RUN_GRACE_SECONDS, again):
                print("stopping Dagster now; a run cut short starts again at the next `ml-demo up`", flush=True)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(dagster.pid, signal.SIGTERM)
                if not _wait_for(group_gone, grace):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(dagster.pid, signal.SIGKILL)
    for proc in procs.values():
        proc.wait()


def up_command(args: argparse.Namespace) -> int:
    config = default_config()
    aws = config.project.target == "aws"
    store = open_store(args.store or config.store_url).url  # absolute: the children run in the repository
    if aws:
        from ml_demo_dagster.aws.preflight import check

        check(config, store)  # one line for a setup mistake, before anything starts
    spool_arg = os.path.abspath(args.spool) if args.spool else None  # the children run in the repository
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home()), ML_DEMO__STORE__URL=store,
               SPARK_LOCAL_IP="127.0.0.1", PYTHONUNBUFFERED="1")  # fmt: skip
    dagster_env = dict(env, PYTHONWARNINGS=",".join(filter(None, [env.get("PYTHONWARNINGS"), DAGSTER_DEV_WARNINGS])))
    cli = [sys.executable, "-m", "ml_demo_dagster.cli"]
    commands = {
        "dagster": [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(args.port),
                    "-w", str(REPO_DIR / "workspace.yaml")],
        "endpoint": cli + ["serve", "--store", store],
        "streamer": cli + ["stream", "--source", "sim", "--store", store, "--speed", str(args.speed)]
        + (["--batch-size", str(args.batch_size)] if args.batch_size else [])
        + (["--spool", spool_arg] if spool_arg else []),
    }  # fmt: skip
    # The streamer's spool: after a stop or a crash, the next `up` continues the same stream.
    spool = spool_path(spool_arg or config.stream.spool, source="sim", store_url=store,
                       base=REPO_DIR)  # fmt: skip
    stop, again = threading.Event(), threading.Event()

    def on_signal(*_: object) -> None:
        (again if stop.is_set() else stop).set()

    serving = f"http://{config.serving.host}:{config.serving.port}/invocations  (GET /ping)"
    if aws:
        del commands["endpoint"]  # the SageMaker endpoint serves
        serving = f"SageMaker endpoint {config.endpoint_name}  (invoke_endpoint; made by the first deployment)"
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    procs = {
        name: subprocess.Popen(cmd, cwd=REPO_DIR, env=dagster_env if name == "dagster" else env,
                               start_new_session=True)
        for name, cmd in commands.items()
    }  # fmt: skip
    print(
        f"ml-demo is up:\n"
        f"  Dagster UI      http://127.0.0.1:{args.port}  (sensor staging_sensor retrains on each batch)\n"
        f"  endpoint        {serving}\n"
        f"  batches land in {store}/staging/\n"
        f"  streamer spool  {spool}  (the next start continues this stream)\n"
        f"  DAGSTER_HOME    {env['DAGSTER_HOME']}\n"
        f"Ctrl-C stops everything.",
        flush=True,
    )
    failed = None
    while not stop.is_set():
        for name, proc in procs.items():
            if proc.poll() is not None:
                failed = f"{name} exited with code {proc.returncode}"
                stop.set()
                break
        stop.wait(1.0)
    print("stopping ..." if not failed else f"{failed}; stopping the rest ...", flush=True)
    _stop(procs, again)
    if failed:
        raise UserError(failed)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run everything locally: Dagster UI + sensor, endpoint, simulated streamer",
                       description=__doc__)  # fmt: skip
    p.add_argument("--store", metavar="DIR_OR_S3URL", help="the store (default: store.url in the config)")
    p.add_argument("--port", type=int, default=3000, help="Dagster UI port (default 3000)")
    p.add_argument(
        "--speed",
        type=float,
        default=100.0,
        help="simulated market seconds per wall second (default 100: a 10,000-deal batch every ~2 min)",
    )
    p.add_argument("--batch-size", type=int, help="deals per batch (default: export.batch_size in the config)")
    p.add_argument("--spool", metavar="PATH", help="the streamer's spool (default: stream.spool in the config)")
    p.set_defaults(handler=up_command)
