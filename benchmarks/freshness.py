"""Freshness: time from a complete batch landing in staging/ to the deploy decision.

Streams simulated 10,000-deal batches into a temporary local store, then, for each one,
starts the clock when its deals file has landed and runs what the sensor would run: one
sensor evaluation (the watcher scan) and the whole asset graph for that batch, in this
process, with the project's tuning config (10 trials, 2 in parallel). Prints the time by
stage (from Dagster's step events) and the total.

The first batch is "cold": Spark starts inside batch_features, as it does in every run
that `dagster dev` launches (each run is a new process). Later batches are "warm"
(Spark already up) and have a growing training window.

    .venv/bin/python benchmarks/freshness.py [--batches 2] [--batch-size 10000]

With --dagster-dev it measures what `make run` users see instead: a real `dagster dev`
(temporary DAGSTER_HOME, one run at a time) with the staging sensor on; each batch lands
in its store and the clock runs until that batch's run has finished, split into the wait
for the sensor's next tick, the run's launch (a new process, loading the code location),
and the steps.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe_machine  # noqa: E402

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

STAGES = [
    "raw_ticks",
    "raw_deals",
    "batch_features",
    "live_precision",
    "training_dataset",
    "tuned_model",
    "deployed_model",
]


def step_seconds(instance, run_id: str) -> dict[str, float]:
    starts, seconds = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS":
            seconds[event.step_key] = entry.timestamp - starts[event.step_key]
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dagster-dev", action="store_true", help="measure through a real `dagster dev`")
    args = parser.parse_args()
    os.environ["ML_DEMO__EXPORT__BATCH_SIZE"] = str(args.batch_size)

    import dagster as dg

    from ml_demo_dagster.config import load_config
    from ml_demo_dagster.core.staging import deals_key, price_key
    from ml_demo_dagster.core.store import open_store
    from ml_demo_dagster.core.watch import StagingCursor, scan
    from ml_demo_dagster.definitions import ASSETS
    from ml_demo_dagster.defs.partitions import batches
    from ml_demo_dagster.defs.resources import StoreResource, resources_for
    from streamer.runner import run_stream
    from streamer.sources import make_source

    config = load_config()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ml-demo-freshness-") as tmp:
        # One continuous simulated market, streamed up front into an outbox; each batch
        # then lands in the pipeline's store when its turn comes (price, then deals).
        outbox = open_store(str(Path(tmp) / "outbox"))
        stats = run_stream(config, make_source("sim", config, seed=args.seed), outbox, max_batches=args.batches)
        store = open_store(str(Path(tmp) / "store"))
        if args.dagster_dev:
            return through_dagster_dev(args, config, outbox, store, stats.batch_ids, Path(tmp))
        resources = resources_for(config, "local")
        resources["store"] = StoreResource(url=store.url, region=config.project.region)
        instance = dg.DagsterInstance.ephemeral()
        cursor = StagingCursor()
        for n, landing in enumerate(stats.batch_ids):
            for key in (price_key(landing), deals_key(landing)):
                store.put_bytes(key, outbox.get_bytes(key))
            landed = time.perf_counter()  # the batch is complete: the clock starts
            found = scan(store, cursor)
            cursor = found.cursor
            (batch_id,) = found.complete
            instance.add_dynamic_partitions(batches.name, [batch_id])
            sensed = time.perf_counter()
            result = dg.materialize(
                ASSETS,
                partition_key=batch_id,
                instance=instance,
                resources=resources,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            total = time.perf_counter() - landed
            stages = step_seconds(instance, result.run_id)
            decision = next(
                e.event_specific_data.materialization.metadata["decision"].value
                for e in result.get_asset_materialization_events()
                if e.event_specific_data.materialization.asset_key.to_user_string() == "deployed_model"
            )
            rows.append(
                {"batch": n + 1, "kind": "cold" if n == 0 else "warm", "sensor": sensed - landed, **stages,
                 "total": total, "decision": decision}
            )  # fmt: skip

    for r in rows:
        r["batch"] = f"{r['batch']} ({r.pop('kind')})"
    title = f"window {config.training.window_batches} batches"
    print_table(args, config, title, ["batch", "sensor", *STAGES, "total", "decision"], rows)
    return 0


def print_table(args, config, title: str, header: list[str], rows: list[dict]) -> None:
    """The results as a markdown table, seconds with one decimal."""
    print(f"# freshness: {args.batch_size:,}-deal batches, {config.tuning.max_jobs} trials, "
          f"{config.tuning.max_parallel_jobs} in parallel, {title}")  # fmt: skip
    print(f"# {describe_machine()}, {datetime.now(UTC):%Y-%m-%d}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [v if isinstance(v, str) else f"{v:.1f} s" for v in (r.get(h, 0.0) for h in header)]
        print("| " + " | ".join(cells) + " |")


def through_dagster_dev(args, config, outbox, store, batch_ids, tmp: Path) -> int:
    import signal
    import subprocess
    import urllib.request

    import dagster as dg

    from ml_demo_dagster.cli.up import DAGSTER_YAML
    from ml_demo_dagster.config import REPO_DIR
    from ml_demo_dagster.core.staging import deals_key, price_key

    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = dict(os.environ, DAGSTER_HOME=str(home), ML_DEMO__STORE__URL=store.url, SPARK_LOCAL_IP="127.0.0.1")
    port = "3917"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", port, "-w", str(REPO_DIR / "workspace.yaml")],
        cwd=REPO_DIR, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    rows = []
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("dagster dev did not come up") from None
                time.sleep(0.5)
        os.environ["DAGSTER_HOME"] = str(home)
        instance = dg.DagsterInstance.get()
        for n, batch_id in enumerate(batch_ids):
            for key in (price_key(batch_id), deals_key(batch_id)):
                store.put_bytes(key, outbox.get_bytes(key))
            landed = time.time()
            deadline = time.monotonic() + 600
            while True:
                runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/run_key": batch_id}))
                done = [
                    r
                    for r in runs
                    if r.dagster_run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
                ]
                if done:
                    record = done[0]
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"no finished run for batch {batch_id} within 600 s")
                time.sleep(0.5)
            run = record.dagster_run
            stages = step_seconds(instance, run.run_id)
            first_step = min(
                e.timestamp for e in instance.all_logs(run.run_id)
                if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"
            )  # fmt: skip
            rows.append({
                "batch": f"{n + 1} ({run.status.value.lower()})",
                "sensor": record.create_timestamp.timestamp() - landed,
                "launch": first_step - record.create_timestamp.timestamp(),
                **stages,
                "total": record.end_time - landed,
            })  # fmt: skip
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    title = f"through dagster dev, sensor every {config.dagster.sensor_interval_seconds} s"
    print_table(args, config, title, ["batch", "sensor", "launch", *STAGES, "total"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
