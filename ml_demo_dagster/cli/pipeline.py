"""`ml-demo pipeline` and `ml-demo demo`: the retraining graph without a Dagster daemon.

`pipeline` evaluates the staging sensor once over what is in the store now and
materializes every batch it requests, in this process (ml_demo_dagster/headless.py);
`--retry T` runs a quarantined batch again after its files were fixed. It lists every batch
it saw (trained, quarantined with the reason, waiting with what for) and exits 0 when each
was trained or quarantined: bad data is an outcome, not a failure. It exits 1 only when the
pipeline itself failed on a batch. `demo` first streams N simulated batches into the store,
then does the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ml_demo_dagster.cli.common import UserError, add_store_argument
from ml_demo_dagster.config import default_config


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return "n/a" if v is None else str(v)


def _interval(ci: list | None) -> str:
    if ci is None:
        return ""
    low, high = ci
    if low is None or high is None:
        return "  (no 95% interval: too few independent blocks)"
    return f"  95% interval [{low:.4f}, {high:.4f}]"


def _batch_id(value: str) -> str:
    if not (value.isdigit() and len(value) == 13):
        raise argparse.ArgumentTypeError(f"{value!r} is not a batch id (T: 13 digits, epoch ms)")
    return value


def print_batch(row: dict[str, Any]) -> None:
    """One human-readable block per batch, on stdout, as soon as the batch is done."""
    status = row["status"]
    if status in ("quarantined", "waiting", "ignored"):
        print(f"batch {row['batch'] or row.get('key')}: {status}: {row['reason']}")
        if status == "quarantined":
            print(f"  files and reason.json in {row['quarantine']}; fix them, then --retry {row['batch']}")
        sys.stdout.flush()
        return
    print(f"batch {row['batch']}: {status} in {row['seconds']} s")
    if status != "trained":
        print(f"  error: {row.get('error', 'see the Dagster run for details')}")
    for key in ("deals", "feature_rows", "features", "train_rows", "validation_rows", "test_rows",
                "purge_gap_seconds", "trials", "best_hyperparameters", "objective_metric", "validation_objective",
                "validation_roc_auc", "test_precision", "test_recall", "test_roc_auc", "test_base_rate",
                "live_precision", "live_roc_auc", "gate_metric", "challenger_score", "champion_score",
                "gate_difference", "decision", "decision_reason", "failed_checks", "notes"):  # fmt: skip
        if key in row:
            print(f"  {key:22s} {_fmt(row[key])}{_interval(row.get(key + '_ci95'))}")
    sys.stdout.flush()


def _run(args: argparse.Namespace, config) -> int:
    from ml_demo_dagster.headless import run_pipeline

    store_url = args.store or config.store_url
    if (args.target or config.project.target) == "aws":
        from ml_demo_dagster.aws.preflight import check

        check(config, store_url)  # one line for a setup mistake, before any run starts
    try:
        summary = run_pipeline(
            config,
            store_url,
            target=args.target,
            on_batch=None if args.json else print_batch,
            log_level="DEBUG" if args.verbose else "WARNING",
            retry=getattr(args, "retry", None) or (),
        )
    except ValueError as e:  # an unavailable target, a batch that is not quarantined: the user's to fix
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    elif "message" in summary and not summary["batches"]:
        print(summary["message"])
    else:
        print("overall: " + _fmt(summary["overall"]))
    return 0 if summary["overall"]["failed"] == 0 else 1


def pipeline_command(args: argparse.Namespace) -> int:
    return _run(args, default_config())


def demo_command(args: argparse.Namespace) -> int:
    from ml_demo_dagster.core.store import open_store
    from streamer.runner import run_stream
    from streamer.sources import make_source

    config = default_config()
    if args.batches < 1:
        raise UserError("--batches must be at least 1")
    store_url = args.store or config.store_url
    store = open_store(store_url, region=config.project.region)
    source = make_source("sim", config, seed=args.seed)
    stats = run_stream(config, source, store, max_batches=args.batches)
    if not args.json:
        print(f"streamed {len(stats.batch_ids)} simulated batches into {store.url}/staging/")
    return _run(args, config)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="retrain on the complete batches in staging/ now, in process",
                       description="Evaluate the staging sensor once over what is in the store now and "
                                   "materialize every batch it requests, in this process.")  # fmt: skip
    add_store_argument(p)
    p.add_argument("--target", choices=["local", "aws"], help="resources to use (default: project.target)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--verbose", action="store_true", help="show Dagster's event log on stderr")
    p.add_argument("--retry", metavar="T", type=_batch_id, action="append",
                   help="run quarantined batch T again (after fixing its files in quarantine/T/); repeatable")  # fmt: skip
    p.set_defaults(handler=pipeline_command)

    d = sub.add_parser("demo", help="stream N simulated batches, then run the pipeline on them")
    add_store_argument(d)
    d.add_argument("--batches", type=int, default=3, help="simulated batches to stream (default 3)")
    d.add_argument("--seed", type=int, default=7, help="seed of the simulated market (default 7)")
    d.add_argument("--target", choices=["local", "aws"], help=argparse.SUPPRESS)
    d.add_argument("--json", action="store_true", help="print the summary as JSON")
    d.add_argument("--verbose", action="store_true", help="show Dagster's event log on stderr")
    d.set_defaults(handler=demo_command)
