"""`ml-demo up` (what `make run` runs): the whole system on this machine.

Starts, each in its own process group: the Dagster UI and daemon (`dagster dev` on
127.0.0.1:3000, with a DAGSTER_HOME that persists across restarts), the local endpoint
(`ml-demo serve`), and the simulated streamer writing batches into the local store. The
staging sensor is on by default, so each batch is retrained on without a click. Ctrl-C
(or SIGTERM) stops all three; if one dies, the others are stopped too. With
project.target = "aws" (e.g. against `ml-demo sandbox`), the store is S3 and the model is
served by the SageMaker endpoint, so no local endpoint is started.
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
# A run cut short (Ctrl-C, a crash) is started again, so its batch is not lost; a run
# that failed on its data (a malformed batch, a failed check) is not.
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


def _stop(procs: dict[str, subprocess.Popen], grace: float = 20.0) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it has just exited
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def up_command(args: argparse.Namespace) -> int:
    config = default_config()
    aws = config.project.target == "aws"
    store = args.store or config.store_url
    if aws:
        from ml_demo_dagster.aws.preflight import check

        check(config, store)  # one line for a setup mistake, before anything starts
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home()), ML_DEMO__STORE__URL=store,
               SPARK_LOCAL_IP="127.0.0.1", PYTHONUNBUFFERED="1")  # fmt: skip
    cli = [sys.executable, "-m", "ml_demo_dagster.cli"]
    commands = {
        "dagster": [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(args.port),
                    "-w", str(REPO_DIR / "workspace.yaml")],
        "endpoint": cli + ["serve", "--store", store],
        "streamer": cli + ["stream", "--source", "sim", "--store", store, "--speed", str(args.speed)]
        + (["--batch-size", str(args.batch_size)] if args.batch_size else []),
    }  # fmt: skip
    serving = f"http://{config.serving.host}:{config.serving.port}/invocations  (GET /ping)"
    if aws:
        del commands["endpoint"]  # the SageMaker endpoint serves
        serving = f"SageMaker endpoint {config.endpoint_name}  (invoke_endpoint; made by the first deployment)"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    procs = {
        name: subprocess.Popen(cmd, cwd=REPO_DIR, env=env, start_new_session=True) for name, cmd in commands.items()
    }
    print(
        f"ml-demo is up:\n"
        f"  Dagster UI      http://127.0.0.1:{args.port}  (sensor staging_sensor retrains on each batch)\n"
        f"  endpoint        {serving}\n"
        f"  batches land in {store}/staging/\n"
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
    _stop(procs)
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
    p.set_defaults(handler=up_command)
