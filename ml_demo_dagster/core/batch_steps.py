"""Each asset's work on one batch, without Dagster: the assets (defs/) and the Step Functions
steps job (ml_demo_dagster/aws/steps_job.py, an AWS Glue job) both call these, so a batch
goes through the same code whichever way it runs.

What differs between the two shells stays outside: the Dagster assets get predictions from
their scorer resource and turn results into metadata; the steps job gets predictions from
SageMaker transform jobs the state machine ran and reports through S3. Everything a step
needs from the project config travels as StepSettings, which is plain data (JSON), so the
steps job needs no config file and no pydantic on Glue.

Failures are one line: StepError (`retry` says whether running the step again can help) and
Quarantined (the batch was moved to quarantine/<T>/ with its reason; never retried).
No Dagster or AWS imports.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from glue.contract import features_matrix
from ml_demo_dagster.core import checks, quarantine
from ml_demo_dagster.core.dataset import TrainingDataset, assemble_dataset, read_dataset, write_dataset
from ml_demo_dagster.core.evaluation import Decision, Predictions, Report, Settings, decide, report
from ml_demo_dagster.core.layout import (
    batches_with_features,
    dataset_prefix,
    delete_features,
    features_prefix,
    live_key,
    raw_key,
    read_features,
    write_table,
)
from ml_demo_dagster.core.registry import ModelRegistry
from ml_demo_dagster.core.staging import StagingBatch, StagingFormatError
from ml_demo_dagster.core.store import ObjectStore

if TYPE_CHECKING:
    from ml_demo_dagster.config import ProjectConfig

LIVE_SCORES = ("precision", "recall", "roc_auc")


class StepError(RuntimeError):
    """A step cannot go on; the message is one line. `retry`: whether running it again can help."""

    def __init__(self, message: str, retry: bool = False):
        super().__init__(message)
        self.retry = retry


class Quarantined(StepError):
    """The batch breaks the staging contract or a blocking check, and was moved to quarantine/<T>/."""

    def __init__(self, batch_id: str, record: dict[str, Any]):
        super().__init__(f"batch {batch_id} quarantined: {quarantine.one_line(record)}")
        self.record = record


@dataclass(frozen=True)
class StepSettings:
    """What the steps need from the project config, as plain data."""

    feature_dim: int
    point_value: float
    window_batches: int
    split: tuple[float, float, float]
    validation_chunks: int
    target_recall: float
    confidence: float
    bootstrap_samples: int
    min_blocks: int
    gate_metric: str
    gate_confidence: float
    objective_metric: str
    static_hyperparameters: dict[str, Any] = field(default_factory=dict)
    integer_hyperparameters: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: ProjectConfig) -> StepSettings:
        return cls(
            feature_dim=cfg.feature_dim,
            point_value=cfg.market.point_value,
            window_batches=cfg.training.window_batches,
            split=tuple(cfg.training.split),
            validation_chunks=cfg.training.validation_chunks,
            target_recall=cfg.tuning.static.target_recall,
            confidence=cfg.evaluation.confidence,
            bootstrap_samples=cfg.evaluation.bootstrap_samples,
            min_blocks=cfg.evaluation.min_blocks,
            gate_metric=cfg.gate.metric,
            gate_confidence=cfg.gate.confidence,
            objective_metric=cfg.tuning.objective_metric,
            static_hyperparameters=cfg.static_hyperparameters(),
            integer_hyperparameters=tuple(sorted(k for k, r in cfg.tuning.ranges.items() if r.integer)),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StepSettings:
        data = json.loads(text)
        data["split"] = tuple(data["split"])
        data["integer_hyperparameters"] = tuple(data["integer_hyperparameters"])
        return cls(**data)

    def evaluation(self, batch_id: str) -> Settings:
        """Bootstrap settings, seeded by the batch so a re-run reproduces its intervals."""
        return Settings(self.confidence, self.bootstrap_samples, self.min_blocks, int(batch_id) % 2**32)

    def gate(self, batch_id: str) -> Settings:
        return replace(self.evaluation(batch_id), confidence=self.gate_confidence)


# --- ingest ------------------------------------------------------------------------------------


@dataclass
class LoadedBatch:
    """A batch read strictly, and the files moved back from quarantine/<T>/ after a fix (or None)."""

    batch: StagingBatch
    released: list[str] | None = None


def quarantine_batch(store: ObjectStore, batch_id: str, problem: dict, stage: str) -> Quarantined:
    """Move the batch to quarantine/<T>/ with its reason; the exception that says so."""
    return Quarantined(batch_id, quarantine.quarantine(store, batch_id, problem, stage))


def load_batch(store: ObjectStore, batch_id: str) -> LoadedBatch:
    """The batch, read strictly from staging/ (or from quarantine/<T>/ after a fix, then moved
    back); a contract violation quarantines it (Quarantined)."""
    files = quarantine.locate(store, batch_id)
    if files is None:
        raise StepError(f"batch {batch_id}: its two files are in neither staging/ nor "
                        f"{quarantine.quarantine_prefix(batch_id)}")  # fmt: skip
    try:
        batch = quarantine.read(store, files)
    except StagingFormatError as e:
        raise quarantine_batch(store, batch_id, quarantine.problem_of(e), "ingest") from None
    released = quarantine.release(store, batch_id) if files.place == "quarantine" else None
    return LoadedBatch(batch, released)


def raw_ticks(store: ObjectStore, batch_id: str) -> tuple[LoadedBatch, list[checks.Check]]:
    """Price ticks of the batch as raw/ticks/<T>.parquet, and their checks."""
    loaded = load_batch(store, batch_id)
    ticks = loaded.batch.prices
    write_table(store, raw_key("ticks", batch_id), ticks)
    return loaded, [checks.ticks_are_ordered(ticks), checks.spread_is_positive(ticks)]


def raw_deals(store: ObjectStore, batch_id: str, point_value: float) -> tuple[LoadedBatch, list[checks.Check]]:
    """Deals of the batch as raw/deals/<T>.parquet, and their checks."""
    loaded = load_batch(store, batch_id)
    deals, ticks = loaded.batch.deals, loaded.batch.prices
    write_table(store, raw_key("deals", batch_id), deals)
    return loaded, [checks.deals_have_ticks(deals, ticks), checks.deal_levels_match_stop_and_limit(deals, point_value)]


# --- features ----------------------------------------------------------------------------------


@dataclass
class CheckedFeatures:
    table: pa.Table
    X: np.ndarray
    labels: np.ndarray
    checks: list[checks.Check]


def check_features(store: ObjectStore, batch_id: str, feature_dim: int) -> CheckedFeatures:
    """The feature job's output for the batch and its checks. Features that fail a blocking
    check are deleted (marker first) and the batch is quarantined (Quarantined), so no later
    window can read them."""
    table = read_features(store, batch_id)
    X = features_matrix(table.column("features"))
    labels = table.column("label").to_numpy()
    results = [
        checks.features_have_no_nan(X, labels),
        checks.feature_width_is_605(X, feature_dim),
        checks.label_balance_is_reported(labels),
    ]
    failed = checks.failed_blocking(results)
    if failed:
        delete_features(store, batch_id)
        detail = "; ".join(f"{c.name} {c.metadata}" for c in failed)
        problem = {"file": store.uri(features_prefix(batch_id)), "line": None, "field": None,
                   "reason": f"features failed blocking check(s): {detail}"}  # fmt: skip
        raise quarantine_batch(store, batch_id, problem, "features")
    return CheckedFeatures(table, X, labels, results)


# --- training ----------------------------------------------------------------------------------


def window_for(available: list[str], batch_id: str, size: int) -> list[str]:
    """The newest `size` batches up to and including `batch_id`, oldest first."""
    return [b for b in available if int(b) <= int(batch_id)][-size:]


def training_dataset(store: ObjectStore, batch_id: str, s: StepSettings) -> tuple[list[str], TrainingDataset, dict]:
    """The window's dataset, written as channels under datasets/<T>/: (window, dataset, keys).
    A window whose data cannot make a dataset is a StepError that no retry changes."""
    window = window_for(batches_with_features(store), batch_id, s.window_batches)
    try:
        dataset = assemble_dataset([read_features(store, b) for b in window], split=s.split,
                                   validation_chunks=s.validation_chunks)  # fmt: skip
    except ValueError as e:
        raise StepError(f"batch {batch_id}: {e}") from None
    return window, dataset, write_dataset(dataset, store, dataset_prefix(batch_id))


def record_tuned_model(
    store: ObjectStore, batch_id: str, dataset: TrainingDataset, s: StepSettings, *, artifact: dict[str, Any],
    hyperparameters: dict[str, Any], objective_metric: str, objective: float | None, trials: int,
    validation_predictions: Predictions, test_predictions: Predictions,
) -> tuple[dict[str, Report], dict[str, Any]]:  # fmt: skip
    """Every score of the tuned model on validation and test, with its interval; its test
    predictions kept for the gate, and its registry record written. (reports, record)."""
    settings = s.evaluation(batch_id)
    # The test threshold is the model's own, set on validation for the target recall
    # (re-choosing it on the test rows would flatter noise).
    reports = {
        name: report(split.y, split.timestamp, predictions, dataset.gap_ms, s.target_recall, settings)
        for name, split, predictions in (
            ("validation", dataset.validation, validation_predictions),
            ("test", dataset.test, test_predictions),
        )
    }
    registry = ModelRegistry(store)
    registry.save_predictions(batch_id, "test", dataset.test.timestamp, dataset.test.y, test_predictions)
    record = {
        "version": batch_id,
        "artifact": artifact,
        "hyperparameters": hyperparameters,
        "objective_metric": objective_metric,
        "objective": objective,
        "validation": reports["validation"].to_dict(),
        "test": reports["test"].to_dict(),
        "trials": trials,
        "gap_ms": dataset.gap_ms,
    }
    registry.save_record(batch_id, record)
    return reports, record


# --- serving -----------------------------------------------------------------------------------


@dataclass
class LiveRows:
    """What live precision scores: the serving model (None before the first deployment) and
    this batch's rows."""

    pointer: dict[str, Any] | None
    table: pa.Table | None = None

    @property
    def X(self) -> np.ndarray:
        return features_matrix(self.table.column("features"))


