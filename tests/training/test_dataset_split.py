"""The training dataset: time order, row fractions, the purge gap, and the channels' round trip."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from training_synthetic import T0, feature_table, random_table

from ml_demo_dagster.core.dataset import SPLITS, assemble_dataset, channel_keys, read_dataset, write_dataset
from ml_demo_dagster.core.store import LocalStore


def _all_rows(ds):
    return sum(len(s) for s in ds.splits().values())


def test_splits_are_in_time_order_with_a_gap_no_deal_outcome_crosses():
    a = random_table("1700000000001", 600, 4, seed=1, start=T0)
    b = random_table("1700000000002", 600, 4, seed=2, start=T0 + 300_000)  # overlaps a in time
    ds = assemble_dataset([b, a])  # given out of order
    durations = np.concatenate([a.column("duration_ms").to_numpy(), b.column("duration_ms").to_numpy()])
    assert ds.gap_ms == durations.max()
    ends = {}
    for name, split in ds.splits().items():
        assert np.all(np.diff(split.timestamp) >= 0), name
        ends[name] = split
    # Every deal of an earlier split has its outcome decided before the next split's first deal opens.
    # Rows are identified by their first (random, distinct) feature value.
    first = np.concatenate([np.array(t.column("features").to_pylist())[:, 0] for t in (a, b)]).astype(np.float32)
    duration_of = dict(zip(first.tolist(), durations.tolist(), strict=False))
    for earlier, later in (("train", "validation"), ("validation", "test")):
        split = ends[earlier]
        resolved = max(
            t + duration_of[f] for t, f in zip(split.timestamp.tolist(), split.X[:, 0].tolist(), strict=False)
        )
        assert resolved <= ends[later].timestamp[0]
        assert ends[earlier].timestamp[-1] + ds.gap_ms <= ends[later].timestamp[0]
    # Only purged rows are missing, and the purged ones sat at the start of their split.
    assert _all_rows(ds) + sum(ds.purged.values()) == 1200
    assert ds.purged["validation"] > 0 and ds.purged["test"] > 0
    assert ds.batches == ["1700000000002", "1700000000001"]


def test_row_fractions_and_summary():
    t = random_table("1700000000001", 1000, 3, seed=3, max_duration=1)  # gap 1 ms: ~nothing purged
    ds = assemble_dataset([t], split=(0.5, 0.3, 0.2))
    n_val = 300 - ds.purged["validation"]
    assert len(ds.train) == 500 and len(ds.validation) == n_val and len(ds.test) == 200 - ds.purged["test"]
    summary = ds.summary()
    assert summary["rows"] == {"train": 500, "validation": n_val, "test": len(ds.test)}
    assert summary["gap_ms"] == 1 and summary["purged"] == ds.purged
    assert summary["positive_rate"]["train"] == pytest.approx(ds.train.y.mean())
    assert summary["time_range"]["test"] == [int(ds.test.timestamp[0]), int(ds.test.timestamp[-1])]
    assert summary["feature_dim"] == 3


def test_equal_timestamps_keep_their_order_and_rows_are_never_dropped_without_a_gap():
    ts = np.array([5, 5, 5, 1, 1, 9, 9, 9, 9, 9]) + T0
    X = np.arange(10, dtype=np.float32)[:, None]
    t = feature_table("b", ts, np.arange(10) % 2, np.zeros(10), X)
    ds = assemble_dataset([t], split=(0.6, 0.2, 0.2))
    assert ds.gap_ms == 0 and ds.purged == {"train": 0, "validation": 0, "test": 0}
    got = np.concatenate([s.X[:, 0] for s in ds.splits().values()])
    assert got.tolist() == [3, 4, 0, 1, 2, 5, 6, 7, 8, 9]  # stable sort by time


def test_rows_sharing_the_last_train_timestamp_are_purged_when_deals_take_time():
    ts = T0 + np.array([0, 1000, 2000, 3000, 3000, 3000, 9000, 9500, 20000, 21000])
    t = feature_table("b", ts, np.ones(10), np.full(10, 500), np.zeros((10, 2)))
    ds = assemble_dataset([t], split=(0.4, 0.4, 0.2))
    # train = first 4 rows (last at 3000); validation rows before 3000 + 500 are purged.
    assert len(ds.train) == 4 and ds.purged["validation"] == 2
    assert ds.validation.timestamp.tolist() == (T0 + np.array([9000, 9500])).tolist()
    assert ds.purged["test"] == 0


def test_an_empty_split_is_a_clear_error():
    ts = T0 + np.arange(20) * 1000
    t = feature_table("b", ts, np.arange(20) % 2, np.full(20, 60_000), np.zeros((20, 2)))
    with pytest.raises(ValueError, match=r"validation split is empty: 20 row\(s\).*gap 60000 ms"):
        assemble_dataset([t])


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="window is empty"):
        assemble_dataset([])
    good = random_table("b", 10, 3, seed=0)
    with pytest.raises(ValueError, match="missing column.*duration_ms"):
        assemble_dataset([good.drop_columns(["duration_ms"])])
    narrow = random_table("c", 10, 2, seed=0, start=T0 + 10**7)
    with pytest.raises(ValueError, match="row 10 has 2 features, row 0 has 3"):
        assemble_dataset([good, narrow])
    nan = feature_table("d", T0 + np.arange(3), [0, 1, 0], [1, 1, 1], np.array([[0.0], [np.nan], [1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        assemble_dataset([nan])
    with pytest.raises(ValueError, match="split must be"):
        assemble_dataset([good], split=(0.5, 0.5, 0.5))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 3_000)), min_size=3, max_size=60),
    st.sampled_from([(0.6, 0.2, 0.2), (0.34, 0.33, 0.33), (0.8, 0.1, 0.1)]),
)
def test_purge_property(deals, split):
    ts = np.array([t for t, _ in deals]) + T0
    dur = np.array([d for _, d in deals])
    X = np.arange(len(deals), dtype=np.float32)[:, None]  # the row's identity
    t = feature_table("b", ts, np.arange(len(deals)) % 2, dur, X)
    try:
        ds = assemble_dataset([t], split=split)
    except ValueError as e:
        assert "split is empty" in str(e)
        return
    splits = list(ds.splits().values())
    ids = [s.X[:, 0].astype(int).tolist() for s in splits]
    for earlier, later in zip(splits, splits[1:], strict=False):
        ends = earlier.timestamp + dur[earlier.X[:, 0].astype(int)]
        assert ends.max() <= later.timestamp.min()
    # Rows appear once each; the missing ones are exactly the purged count.
    flat = sum(ids, [])
    assert len(flat) == len(set(flat)) == len(deals) - sum(ds.purged.values())


def test_channels_are_linear_learner_csv_and_the_parquet_copy_round_trips(tmp_path):
    store = LocalStore(tmp_path)
    ds = assemble_dataset([random_table("1700000000001", 300, 5, seed=4, max_duration=2000)])
    keys = write_dataset(ds, store, "datasets/1700000000001")
    assert keys == channel_keys("datasets/1700000000001")
    assert keys["train"] == "datasets/1700000000001/train/train.csv"
    for name in SPLITS:
        text = store.get_text(keys[name])
        rows = [line.split(",") for line in text.strip().split("\n")]
        split = ds.splits()[name]
        assert len(rows) == len(split) and all(len(r) == 6 for r in rows)
        assert [int(r[0]) for r in rows] == split.y.tolist()  # label first, no header
        assert np.array_equal(np.array([[float(v) for v in r[1:]] for r in rows], dtype=np.float32), split.X)
    table = pq.read_table(io.BytesIO(store.get_bytes(keys["parquet"])))
    assert set(table.column("split").to_pylist()) == set(SPLITS)
    back = read_dataset(store, "datasets/1700000000001")
    assert back.summary() == ds.summary()
    for name in SPLITS:
        a, b = ds.splits()[name], back.splits()[name]
        assert np.array_equal(a.X, b.X) and a.X.dtype == b.X.dtype == np.float32
        assert np.array_equal(a.y, b.y) and b.y.dtype == np.int8
        assert np.array_equal(a.timestamp, b.timestamp) and b.timestamp.dtype == np.int64
        assert a.batch.tolist() == b.batch.tolist()
