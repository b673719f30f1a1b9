"""The champion/challenger gate: a deployment needs evidence, and the decision says what it rests on."""

from __future__ import annotations

import numpy as np
import pytest

from ml_demo_dagster.core.evaluation import Predictions, Settings, decide, report

MINUTE = 60_000


def market(n=6000, seed=0, minutes=600):
    """Labels that move together in runs (overlapping deals), opening times over `minutes`."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, minutes * MINUTE, n))
    regime = rng.random(minutes // 2)[(t // (2 * MINUTE)).astype(int)]  # 2-minute runs
    y = (rng.random(n) < 0.3 + 0.4 * regime).astype(np.int8)
    return t, y, regime, rng


def model(scores, threshold=0.5):
    scores = np.clip(scores, 0, 1)
    return Predictions(scores, (scores >= threshold).astype(np.int8))


def test_a_first_model_without_skill_is_not_deployed():
    t, y, _, rng = market()
    decision = decide(y, t, model(rng.random(len(y))), None, 2 * MINUTE)
    assert not decision.deploy and decision.reference == "chance" and decision.chance == 0.5
    assert (
        "first model: roc_auc above chance" in decision.reason and "includes zero: not significant" in decision.reason
    )
    assert decision.difference.low < 0 < decision.difference.high


def test_a_first_model_with_skill_is_deployed_and_the_decision_keeps_the_evidence():
    t, y, regime, rng = market()
    decision = decide(y, t, model(regime + 0.3 * rng.random(len(y))), None, 2 * MINUTE)
    assert decision.deploy and decision.difference.low > 0
    assert decision.challenger.value == pytest.approx(decision.difference.value + 0.5)
    doc = decision.to_dict()
    assert doc["difference"]["low"] > 0 and doc["champion"] is None and "above zero" in doc["reason"]


def test_a_challenger_must_beat_the_champion_on_the_same_rows_significantly():
    t, y, regime, rng = market()
    champion = model(regime + 0.3 * rng.random(len(y)))
    same = decide(y, t, champion, champion, 2 * MINUTE)
    assert not same.deploy and same.difference.value == 0
    slightly = decide(y, t, model(regime + 0.29 * rng.random(len(y))), champion, 2 * MINUTE)
    assert not slightly.deploy and "not significant" in slightly.reason
    worse = decide(y, t, model(rng.random(len(y))), champion, 2 * MINUTE)
    assert not worse.deploy and worse.difference.high < 0
    better = decide(y, t, model(regime + 0.3 * rng.random(len(y))), model(rng.random(len(y))), 2 * MINUTE)
    assert better.deploy and better.reference == "champion" and better.champion.value < better.challenger.value


def test_precision_gate_compares_with_the_base_rate_when_there_is_no_champion():
    t, y, regime, rng = market()
    skilled = model(regime + 0.3 * rng.random(len(y)), threshold=0.9)
    decision = decide(y, t, skilled, None, 2 * MINUTE, metric="precision")
    assert decision.deploy and decision.chance == pytest.approx(y.mean())
    coin = model(rng.random(len(y)), threshold=0.7)
    assert not decide(y, t, coin, None, 2 * MINUTE, metric="precision").deploy


def test_too_few_blocks_never_deploy():
    t, y, regime, rng = market(n=600, minutes=14)
    decision = decide(y, t, model(regime + 0.01 * rng.random(len(y))), None, 2 * MINUTE,
                      settings=Settings(min_blocks=8))  # fmt: skip
    assert not decision.deploy and "too few for an interval (need 8)" in decision.reason


def test_report_scores_each_split_with_intervals_that_hold_the_value():
    t, y, regime, rng = market()
    rep = report(y, t, model(regime + 0.3 * rng.random(len(y))), 2 * MINUTE, 0.25)
    assert rep.rows == len(y) and rep.base_rate == pytest.approx(y.mean())
    for name, iv in rep.scores.items():
        assert iv.low <= iv.value <= iv.high, name
    assert set(rep.to_dict()) >= {"roc_auc", "precision", "recall", "precision_at_target_recall", "log_loss"}
    with pytest.raises(ValueError, match="gate metric"):
        decide(y, t, model(regime), None, 2 * MINUTE, metric="accuracy")
