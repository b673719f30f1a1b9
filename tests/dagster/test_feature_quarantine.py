"""Features that fail a blocking check never reach a training window: the output is deleted
(`_SUCCESS` first) and the batch quarantined; a contract violation the job finds is too."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from staging_kit import batch_bytes

from glue.batch import OUTPUT_SCHEMA
from glue.contract import pack_features
from glue.feature_job import BatchDataError, FeatureJobError
from ml_demo_dagster.core.layout import batches_with_features, write_table
from ml_demo_dagster.core.staging import deals_key, price_key
from ml_demo_dagster.core.store import LocalStore
from ml_demo_dagster.defs.features.assets import batch_features
from ml_demo_dagster.defs.partitions import batches
from ml_demo_dagster.defs.resources import FeatureJobResource, FeatureJobRun, ProjectConfigResource, StoreResource

T = "1700000000001"


CALLS = []


class FakeFeatureJob(FeatureJobResource):
    """mode "nan": writes features with NaN in them; "bad": fails as the job does on bad data;
    "flaky": fails as the job does on a storage hiccup the first time, then writes good features."""

    mode: str = "nan"

    def run(self, context, store, batch_id, out_prefix, history_seconds):
        CALLS.append(self.mode)
        if self.mode == "bad":
            problem = {"file": deals_key(batch_id), "line": 2, "field": "type", "reason": "'sell' is not one of buy"}
            raise BatchDataError(f"batch {batch_id}: {deals_key(batch_id)} line 2 field type: ...", {batch_id: problem})
        if self.mode == "flaky" and len(CALLS) == 1:
            raise FeatureJobError(f"batch {batch_id}: OSError: AWS Error SLOW_DOWN during GetObject operation")
        X = np.zeros((4, 5 + history_seconds), dtype=np.float32)
        if self.mode == "nan":
            X[1, 3] = np.nan
        table = pa.Table.from_arrays(
            [pa.array([batch_id] * 4), pa.array(np.arange(4, dtype=np.int64)), pa.array(np.int8([0, 1, 0, 1])),
             pa.array(np.ones(4, dtype=np.int64)), pa.array([True] * 4), pack_features(X)],
            schema=OUTPUT_SCHEMA,
        )  # fmt: skip
        write_table(store, f"{out_prefix}/part-00000.parquet", table)
        store.put_bytes(f"{out_prefix}/_SUCCESS", b"")
        return FeatureJobRun(counts={"deals": 4, "rows": 4, "no_history": 0, "no_tick": 0, "missing_tick_values": 0})


@pytest.fixture
def store(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    monkeypatch.setattr(StoreResource, "open", lambda self: store)
    deals, price = batch_bytes(seed=4, n_ticks=10)
    store.put_bytes(deals_key(T), deals)
    store.put_bytes(price_key(T), price)
    return store


def run(mode: str):
    CALLS.clear()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(batches.name, [T])
        return dg.materialize(
            [batch_features], partition_key=T, instance=instance, raise_on_error=False,
            resources={"store": StoreResource(url="unused"), "feature_job": FakeFeatureJob(mode=mode),
                       "project": ProjectConfigResource()},
        )  # fmt: skip


def test_features_failing_a_blocking_check_are_deleted_and_the_batch_quarantined(store):
    result = run("nan")
    assert not result.success
    assert not list(store.list_keys(f"features/{T}/")) and T not in batches_with_features(store)
    record = json.loads(store.get_text(f"quarantine/{T}/reason.json"))
    assert record["stage"] == "features" and "features_have_no_nan" in record["reason"]
    assert "'rows_with_nan': 1" in record["reason"]
    assert store.exists(f"quarantine/{T}/deals-{T}.csv") and not store.exists(deals_key(T))
    steps = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert not steps  # bad data: not retried


def test_a_contract_violation_found_by_the_job_quarantines_the_batch(store):
    result = run("bad")
    assert not result.success
    record = json.loads(store.get_text(f"quarantine/{T}/reason.json"))
    assert (record["file"], record["line"], record["field"], record["stage"]) == (deals_key(T), 2, "type", "features")


def test_a_feature_job_hiccup_is_retried_and_the_batch_trains(store, monkeypatch):
    monkeypatch.setenv("ML_DEMO__FEATURES__HISTORY_SECONDS", "3")
    result = run("flaky")
    assert result.success and CALLS == ["flaky", "flaky"]
    assert [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert T in batches_with_features(store) and not store.exists(f"quarantine/{T}/reason.json")
