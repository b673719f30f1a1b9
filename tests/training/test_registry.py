"""The champion gate and the model registry in the object store."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ml_demo_dagster.core.linear_learner import LinearLearnerModel
from ml_demo_dagster.core.registry import CHAMPION_KEY, ModelRegistry, RegistryError, decide
from ml_demo_dagster.core.store import LocalStore


def model(weight: float, d: int = 3) -> LinearLearnerModel:
    return LinearLearnerModel(
        weights=np.full(d, weight), bias=0.0, mean=None, scale=None, threshold=0.5, hyperparameters={"l1": 0.0}
    )


@pytest.mark.parametrize(
    ("challenger", "champion", "base", "deploy", "reason"),
    [
        (0.60, None, 0.50, True, "first model: 0.6000 beats the base rate 0.5000"),
        (0.50, None, 0.50, False, "first model: 0.5000 does not beat the base rate"),
        (0.40, None, 0.50, False, "does not beat the base rate"),
        (0.70, 0.65, 0.50, True, "challenger 0.7000 beats champion 0.6500"),
        (0.65, 0.65, 0.50, False, "does not beat champion"),  # a tie keeps the champion
        (0.60, 0.65, 0.50, False, "does not beat champion"),
        (0.40, 0.30, 0.50, True, "beats champion"),  # on the same rows, better is better
        (math.nan, 0.30, 0.50, False, "is not a number"),
        (math.nan, None, 0.50, False, "is not a number"),
        (0.60, math.nan, 0.50, True, "champion score nan is not a number"),
        (0.40, math.nan, 0.50, False, "does not beat the base rate"),
    ],
)
def test_gate(challenger, champion, base, deploy, reason):
    decision = decide(challenger, champion, base)
    assert decision.deploy is deploy
    assert reason in decision.reason
    assert decision.challenger_score is challenger and decision.champion_score is champion


def test_save_load_promote_and_history(tmp_path):
    store = LocalStore(tmp_path)
    registry = ModelRegistry(store)
    assert registry.champion() is None and registry.history() == [] and registry.versions() == []
    registry.save("1700000000001", model(0.1), {"test": {"precision": 0.6}})
    registry.save("1700000000002", model(0.2), {"test": {"precision": float("nan")}})
    assert registry.versions() == ["1700000000001", "1700000000002"]
    assert np.array_equal(registry.load("1700000000002").weights, np.full(3, 0.2))
    assert registry.load_record("1700000000002") == {"test": {"precision": None}}  # strict JSON

    decision = decide(0.6, None, 0.5)
    registry.record_decision("1700000000001", {"challenger_score": 0.6, "deployed": True}, decision)
    registry.promote("1700000000001", {"why": "first"})
    champion = registry.champion()
    assert champion.version == "1700000000001" and champion.record == {"why": "first"}
    assert np.array_equal(champion.model.weights, np.full(3, 0.1))

    registry.record_decision("1700000000002", {"challenger_score": 0.55, "deployed": False}, decide(0.55, 0.6, 0.5))
    assert registry.champion().version == "1700000000001"  # recording a decision promotes nothing
    registry.promote("1700000000002")
    assert registry.champion().version == "1700000000002"
    assert registry.champion().record == {"test": {"precision": None}}  # the saved record by default

    history = registry.history()
    assert [(h["event"], h["version"]) for h in history] == [
        ("decision", "1700000000001"), ("promote", "1700000000001"),
        ("decision", "1700000000002"), ("promote", "1700000000002"),
    ]  # fmt: skip
    assert history[0]["decision"]["deploy"] is True and history[2]["decision"]["deploy"] is False
    assert history[2]["record"]["challenger_score"] == 0.55
    pointer = json.loads(store.get_bytes(CHAMPION_KEY))
    assert pointer["version"] == "1700000000002"
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]  # no temp files left


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
