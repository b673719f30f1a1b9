"""Retry policies: steps that touch storage or Spark are retried with backoff; bad data is
quarantined at once and never retried."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from staging_kit import batch_bytes

from ml_demo_dagster.config import default_config
from ml_demo_dagster.core.staging import deals_key, price_key
from ml_demo_dagster.core.store import LocalStore, StoreError
from ml_demo_dagster.definitions import ASSETS
from ml_demo_dagster.defs.ingest.assets import raw_ticks
from ml_demo_dagster.defs.partitions import batches
from ml_demo_dagster.defs.resources import StoreResource

T = "1700000000001"


def test_every_asset_that_touches_storage_or_spark_has_a_backoff_retry_policy():
    cfg = default_config().dagster
    for asset in ASSETS:
        policy = asset.op.retry_policy
        assert policy is not None, asset.key
        assert policy.max_retries == cfg.step_retries and policy.delay == cfg.retry_delay_seconds
        assert policy.backoff == dg.Backoff.EXPONENTIAL


class FlakyStore(LocalStore):
    """Fails the first write under raw/, as a store with a hiccup would."""

    def __init__(self, root):
        super().__init__(root)
        self.failed = 0

    def put_bytes(self, key, data):
        if key.startswith("raw/") and not self.failed:
            self.failed += 1
            raise StoreError(f"{self.url}: cannot write {key!r}: SlowDown")
        super().put_bytes(key, data)


@pytest.fixture
def store(tmp_path, monkeypatch):
    store = FlakyStore(tmp_path / "store")
    monkeypatch.setattr(StoreResource, "open", lambda self: store)
    return store


def materialize(instance):
    instance.add_dynamic_partitions(batches.name, [T])
    return dg.materialize(
        [raw_ticks], partition_key=T, instance=instance, resources={"store": StoreResource(url="unused")},
        raise_on_error=False,
    )  # fmt: skip


def attempts(result) -> int:
    return 1 + sum(1 for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY")


def test_a_storage_hiccup_is_retried_and_the_step_succeeds(store):
    deals, price = batch_bytes(seed=3, n_ticks=10)
    store.put_bytes(deals_key(T), deals)
    store.put_bytes(price_key(T), price)
    with dg.instance_for_test() as instance:
        result = materialize(instance)
    assert result.success and attempts(result) == 2 and store.failed == 1
    assert store.exists(f"raw/ticks/{T}.parquet")


def test_bad_data_is_quarantined_at_once_and_not_retried(store):
    deals, price = batch_bytes(seed=3, n_ticks=10)
    store.put_bytes(deals_key(T), deals)
    store.put_bytes(price_key(T), price.replace(b",", b";", 1))
    with dg.instance_for_test() as instance:
        result = materialize(instance)
    assert not result.success and attempts(result) == 1
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith(f"batch {T} quarantined: {price_key(T)} line 1")
    assert json.loads(store.get_text(f"quarantine/{T}/reason.json"))["stage"] == "ingest"
