"""Which tuning objective chooses models that generalise: a comparison by experiment (issue 7).

For each objective (linear-learner's `validation:objective_loss`, `validation:roc_auc_score`,
`validation:precision` = precision at the model's validation-set threshold for the target
recall), the retraining loop runs as the pipeline does (tests/training/simulated_market.py:
sim batches, the feature kernel, window, tuner from [tuning], scores with intervals, gate):

- planted signal (the default market, sim.momentum from the config): the model serving
  after the last batch is scored on fresh markets from other seeds (pooled), against a
  plain ridge regression fitted on that model's own training split (closed form,
  standardised features, penalty chosen on validation squared error);
- pure random walk (momentum 0): how often the gate deploys, and how often the test-AUC
  interval holds 0.5.

Usage: .venv/bin/python benchmarks/model_selection.py [--seeds 6] [--walk-seeds 10]
       [--batches 3] [--objectives objective_loss,roc_auc_score,precision] [--json FILE]
Prints a markdown table for BENCHMARKS.md. Slow: minutes per objective.
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
from ml_demo_dagster.core.metrics import roc_auc  # noqa: E402

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


def summarise(name: str, p: list[dict], w: list[dict]) -> dict:
    scored = [r for r in p if "model_auc" in r]
    gaps = [r["model_auc"] - r["ridge_auc"] for r in scored]
    claimed = [r for r in w if r["claimed"]]
    return {
        "objective": name,
        "deployed": f"{len(scored)}/{len(p)}",
        "model_auc": float(np.mean([r["model_auc"] for r in scored])) if scored else None,
        "ridge_auc": float(np.mean([r["ridge_auc"] for r in scored])) if scored else None,
        "mean_gap": float(np.mean(gaps)) if gaps else None,
        "worst_gap": float(np.min(gaps)) if gaps else None,
        "optimism": float(np.mean([r["validation_roc_auc"] - r["model_auc"] for r in scored])) if scored else None,
        "walk_deploy_rate": sum(r["deploy"] for r in w) / len(w) if w else None,
        "walk_coverage": sum(r["holds_half"] for r in claimed) / len(claimed) if claimed else None,
        "walk_claimed": f"{len(claimed)}/{len(w)}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--walk-seeds", type=int, default=10)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--json", help="also write the raw rows here")
    args = parser.parse_args()
    base = default_config()
    started, load = time.time(), os.getloadavg()[0]
    results, raw = [], {}
    for name in args.objectives.split(","):
        metric, kind = OBJECTIVES[name]
        config = with_settings(base, tuning={"objective_metric": metric, "objective_type": kind})
        print(f"{name}:", flush=True)
        p = planted(config, list(range(1, args.seeds + 1)), args.batches)
        w = random_walk(config, list(range(1, args.walk_seeds + 1)), args.batches)
        raw[name] = {"planted": p, "walk": w}
        results.append(summarise(name, p, w))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str))
    print(f"\n{describe_machine()}; load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
          f"{time.time() - started:.0f} s; sim momentum {base.sim.momentum}, volatility {base.sim.volatility}, "
          f"{args.batches} batches of {base.export.batch_size} deals, tuning {base.tuning.max_jobs} jobs\n")  # fmt: skip
    header = ["objective", "deployed", "model_auc", "ridge_auc", "mean_gap", "worst_gap", "optimism",
              "walk_deploy_rate", "walk_coverage", "walk_claimed"]  # fmt: skip
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in results:
        print("| " + " | ".join(f"{r[h]:.3f}" if isinstance(r[h], float) else str(r[h]) for h in header) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
