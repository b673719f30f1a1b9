"""Models and the champion, kept in the object store.

Every trained model is saved under its version with a record (hyperparameters, scores,
dataset facts, and `artifact`: where the model itself is, which depends on the target: the
local model below, or a SageMaker model). One small pointer, `models/champion.json`, names
the model that serves; it is replaced in one atomic put, so the endpoint (which polls it)
sees the old champion or the new one, never half of either. Every champion/challenger
decision, deployed or not, is appended to `models/history/` with the evidence
(core/evaluation.decide makes it), so the UI and a person can see why a model serves.

Keys:
  models/<version>/model.json    the local target's model (LinearLearnerModel.to_bytes)
  models/<version>/predictions-test.parquet  its predictions on its own test split
  models/<version>/record.json   what is known about it (written last: a version with a
                                 record is complete)
  models/champion.json           {"version", "promoted_at", "record"}
  models/history/<ns>-<version>.json   one decision or promotion each
No Dagster or AWS imports (the store hides which one it is).
"""

from __future__ import annotations

import io
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ml_demo_dagster.core.evaluation import Predictions
from ml_demo_dagster.core.linear_learner import LinearLearnerModel
from ml_demo_dagster.core.store import ObjectNotFound, ObjectStore

MODELS_PREFIX = "models/"
CHAMPION_KEY = "models/champion.json"
HISTORY_PREFIX = "models/history/"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message names the version or key."""


@dataclass
class Champion:
    """The serving model, its version and its record."""

    version: str
    model: LinearLearnerModel
    record: dict[str, Any]
    promoted_at: float


def _check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise RegistryError(f"invalid model version {version!r}: use letters, digits, '.', '_' or '-'")
    return version


def _json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, allow_nan=False, default=str).encode("utf-8")


def _clean(value: Any) -> Any:
    """NaN and infinities become None, so records are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class ModelRegistry:
    """Models by version, the champion pointer and the decision history, in one object store."""

    def __init__(self, store: ObjectStore):
        self.store = store

    @staticmethod
    def model_key(version: str) -> str:
        return f"{MODELS_PREFIX}{_check_version(version)}/model.json"

    @staticmethod
    def record_key(version: str) -> str:
        return f"{MODELS_PREFIX}{_check_version(version)}/record.json"

    def save_model(self, version: str, model: LinearLearnerModel) -> dict[str, Any]:
        """Store a local model under `version`; returns its artifact reference for the record."""
        key = self.model_key(version)
        self.store.put_bytes(key, model.to_bytes())
        return {"kind": "local", "uri": self.store.uri(key)}

    def save_record(self, version: str, record: dict[str, Any]) -> None:
        """Store what is known about `version` (written after its model: the version is then complete)."""
        self.store.put_bytes(self.record_key(version), _json(_clean(record)))

    def save(self, version: str, model: LinearLearnerModel, record: dict[str, Any]) -> str:
        """Store a local model and its record under `version`; returns the model's key."""
        artifact = self.save_model(version, model)
        self.save_record(version, {**record, "artifact": artifact})
        return self.model_key(version)

    @staticmethod
    def predictions_key(version: str, split: str) -> str:
        return f"{MODELS_PREFIX}{_check_version(version)}/predictions-{split}.parquet"

    def save_predictions(self, version: str, split: str, timestamp, y, predictions: Predictions) -> None:
        """The model's own predictions on a split of its dataset (rows in time order), for the gate to reuse."""
        table = pa.table({
            "timestamp": pa.array(np.asarray(timestamp, dtype=np.int64)),
            "label": pa.array(np.asarray(y, dtype=np.int8)),
            "score": pa.array(predictions.scores),
            "predicted": pa.array(predictions.labels),
        })  # fmt: skip
        sink = io.BytesIO()
        pq.write_table(table, sink)
        self.store.put_bytes(self.predictions_key(version, split), sink.getvalue())

    def load_predictions(self, version: str, split: str) -> tuple[np.ndarray, np.ndarray, Predictions]:
        """(timestamp, label, predictions) as save_predictions kept them."""
        key = self.predictions_key(version, split)
        try:
            table = pq.read_table(io.BytesIO(self.store.get_bytes(key)))
        except ObjectNotFound:
            raise RegistryError(f"{self.store.url}: no {split} predictions for model version {version!r}") from None
        column = lambda name: table.column(name).to_numpy()  # noqa: E731
        return column("timestamp"), column("label"), Predictions(column("score"), column("predicted"))

    def exists(self, version: str) -> bool:
        return self.store.exists(self.record_key(version))

    def load(self, version: str) -> LinearLearnerModel:
        """The model saved under `version`."""
        try:
            data = self.store.get_bytes(self.model_key(version))
        except ObjectNotFound:
            raise RegistryError(f"{self.store.url}: no model version {version!r}") from None
        try:
            return LinearLearnerModel.from_bytes(data)
        except ValueError as e:
            raise RegistryError(f"{self.store.uri(self.model_key(version))}: {e}") from None

    def load_record(self, version: str) -> dict[str, Any]:
        try:
            return json.loads(self.store.get_bytes(self.record_key(version)))
        except ObjectNotFound:
            raise RegistryError(f"{self.store.url}: no record for model version {version!r}") from None

    def versions(self) -> list[str]:
        """Saved versions, in key order."""
        out = []
        for key in self.store.list_keys(MODELS_PREFIX):
            parts = key[len(MODELS_PREFIX) :].split("/")
            if len(parts) == 2 and parts[1] == "record.json":
                out.append(parts[0])
        return out

    def champion_pointer(self) -> dict[str, Any] | None:
        """The raw champion pointer (cheap: one small object), or None when there is no champion."""
        try:
            data = self.store.get_bytes(CHAMPION_KEY)
        except ObjectNotFound:
            return None
        try:
            pointer = json.loads(data)
            _check_version(pointer["version"])
        except (ValueError, KeyError, TypeError, RegistryError) as e:
            raise RegistryError(f"{self.store.uri(CHAMPION_KEY)}: not a champion pointer ({e})") from None
        return pointer

    def champion(self) -> Champion | None:
        """The serving model, or None before the first deployment."""
        pointer = self.champion_pointer()
        if pointer is None:
            return None
        version = pointer["version"]
        return Champion(
            version=version,
            model=self.load(version),
            record=pointer.get("record") or {},
            promoted_at=float(pointer.get("promoted_at") or 0.0),
        )

    def promote(self, version: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """Make a saved version the champion (one atomic write of the pointer)."""
        if not self.exists(version):
            raise RegistryError(f"{self.store.url}: cannot promote {version!r}: no such model version")
        pointer = {
            "version": version,
            "promoted_at": time.time(),
            "record": _clean(record if record is not None else self.load_record(version)),
        }
        self.store.put_bytes(CHAMPION_KEY, _json(pointer))
        self._append("promote", version, {"record": pointer["record"]})
        return pointer

    def record_decision(self, version: str, record: dict[str, Any]) -> dict[str, Any]:
        """Append a gate decision (the evidence, deployed or not, why) to the history; promotes nothing."""
        return self._append("decision", version, {"record": record})

    def _append(self, event: str, version: str, body: dict[str, Any]) -> dict[str, Any]:
        at = time.time_ns()
        entry = _clean({"event": event, "version": _check_version(version), "at": at / 1e9, **body})
        self.store.put_bytes(f"{HISTORY_PREFIX}{at:020d}-{version}.json", _json(entry))
        return entry

    def history(self) -> list[dict[str, Any]]:
        """Every decision and promotion so far, oldest first."""
        return [json.loads(self.store.get_bytes(key)) for key in self.store.list_keys(HISTORY_PREFIX)]
