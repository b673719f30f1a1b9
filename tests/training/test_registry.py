"""The champion gate and the model registry in the object store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml_demo_dagster.core.evaluation import Predictions
from ml_demo_dagster.core.linear_learner import LinearLearnerModel
from ml_demo_dagster.core.registry import CHAMPION_KEY, ModelRegistry, RegistryError
from ml_demo_dagster.core.store import LocalStore


def model(weight: float, d: int = 3) -> LinearLearnerModel:
    return LinearLearnerModel(
        weights=np.full(d, weight), bias=0.0, mean=None, scale=None, threshold=0.5, hyperparameters={"l1": 0.0}
    )


def test_save_load_promote_and_history(tmp_path):
    store = LocalStore(tmp_path)
    registry = ModelRegistry(store)
    assert registry.champion() is None and registry.history() == [] and registry.versions() == []
    registry.save("1700000000001", model(0.1), {"test": {"precision": 0.6}})
    registry.save("1700000000002", model(0.2), {"test": {"precision": float("nan")}})
    assert registry.versions() == ["1700000000001", "1700000000002"]
    assert np.array_equal(registry.load("1700000000002").weights, np.full(3, 0.2))
    record = registry.load_record("1700000000002")
    assert record["test"] == {"precision": None}  # strict JSON
    assert record["artifact"] == {"kind": "local", "uri": str(tmp_path / "models/1700000000002/model.json")}

    registry.record_decision("1700000000001", {"challenger_score": 0.6, "deploy": True})
    registry.promote("1700000000001", {"why": "first"})
    champion = registry.champion()
    assert champion.version == "1700000000001" and champion.record == {"why": "first"}
    assert np.array_equal(champion.model.weights, np.full(3, 0.1))

    registry.record_decision("1700000000002", {"challenger_score": 0.55, "deploy": False})
    assert registry.champion().version == "1700000000001"  # recording a decision promotes nothing
    registry.promote("1700000000002")
    assert registry.champion().version == "1700000000002"
    assert registry.champion().record == record  # the saved record by default

    history = registry.history()
    assert [(h["event"], h["version"]) for h in history] == [
        ("decision", "1700000000001"), ("promote", "1700000000001"),
        ("decision", "1700000000002"), ("promote", "1700000000002"),
    ]  # fmt: skip
    assert history[0]["record"]["deploy"] is True and history[2]["record"]["deploy"] is False
    assert history[2]["record"]["challenger_score"] == 0.55
    pointer = json.loads(store.get_bytes(CHAMPION_KEY))
    assert pointer["version"] == "1700000000002"
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]  # no temp files left


def test_predictions_round_trip_and_a_missing_split_names_the_version(tmp_path):
    registry = ModelRegistry(LocalStore(tmp_path))
    predictions = Predictions(np.array([0.2, 0.9, 0.5]), np.array([0, 1, 1]))
    registry.save_predictions("v1", "test", [3, 4, 5], [0, 1, 0], predictions)
    timestamp, y, back = registry.load_predictions("v1", "test")
    assert timestamp.tolist() == [3, 4, 5] and y.tolist() == [0, 1, 0]
    assert np.array_equal(back.scores, predictions.scores) and np.array_equal(back.labels, predictions.labels)
    with pytest.raises(RegistryError, match="no validation predictions for model version 'v1'"):
        registry.load_predictions("v1", "validation")


def test_errors_name_the_version(tmp_path):
    registry = ModelRegistry(LocalStore(tmp_path))
    with pytest.raises(RegistryError, match="no model version '17'"):
        registry.load("17")
    with pytest.raises(RegistryError, match="cannot promote '17': no such model version"):
        registry.promote("17")
    with pytest.raises(RegistryError, match="invalid model version '../x'"):
        registry.save("../x", model(0.1), {})
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "champion.json").write_text("{not json")
    with pytest.raises(RegistryError, match="not a champion pointer"):
        registry.champion()