def live_rows(store: ObjectStore, batch_id: str) -> LiveRows:
    pointer = ModelRegistry(store).champion_pointer()
    return LiveRows(pointer, read_features(store, batch_id) if pointer is not None else None)


def live_precision(
    store: ObjectStore, batch_id: str, s: StepSettings, rows: LiveRows, predictions: Predictions | None
) -> tuple[dict[str, Any], Report | None]:
    """The serving model's scores on this batch (labels arrive with it), before retraining,
    written to monitoring/live/<T>.json: (record, report or None without a serving model)."""
    record: dict[str, Any] = {"batch": batch_id, "serving_version": None, "live_precision": None}
    live = None
    if rows.pointer is not None:
        if predictions is None:
            raise StepError(f"batch {batch_id}: live precision needs the serving model's predictions")
        table = rows.table
        y = table.column("label").to_numpy()
        timestamp = table.column("timestamp").to_numpy()
        # Blocks as long as this batch's longest deal: rows in different blocks share no outcome.
        block_ms = float(table.column("duration_ms").to_numpy().max()) if table.num_rows else 0.0
        live = report(y, timestamp, predictions, block_ms, s.target_recall, s.evaluation(batch_id), scores=LIVE_SCORES)
        record.update(
            serving_version=rows.pointer["version"],
            base_rate=live.base_rate,
            rows=live.rows,
            **{f"live_{name}": live.scores[name].to_dict() for name in LIVE_SCORES},
        )
    store.put_text(live_key(batch_id), json.dumps(record, indent=2))
    return record, live


