"""Models and the champion, kept in the object store.

Every trained model is saved under its version with a record (hyperparameters, scores,
dataset facts). One small pointer, `models/champion.json`, names the model that serves;
it is replaced in one atomic put, so the endpoint (which polls it) sees the old champion
or the new one, never half of either. Every champion/challenger decision, deployed or
not, is appended to `models/history/` with both scores, so the UI and a person can see
why a model serves.

The gate (`decide`, DESIGN §4.3): a challenger is deployed only if it strictly beats the
champion on the newest test split, both scored on the same rows (the caller scores both);
the first model is deployed only if it strictly beats the base rate (the precision of
predicting "profit" for every deal). A score that is not a finite number never deploys.

Keys:
  models/<version>/model.json    the model (LinearLearnerModel.to_bytes)
  models/<version>/record.json   what is known about it
  models/champion.json           {"version", "promoted_at", "record"}
  models/history/<ns>-<version>.json   one decision or promotion each
No Dagster or AWS imports (the store hides which one it is).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

from ml_demo_dagster.core.linear_learner import LinearLearnerModel
from ml_demo_dagster.core.store import ObjectNotFound, ObjectStore

MODELS_PREFIX = "models/"
CHAMPION_KEY = "models/champion.json"
HISTORY_PREFIX = "models/history/"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message names the version or key."""


@dataclass(frozen=True)
class Decision:
    """Whether the challenger replaces the champion, why, and the scores compared."""

    deploy: bool
    reason: str
    challenger_score: float
    champion_score: float | None
    base_rate: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Champion:
    """The serving model, its version and its record."""

    version: str
    model: LinearLearnerModel
    record: dict[str, Any]
    promoted_at: float


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def decide(challenger_score: float, champion_score: float | None, base_rate: float) -> Decision:
    """Deploy only if the challenger strictly beats the champion (or, with no champion, the base rate)."""
    args = dict(challenger_score=challenger_score, champion_score=champion_score, base_rate=base_rate)
    if not _finite(challenger_score):
        return Decision(False, f"challenger score {challenger_score!r} is not a number", **args)
    if champion_score is None:
        if not _finite(base_rate):
            return Decision(False, f"base rate {base_rate!r} is not a number", **args)
        if challenger_score > base_rate:
            return Decision(True, f"first model: {challenger_score:.4f} beats the base rate {base_rate:.4f}", **args)
        return Decision(
            False, f"first model: {challenger_score:.4f} does not beat the base rate {base_rate:.4f}", **args
        )
    if not _finite(champion_score):
        # A champion that cannot be scored cannot be defended; the challenger still has to beat the base rate.
        if _finite(base_rate) and challenger_score > base_rate:
            return Decision(
                True,
                f"champion score {champion_score!r} is not a number; challenger "
                f"{challenger_score:.4f} beats the base rate {base_rate:.4f}",
                **args,
            )
        return Decision(
            False,
            f"champion score {champion_score!r} is not a number and the challenger "
            f"{challenger_score:.4f} does not beat the base rate {base_rate!r}",
            **args,
        )
    if challenger_score > champion_score:
        return Decision(True, f"challenger {challenger_score:.4f} beats champion {champion_score:.4f}", **args)
    return Decision(False, f"challenger {challenger_score:.4f} does not beat champion {champion_score:.4f}", **args)


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

    def save(self, version: str, model: LinearLearnerModel, record: dict[str, Any]) -> str:
        """Store a model and its record under `version`; returns the model's key."""
        key = self.model_key(version)
        # The record is written second: a version with a record always has its model.
        self.store.put_bytes(key, model.to_bytes())
        self.store.put_bytes(self.record_key(version), _json(_clean(record)))
        return key

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
        if not self.store.exists(self.model_key(version)):
            raise RegistryError(f"{self.store.url}: cannot promote {version!r}: no such model version")
        pointer = {
            "version": version,
            "promoted_at": time.time(),
            "record": _clean(record if record is not None else self.load_record(version)),
        }
        self.store.put_bytes(CHAMPION_KEY, _json(pointer))
        self._append("promote", version, {"record": pointer["record"]})
        return pointer

    def record_decision(self, version: str, record: dict[str, Any], decision: Decision | None = None) -> dict[str, Any]:
        """Append a gate decision (both scores, deployed or not, why) to the history; promotes nothing."""
        body = {"record": record}
        if decision is not None:
            body["decision"] = decision.to_dict()
        return self._append("decision", version, body)

    def _append(self, event: str, version: str, body: dict[str, Any]) -> dict[str, Any]:
        at = time.time_ns()
        entry = _clean({"event": event, "version": _check_version(version), "at": at / 1e9, **body})
        self.store.put_bytes(f"{HISTORY_PREFIX}{at:020d}-{version}.json", _json(entry))
        return entry

    def history(self) -> list[dict[str, Any]]:
        """Every decision and promotion so far, oldest first."""
        return [json.loads(self.store.get_bytes(key)) for key in self.store.list_keys(HISTORY_PREFIX)]
