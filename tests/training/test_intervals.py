"""Block-bootstrap intervals: exact against brute force, honest in coverage, silent with too few blocks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ml_demo_dagster.core import metrics
from ml_demo_dagster.core.intervals import BlockBootstrap, time_blocks


def rows(n=3000, seed=0, signal=0.1, span_ms=10_000_000):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, span_ms, n))
    y = (rng.random(n) < 0.5).astype(np.int8)
    s = np.round(rng.random(n) + signal * y, 2)  # rounded: ties between positives and negatives
    return t, y, s


def test_blocks_are_never_shorter_than_asked_and_empty_spans_are_skipped():
    t = np.array([0, 10, 999, 1000, 1500, 5000, 5001, 6100, 6150, 7100])  # nothing in [2000, 5000)
    block = time_blocks(t, 1000)
    assert block.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    for b in range(block.max()):  # every block but the last spans at least the block length
        starts = t[block == b].min(), t[block == b + 1].min()
        assert starts[1] - starts[0] >= 1000
    # A tail shorter than a block joins the block before it.
    assert time_blocks(np.array([0, 500, 1000, 1999, 2100]), 1000).tolist() == [0, 0, 1, 1, 1]
    assert time_blocks(np.array([5, 7]), 1000).tolist() == [0, 0]


def test_each_resample_equals_the_score_on_the_rows_it_repeats():
    t, y, s = rows()
    bb = BlockBootstrap(t, 300_000, samples=100, seed=1)
    assert bb.n_blocks == 33
    predicted = s >= 0.8
    auc, auc_reps = bb.roc_auc(y, s)
    precision, precision_reps = bb.precision_at(y, predicted)
    loss, loss_reps = bb.log_loss(y, np.clip(s / 1.2, 0.01, 0.99))
    par, par_reps = bb.precision_at_recall(y, s, 0.25)
    assert auc == pytest.approx(metrics.roc_auc(y, s), abs=1e-12)
    assert par == metrics.precision_at_recall(y, s, 0.25)[0]
    for k in range(5):
        repeat = np.repeat(np.arange(len(y)), bb.counts[k][bb.block].astype(int))
        assert auc_reps[k] == pytest.approx(roc_auc_score(y[repeat], s[repeat]), abs=1e-12)
        assert precision_reps[k] == pytest.approx(y[repeat][predicted[repeat]].mean(), abs=1e-12)
        assert loss_reps[k] == pytest.approx(metrics.log_loss(y[repeat], np.clip(s[repeat] / 1.2, 0.01, 0.99)))
        assert par_reps[k] == pytest.approx(metrics.precision_at_recall(y[repeat], s[repeat], 0.25)[0], abs=1e-12)
    assert precision == pytest.approx(y[predicted].mean())
    assert loss == pytest.approx(metrics.log_loss(y, np.clip(s / 1.2, 0.01, 0.99)))


def test_interval_of_a_score_with_no_skill_covers_chance_about_as_often_as_it_says():
    # 200 independent data sets of blocks of 30 rows whose labels move together within a block
    # (like overlapping deals): the 95% interval of ROC AUC should hold 0.5 about 95% of the time.
    held = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        t = np.repeat(np.arange(40) * 10_000, 30) + np.tile(np.arange(30), 40)
        y = (rng.random(40)[np.repeat(np.arange(40), 30)] + 0.3 * rng.random(1200) > 0.65).astype(np.int8)
        s = rng.random(40)[np.repeat(np.arange(40), 30)] + 0.1 * rng.random(1200)  # also blockwise, no skill
        bb = BlockBootstrap(t, 10_000, samples=400, seed=seed)
        held += bb.interval(*bb.roc_auc(y, s)).contains(0.5)
    assert 0.88 <= held / 200 <= 0.99, held


def test_a_row_bootstrap_would_claim_far_too_much():
    # The same no-skill data with blocks of one row: intervals too narrow, chance excluded often.
    missed = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        t = np.arange(1200) * 1000
        y = (rng.random(40)[np.repeat(np.arange(40), 30)] > 0.5).astype(np.int8)
        s = rng.random(40)[np.repeat(np.arange(40), 30)]
        bb = BlockBootstrap(t, 1, samples=200, seed=seed)
        missed += not bb.interval(*bb.roc_auc(y, s)).contains(0.5)
    assert missed > 30


def test_too_few_blocks_claim_no_interval():
    t, y, s = rows(n=400, span_ms=7 * 60_000)
    bb = BlockBootstrap(t, 60_000, min_blocks=8)
    iv = bb.interval(*bb.roc_auc(y, s))
    assert bb.n_blocks == 6 and not iv.claimed and iv.value is not None
    assert iv.to_dict()["low"] is None and "no interval: 6 blocks" in iv.text()


def test_a_paired_difference_of_a_model_with_itself_is_exactly_zero():
    t, y, s = rows()
    bb = BlockBootstrap(t, 300_000)
    same = bb.difference(bb.roc_auc(y, s), bb.roc_auc(y, s))
    assert same.value == 0 and same.low == 0 and same.high == 0
    better = bb.difference(bb.roc_auc(y, s + 0.2 * y), bb.roc_auc(y, s))
    assert better.low > 0


def test_settings_are_checked():
    with pytest.raises(ValueError, match="confidence"):
        BlockBootstrap([1, 2], 1, confidence=1.2)
    with pytest.raises(ValueError, match="100 bootstrap samples"):
        BlockBootstrap([1, 2], 1, samples=10)
    bb = BlockBootstrap([1, 2, 3], 1)
    with pytest.raises(ValueError, match="2 labels for 3 rows"):
        bb.base_rate([0, 1])
