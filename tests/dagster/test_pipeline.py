"""End to end, in process: streamed batches go through the whole graph (local Spark,
tuning, gate) via `ml-demo demo` / `ml-demo pipeline`, exactly as the sensor would run them."""

from __future__ import annotations

import json

import pytest

from ml_demo_dagster.cli import main
from ml_demo_dagster.core.staging import deals_key, price_key
from ml_demo_dagster.core.store import LocalStore

pytestmark = [pytest.mark.spark, pytest.mark.slow]

# Small, quick batches: volatile enough that deals resolve fast (short purge gap).
SMALL = {
    "ML_DEMO__EXPORT__BATCH_SIZE": "2000",
    "ML_DEMO__SIM__VOLATILITY": "5",
    "ML_DEMO__TUNING__MAX_JOBS": "3",
    "ML_DEMO__TUNING__MAX_PARALLEL_JOBS": "2",
    "ML_DEMO__TRAINING__WINDOW_BATCHES": "3",
}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        for k, v in SMALL.items():
            mp.setenv(k, v)
        yield tmp_path_factory.mktemp("pipeline") / "store"


def run_json(capsys, *argv) -> tuple[int, dict]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_demo_streams_and_retrains_every_batch(store_dir, capsys):
    code, summary = run_json(capsys, "demo", "--batches", "2", "--store", str(store_dir))
    assert code == 0, summary
    rows = summary["batches"]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert [r["batch"] for r in rows] == sorted(r["batch"] for r in rows)
    for row in rows:
        assert row["deals"] == 2000
        assert row["features"] == 605
        assert 0 < row["feature_rows"] <= 2000
        assert row["trials"] == 3
        assert set(row["best_hyperparameters"]) == {"l1", "wd", "learning_rate", "mini_batch_size"}
        for key in ("test_precision", "validation_roc_auc", "test_roc_auc"):
            assert 0.0 <= row[key] <= 1.0
            low, high = row[key + "_ci95"]
            assert (low is None and high is None) or low <= row[key] <= high
        assert row["objective_metric"] == "validation:objective_loss" and row["validation_objective"] > 0
        assert row["decision"] in ("deployed", "kept champion", "not deployed")
        assert row["gate_metric"] == "roc_auc" and row["decision_reason"]
    first, second = rows
    # The first batch has no model serving yet; the second is scored live by whatever serves.
    assert first["live_precision"] is None
    store = LocalStore(store_dir)
    champion = json.loads(store.get_text("models/champion.json")) if store.exists("models/champion.json") else None
    if first["decision"] == "deployed":
        assert second["live_precision"] is not None
        assert second["champion_score"] is not None
    expected_serving = second["serving_version"]
    assert (champion or {}).get("version") == expected_serving
    assert summary["overall"]["batches"] == 2 and summary["overall"]["failed"] == 0
    # The dataset of the second batch spans both batches (window of 3).
    assert len(second["window"]) == 2


def test_second_invocation_with_nothing_new_does_nothing(store_dir, capsys):
    code, summary = run_json(capsys, "pipeline", "--store", str(store_dir))
    assert code == 0
    assert summary["batches"] == []
    assert "nothing to do" in summary["message"]
    capsys.readouterr()
    assert main(["pipeline", "--store", str(store_dir)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_malformed_batch_is_set_aside_and_the_next_one_still_trains(store_dir, capsys):
    store = LocalStore(store_dir)
    good = sorted(k for k in store.list_keys("staging/deals-"))[-1]
    good_t = good.split("-")[1].split(".")[0]
    bad_t = str(int(good_t) + 1)
    lines = store.get_bytes(deals_key(good_t)).splitlines(keepends=True)
    broken = lines[2].replace(b'"buy"', b'"sell"')
    store.put_bytes(price_key(bad_t), store.get_bytes(price_key(good_t)))
    store.put_bytes(deals_key(bad_t), b"".join(lines[:2] + [broken] + lines[3:]))
    before = store.get_bytes(deals_key(bad_t))

    code, summary = run_json(capsys, "pipeline", "--store", str(store_dir))
    assert code == 1
    (row,) = summary["batches"]
    assert row["batch"] == bad_t and row["status"] == "failed"
    assert f"staging/deals-{bad_t}.csv line 3 field type" in row["error"]
    rejection = json.loads(store.get_text(f"rejected/{bad_t}.json"))
    assert (rejection["line"], rejection["field"]) == (3, "type")
    assert store.get_bytes(deals_key(bad_t)) == before  # nothing altered or removed

    # The next batch trains normally; the rejected one is not in its window.
    assert main(["stream", "--source", "sim", "--seed", "11", "--max-batches", "1", "--store", str(store_dir)]) == 0
    code, summary = run_json(capsys, "pipeline", "--store", str(store_dir))
    assert code == 0
    (row,) = summary["batches"]
    assert row["status"] == "ok"
    assert bad_t not in row["window"]
