"""Simulated markets through the retraining loop as the pipeline runs it, without Dagster or Spark.

The same pieces as the assets, in the same order: the sim source and the streamer's
dealer and exporter write seed-format batches; the single-process feature job (the
Spark job's yardstick, same per-batch code) turns each into features; then, per batch,
the window's dataset (`assemble_dataset`), the tuner (`tune`, from the project's tuning
config), the scores with their intervals (`evaluation.report`) and the gate
(`evaluation.decide` against the model serving). Used by the model-trust tests and by
`benchmarks/model_selection.py`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from glue.contract import BatchInput, features_matrix
from glue.feature_local import build_features_local
from ml_demo_dagster.config import ProjectConfig
from ml_demo_dagster.core.dataset import TrainingDataset, assemble_dataset
from ml_demo_dagster.core.evaluation import Decision, Predictions, Report, Settings, decide, report
from ml_demo_dagster.core.linear_learner import LinearLearnerModel
from ml_demo_dagster.core.staging import deals_key, price_key
from ml_demo_dagster.core.store import LocalStore
from ml_demo_dagster.core.tuner import TuningResult, tune
from streamer.runner import run_stream
from streamer.sources.sim import SimSource

START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
DAY_MS = 86_400_000


def with_settings(config: ProjectConfig, **sections: dict[str, Any]) -> ProjectConfig:
    """The config with some values of some sections replaced, e.g. sim={"momentum": 0.0}."""
    updates = {name: getattr(config, name).model_copy(update=values) for name, values in sections.items()}
    return config.model_copy(update=updates)


def feature_tables(config: ProjectConfig, seed: int, batches: int, start_ms: int = START_MS) -> list[pa.Table]:
    """`batches` simulated batches of the sim market with this seed, as the feature job's tables."""
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp) / "store")
        stats = run_stream(config, SimSource(config, seed=seed, start_ms=start_ms), store, max_batches=batches)
        inputs = [BatchInput(b, store.uri(deals_key(b)), store.uri(price_key(b))) for b in stats.batch_ids]
        out = Path(tmp) / "features"
        build_features_local(inputs, out, config.features.history_seconds)
        table = pq.read_table(out, schema=None).sort_by("timestamp") if inputs else None
    if table is None:
        return []
    return [table.filter(pa.compute.equal(table.column("batch"), b)) for b in stats.batch_ids]


def fresh_market(config: ProjectConfig, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of one batch from each of these seeds, each on a later day, pooled."""
    tables = []
    for k, seed in enumerate(seeds):
        tables += feature_tables(config, seed, 1, start_ms=START_MS + (k + 1) * 7 * DAY_MS)
    table = pa.concat_tables(tables)
    return features_matrix(table.column("features")), table.column("label").to_numpy()


@dataclass
class Step:
    """One batch of the loop: what was tuned, how it scored on test, what the gate decided."""

    batch: int
    dataset: TrainingDataset
    result: TuningResult
    test: Report
    decision: Decision


@dataclass
class Loop:
    """The retraining loop over a market's batches, and the model serving at the end."""

    steps: list[Step] = field(default_factory=list)
    champion: LinearLearnerModel | None = None
    champion_step: int | None = None  # the step whose model serves at the end


def retrain(config: ProjectConfig, tables: list[pa.Table], seed: int = 0) -> Loop:
    """Run the pipeline's per-batch retraining over the batches, oldest first."""
    loop = Loop()
    target_recall = config.tuning.static.target_recall
    for k in range(len(tables)):
        window = tables[max(0, k + 1 - config.training.window_batches) : k + 1]
        ds = assemble_dataset(window, split=config.training.split)
        settings = Settings.from_config(config.evaluation, seed=seed * 1000 + k)
        result = tune(ds, config.tuning, config.static_hyperparameters(), seed=seed, settings=settings)
        test = report(ds.test.y, ds.test.timestamp, result.test_predictions, ds.gap_ms, target_recall, settings)
        champion = Predictions(*loop.champion.predict(ds.test.X)) if loop.champion is not None else None
        gate = Settings(config.gate.confidence, settings.samples, settings.min_blocks, settings.seed)
        decision = decide(ds.test.y, ds.test.timestamp, result.test_predictions, champion, ds.gap_ms,
                          metric=config.gate.metric, settings=gate)  # fmt: skip
        if decision.deploy:
            loop.champion, loop.champion_step = result.model, k
        loop.steps.append(Step(k, ds, result, test, decision))
    return loop


RIDGE_PENALTIES = np.logspace(-2, 10, 49)


def ridge_reference(ds: TrainingDataset, lambdas: np.ndarray = RIDGE_PENALTIES):
    """A plain ridge regression of the 0/1 label on standardised features, closed form, with the
    penalty whose predictions have the least squared error on the validation split (ridge's own
    loss); returns a scoring function."""
    mean = ds.train.X.mean(axis=0, dtype=np.float64)
    scale = ds.train.X.std(axis=0, dtype=np.float64)
    scale[scale < 1e-12] = 1.0
    Z = (ds.train.X - mean) / scale
    Zv = (ds.validation.X - mean) / scale
    centre = ds.train.y.mean()
    # Closed form through the eigenvectors of the Gram matrix: one decomposition for every penalty.
    eigenvalues, V = np.linalg.eigh(Z.T @ Z)
    Vty = V.T @ (Z.T @ (ds.train.y - centre))
    weights = [V @ (Vty / (eigenvalues + lam)) for lam in lambdas]
    errors = [float(np.mean((ds.validation.y - centre - Zv @ w) ** 2)) for w in weights]
    w = weights[int(np.argmin(errors))]
    return lambda X: ((X - mean) / scale) @ w
