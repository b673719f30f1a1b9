"""Which tuning objective chooses models that generalise: a comparison by experiment (issue 7).

Two parts, both on simulated markets through the pipeline's own code
(tests/training/simulated_market.py: sim batches, the feature kernel, the window, the tuner
from [tuning], scores with intervals, the gate):

- `objectives` (paired): per seed, one dataset (the window after `--batches` batches of the
  default market, with trends), tuned once with each objective (linear-learner's
  `validation:objective_loss`, `validation:roc_auc_score`, `validation:precision` =
  precision at the model's validation-set threshold for the target recall). Each chosen
  model, and a plain ridge regression fitted on the same training split (closed form,
  standardised features, penalty chosen on validation squared error), is scored on fresh
  markets from other seeds (3 batches, pooled). Same data for every objective, so the
  differences between objectives are paired.
- `loop`: the whole retraining loop with the configured objective: on the trending market,
  the model serving after the last batch against ridge; on a pure random walk (momentum 0),
  how often the gate deploys and how often the test-AUC interval holds 0.5.

Usage: .venv/bin/python benchmarks/model_selection.py [objectives|loop|both] [--seeds 12]
       [--walk-seeds 10] [--batches 3] [--json FILE]
Prints markdown tables for BENCHMARKS.md. Slow: tens of minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "training"))

from simulated_market import feature_tables, fresh_market, retrain, ridge_reference, with_settings  # noqa: E402

from benchmarks.machine import describe_machine  # noqa: E402
from ml_demo_dagster.config import default_config  # noqa: E402
from ml_demo_dagster.core.dataset import assemble_dataset  # noqa: E402
from ml_demo_dagster.core.metrics import roc_auc  # noqa: E402
from ml_demo_dagster.core.tuner import tune  # noqa: E402

OBJECTIVES = {
    "objective_loss": ("validation:objective_loss", "Minimize"),
    "roc_auc_score": ("validation:roc_auc_score", "Maximize"),
    "precision": ("validation:precision", "Maximize"),
}


def planted(config, seeds: list[int], batches: int) -> list[dict]:
    rows = []
    for seed in seeds:
        loop = retrain(config, feature_tables(config, seed, batches), seed=seed)
        X, y = fresh_market(config, [10_000 + 10 * seed + k for k in range(3)])
        row = {"seed": seed, "deployed_step": loop.champion_step}
        if loop.champion is not None:
            ridge = ridge_reference(loop.steps[loop.champion_step].dataset)
            row["model_auc"] = roc_auc(y, loop.champion.scores(X))
            row["ridge_auc"] = roc_auc(y, ridge(X))
            best = loop.steps[loop.champion_step].result.best
            row["validation_roc_auc"] = best.validation["roc_auc"]
        rows.append(row)
        print("  planted", json.dumps(row), flush=True)
    return rows


def random_walk(config, seeds: list[int], batches: int) -> list[dict]:
    walk = with_settings(config, sim={"momentum": 0.0})
    rows = []
    for seed in seeds:
        loop = retrain(walk, feature_tables(walk, 500 + seed, batches), seed=seed)
        for step in loop.steps:
            auc = step.test.scores["roc_auc"]
            rows.append({"seed": seed, "step": step.batch, "deploy": step.decision.deploy,
                         "claimed": auc.claimed, "holds_half": auc.contains(0.5), "test_auc": auc.value})  # fmt: skip
        print("  walk", seed, [(r["deploy"], r["holds_half"]) for r in rows if r["seed"] == seed], flush=True)
    return rows


def objectives(config, seeds: list[int], batches: int) -> tuple[list[dict], list[str]]:
    rows = []
    for seed in seeds:
        ds = assemble_dataset(feature_tables(config, seed, batches)[-config.training.window_batches :])
        X, y = fresh_market(config, [20_000 + 10 * seed + k for k in range(3)])
        row = {"seed": seed, "ridge": roc_auc(y, ridge_reference(ds)(X))}
        for name, (metric, kind) in OBJECTIVES.items():
            section = config.tuning.model_copy(update={"objective_metric": metric, "objective_type": kind})
            result = tune(ds, section, config.static_hyperparameters(), seed=seed)
            row[name] = roc_auc(y, result.model.scores(X))
        rows.append(row)
        print("  objectives", json.dumps(row), flush=True)
    names = list(OBJECTIVES)
    table = [
        "| objective | fresh AUC (mean) | minus ridge: mean | sd | worst | vs validation:precision |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        gap = np.array([r[name] - r["ridge"] for r in rows])
        paired = np.array([r[name] - r["precision"] for r in rows])
        table.append(
            f"| validation:{name} | {np.mean([r[name] for r in rows]):.3f} | {gap.mean():+.3f} | {gap.std(ddof=1):.3f} "
            f"| {gap.min():+.3f} | {paired.mean():+.3f} ± {paired.std(ddof=1) / np.sqrt(len(paired)):.3f} |"
        )
    table.append(f"| ridge reference | {np.mean([r['ridge'] for r in rows]):.3f} | | | | |")
    return rows, table


def loop(config, seeds: list[int], walk_seeds: list[int], batches: int) -> tuple[dict, list[str]]:
    p, w = planted(config, seeds, batches), random_walk(config, walk_seeds, batches)
    scored = [r for r in p if "model_auc" in r]
    gaps = np.array([r["model_auc"] - r["ridge_auc"] for r in scored])
    claimed = [r for r in w if r["claimed"]]
    table = [
        "| market | result |", "|---|---|",
        f"| trends: a model deployed | {len(scored)} of {len(p)} seeds |",
        f"| trends: fresh AUC of the serving model, mean (worst) | {np.mean([r['model_auc'] for r in scored]):.3f} "
        f"({min(r['model_auc'] for r in scored):.3f}) |",
        f"| trends: minus ridge, mean (worst) | {gaps.mean():+.3f} ({gaps.min():+.3f}) |",
        f"| random walk: gate deploys | {sum(r['deploy'] for r in w)} of {len(w)} decisions |",
        f"| random walk: test-AUC interval holds 0.5 | {sum(r['holds_half'] for r in claimed)} of {len(claimed)} "
        f"intervals claimed ({len(w)} runs) |",
    ]  # fmt: skip
    return {"planted": p, "walk": w}, table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=["objectives", "loop", "both"], default="both")
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--walk-seeds", type=int, default=10)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--json", help="also write the raw rows here")
    args = parser.parse_args()
    config = default_config()
    started, load = time.time(), os.getloadavg()[0]
    raw, tables = {}, []
    if args.part in ("objectives", "both"):
        raw["objectives"], table = objectives(config, list(range(1, args.seeds + 1)), args.batches)
        tables.append(("Tuning objectives, paired on the same data", table))
    if args.part in ("loop", "both"):
        seeds = list(range(1, args.seeds + 1))
        raw["loop"], table = loop(config, seeds, list(range(1, args.walk_seeds + 1)), args.batches)
        tables.append((f"The retraining loop with {config.tuning.objective_metric}", table))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str))
    print(f"\n{describe_machine()}; load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
          f"{time.time() - started:.0f} s; sim momentum {config.sim.momentum}, volatility {config.sim.volatility}, "
          f"{args.batches} batches of {config.export.batch_size} deals, tuning {config.tuning.max_jobs} jobs")  # fmt: skip
    for title, table in tables:
        print(f"\n{title}:\n\n" + "\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