@dataclass
class GateRows:
    """What the gate compares: the challenger's predictions on its test split (kept when it
    was tuned), and the champion's version and those rows' features (None: no champion)."""

    timestamp: np.ndarray
    y: np.ndarray
    challenger: Predictions
    gap_ms: float
    champion_version: str | None
    X: np.ndarray | None


def gate_rows(store: ObjectStore, batch_id: str) -> GateRows:
    registry = ModelRegistry(store)
    timestamp, y, challenger = registry.load_predictions(batch_id, "test")
    gap_ms = registry.load_record(batch_id).get("gap_ms") or 0
    pointer = registry.champion_pointer()
    champion_version = pointer["version"] if pointer else None
    X = None
    if champion_version is not None:
        test = read_dataset(store, dataset_prefix(batch_id)).test
        if not np.array_equal(test.timestamp, timestamp):
            raise StepError(f"batch {batch_id}: the test split changed since the model was tuned; re-run tuned_model")
        X = test.X
    return GateRows(timestamp, y, challenger, gap_ms, champion_version, X)


def gate(
    store: ObjectStore, batch_id: str, s: StepSettings, rows: GateRows, champion: Predictions | None
) -> tuple[Decision, dict[str, Any]]:
    """The champion/challenger decision on the same rows, appended to the registry's history
    (deployed or not, and why): (decision, record). Promotes nothing."""
    if (champion is None) != (rows.champion_version is None):
        raise StepError(f"batch {batch_id}: the gate needs the champion's predictions exactly when there is one")
    decision = decide(rows.y, rows.timestamp, rows.challenger, champion, rows.gap_ms, metric=s.gate_metric,
                      settings=s.gate(batch_id))  # fmt: skip
    record = {
        "batch": batch_id,
        "challenger": batch_id,
        "champion": rows.champion_version,
        "test_rows": int(len(rows.y)),
        "base_rate": float(rows.y.mean()) if len(rows.y) else None,
        "deployed": decision.deploy,
        "reason": decision.reason,
        **decision.to_dict(),
    }
    ModelRegistry(store).record_decision(batch_id, record)
    return decision, record
