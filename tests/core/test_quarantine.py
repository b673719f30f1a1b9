"""quarantine/<T>/: files moved byte for byte with their reason, an interrupted move finished
by the next attempt, a fixed batch moved back."""

from __future__ import annotations

import json

import pytest
from staging_kit import batch_bytes

from ml_demo_dagster.core import quarantine
from ml_demo_dagster.core.staging import StagingFormatError, deals_key, price_key
from ml_demo_dagster.core.store import LocalStore

T = "1700000000001"


@pytest.fixture
def store(tmp_path):
    store = LocalStore(tmp_path)
    deals, price = batch_bytes(seed=5, n_ticks=10)
    store.put_bytes(deals_key(T), deals.replace(b'"buy"', b'"sell"', 1))
    store.put_bytes(price_key(T), price)
    return store


def test_a_bad_batch_is_moved_with_its_reason_and_a_fixed_one_moved_back(store):
    files = quarantine.locate(store, T)
    assert files.place == "staging"
    with pytest.raises(StagingFormatError) as err:
        quarantine.read(store, files)
    bad = store.get_bytes(deals_key(T))
    record = quarantine.quarantine(store, T, quarantine.problem_of(err.value), "ingest", now=0)
    assert record["quarantined_at"] == "1970-01-01T00:00:00Z" and "--retry 1700000000001" in record["retry"]
    assert json.loads(store.get_text(f"quarantine/{T}/reason.json")) == record
    assert (record["file"], record["line"], record["field"]) == (deals_key(T), 1, "type")
    assert store.get_bytes(f"quarantine/{T}/deals-{T}.csv") == bad
    assert not store.exists(deals_key(T)) and not store.exists(price_key(T))
    assert quarantine.locate(store, T).place == "quarantine" and quarantine.quarantined_batches(store) == [T]

    fixed = bad.replace(b'"sell"', b'"buy"', 1)
    store.put_bytes(f"quarantine/{T}/deals-{T}.csv", fixed)
    quarantine.read(store, quarantine.locate(store, T))  # passes now
    assert quarantine.release(store, T) == [deals_key(T), price_key(T)]
    assert store.get_bytes(deals_key(T)) == fixed and quarantine.read_reason(store, T) is None
    assert not list(store.list_keys("quarantine/"))


def test_an_interrupted_move_is_finished_by_the_next_attempt(store, monkeypatch):
    problem = {"file": deals_key(T), "line": 1, "field": "type", "reason": "'sell' is not one of buy"}
    real_delete = LocalStore.delete

    def dies(self, key):
        raise KeyboardInterrupt  # the process stops after the copies and the record

    monkeypatch.setattr(LocalStore, "delete", dies)
    with pytest.raises(KeyboardInterrupt):
        quarantine.quarantine(store, T, problem, "sensor")
    assert store.exists(deals_key(T)) and store.exists(f"quarantine/{T}/deals-{T}.csv")  # a copy in both: nothing lost
    monkeypatch.setattr(LocalStore, "delete", real_delete)
    record = quarantine.quarantine(store, T, problem, "sensor")
    assert record["files"] == [f"quarantine/{T}/deals-{T}.csv", f"quarantine/{T}/price-{T}.csv"]
    assert not store.exists(deals_key(T)) and not store.exists(price_key(T))
