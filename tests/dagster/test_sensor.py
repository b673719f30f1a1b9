"""The staging sensor, tested the Dagster way: build a context with a cursor, evaluate a
tick, assert the run requests and the new cursor."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from staging_kit import batch_bytes

from ml_demo_dagster.core import watch
from ml_demo_dagster.core.staging import deals_key, price_key
from ml_demo_dagster.core.store import LocalStore
from ml_demo_dagster.core.watch import DEFAULT_LOOKBACK_MS
from ml_demo_dagster.defs.ingest.sensors import staging_sensor
from ml_demo_dagster.defs.resources import ProjectConfigResource, StoreResource

T1, T2, T3, T4 = "1700000000001", "1700000000002", "1700000000003", "1700000000004"


class CountingStore(LocalStore):
    """A local store that records how it was listed."""

    def __init__(self, root):
        super().__init__(root)
        self.listings: list[tuple[str, str | None, int]] = []

    def list_keys(self, prefix, start_after=None):
        keys = list(super().list_keys(prefix, start_after))
        self.listings.append((prefix, start_after, len(keys)))
        return iter(keys)


@pytest.fixture
def env(tmp_path, monkeypatch):
    store = CountingStore(tmp_path / "store")
    monkeypatch.setattr(StoreResource, "open", lambda self: store)
    with dg.instance_for_test() as instance:
        yield store, instance


def land(store, batch_id, files=("price", "deals"), data=None):
    deals, price = data or batch_bytes(seed=int(batch_id) % 1000, n_ticks=8)
    for kind in files:
        if kind == "price":
            store.put_bytes(price_key(batch_id), price)
        else:
            store.put_bytes(deals_key(batch_id), deals)


def tick(instance, cursor=None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"store": StoreResource(url="unused"), "project": ProjectConfigResource()},
    )
    return staging_sensor(context)


def requested(result):
    return [(r.run_key, r.partition_key) for r in result.run_requests or []]


def test_empty_staging_skips_and_says_what_it_waits_for(env):
    store, instance = env
    result = tick(instance)
    assert not result.run_requests
    assert "no new complete batch" in result.skip_reason.skip_message


def test_new_complete_batch_requests_one_run_keyed_by_t(env):
    store, instance = env
    land(store, T1)
    result = tick(instance)
    assert requested(result) == [(T1, T1)]
    assert result.dynamic_partitions_requests[0].partition_keys == [T1]
    cursor = json.loads(result.cursor)
    assert cursor.pop("price_listed_ms") > 0
    assert cursor == {"watermark": int(T1), "done": [T1], "waiting": {}}
    # The next tick requests nothing: T1 is remembered as done.
    again = tick(instance, result.cursor)
    assert not again.run_requests


def test_each_tick_lists_only_the_lookback_window_not_the_whole_prefix(env):
    store, instance = env
    old = [str(1700000000000 + i * 60_000) for i in range(30)]  # 30 batches a minute apart
    for t in old:
        land(store, t)
    first = tick(instance)
    assert [k for k, _ in requested(first)] == old
    store.listings.clear()
    newest = int(old[-1])
    land(store, str(newest + 1))
    second = tick(instance, first.cursor)
    assert requested(second) == [(str(newest + 1), str(newest + 1))]
    start = newest - DEFAULT_LOOKBACK_MS
    # Only batches newer than watermark - lookback (15 of the 30, plus the new one) are listed;
    # price files only once a minute (the new batch's price file is looked up directly).
    assert store.listings == [("staging/deals-", deals_key(start), 16)]
    later = json.loads(second.cursor)
    later["price_listed_ms"] -= 60_000
    store.listings.clear()
    tick(instance, json.dumps(later))
    start = newest + 1 - DEFAULT_LOOKBACK_MS
    assert store.listings == [("staging/deals-", deals_key(start), 16), ("staging/price-", price_key(start), 16)]
    assert json.loads(second.cursor)["done"] == [t for t in old if int(t) > newest + 1 - DEFAULT_LOOKBACK_MS] + [
        str(newest + 1)
    ]


def test_a_batch_a_little_older_than_the_newest_is_still_found(env):
    store, instance = env
    land(store, T3)
    first = tick(instance)
    land(store, T2)  # a second writer, or a clock a little behind
    assert requested(tick(instance, first.cursor)) == [(T2, T2)]


def test_incomplete_batch_waits_until_its_partner_lands(env):
    store, instance = env
    land(store, T1, files=("price",))
    first = tick(instance)
    assert not first.run_requests
    assert f"waiting for the other file of: {deals_key(T1)}" in first.skip_reason.skip_message
    assert json.loads(first.cursor)["waiting"] == {T1: "price"}
    assert json.loads(first.cursor)["done"] == []
    land(store, T1, files=("deals",))
    second = tick(instance, first.cursor)
    assert requested(second) == [(T1, T1)]
    assert json.loads(second.cursor)["waiting"] == {}


def test_partner_landing_below_the_listing_cursor_is_not_lost(env):
    store, instance = env
    land(store, T1, files=("deals",))  # a writer that puts deals first
    land(store, T2)
    first = tick(instance)
    assert requested(first) == [(T2, T2)]
    land(store, T1, files=("price",))  # sorts below the price cursor (price-T2)
    second = tick(instance, first.cursor)
    assert requested(second) == [(T1, T1)]


def test_burst_of_batches_gives_one_run_each_oldest_first(env):
    store, instance = env
    land(store, T1)
    first = tick(instance)
    for t in (T3, T2, T4):
        land(store, t)
    burst = tick(instance, first.cursor)
    assert requested(burst) == [(T2, T2), (T3, T3), (T4, T4)]
    assert burst.dynamic_partitions_requests[0].partition_keys == [T2, T3, T4]


def test_restart_resumes_from_the_cursor_and_a_reset_repeats_run_keys(env):
    store, instance = env
    land(store, T1)
    land(store, T2, files=("price",))
    first = tick(instance)
    # A restarted daemon evaluates with the stored cursor: nothing is requested twice.
    land(store, T2, files=("deals",))
    land(store, T3)
    resumed = tick(instance, first.cursor)
    assert requested(resumed) == [(T2, T2), (T3, T3)]
    # Without a cursor everything is requested again, with the same run keys, which
    # Dagster deduplicates: a batch never runs twice.
    reset = tick(instance, None)
    assert [k for k, _ in requested(reset)] == [T1, T2, T3]


def test_files_that_are_not_batches_are_ignored(env):
    store, instance = env
    store.put_bytes("staging/deals-notes.csv", b"x")
    land(store, T1)
    assert requested(tick(instance)) == [(T1, T1)]


def test_a_bad_batch_is_quarantined_by_the_tick_and_never_runs(env):
    store, instance = env
    deals, price = batch_bytes(seed=2, n_ticks=8)
    land(store, T1)
    land(store, T2, data=(deals.replace(b'"buy"', b'"sell"', 1), price))
    result = tick(instance)
    assert requested(result) == [(T1, T1)]  # the good one still runs
    assert not store.exists(deals_key(T2)) and not store.exists(price_key(T2))
    record = json.loads(store.get_text(f"quarantine/{T2}/reason.json"))
    assert (record["file"], record["line"], record["field"]) == (deals_key(T2), 1, "type")
    assert "'sell' is not one of buy" in record["reason"] and record["stage"] == "sensor"
    assert store.get_bytes(f"quarantine/{T2}/deals-{T2}.csv") == deals.replace(b'"buy"', b'"sell"', 1)  # not altered
    assert store.get_bytes(f"quarantine/{T2}/price-{T2}.csv") == price
    # Nothing left to do; the next tick says what it did not run.
    land(store, T3, data=(b"", price))
    again = tick(instance, result.cursor)
    assert not again.run_requests and f"quarantined {T3}" in again.skip_reason.skip_message


def test_a_lone_file_waits_then_is_quarantined_after_the_timeout(env, monkeypatch):
    store, instance = env
    clock = {"now": 1_800_000_000_000}
    monkeypatch.setattr(watch, "now_ms", lambda: clock["now"])
    monkeypatch.setenv("ML_DEMO__INGEST__LONE_FILE_TIMEOUT_SECONDS", "60")
    land(store, T1, files=("deals",))
    first = tick(instance)
    assert "waiting for the other file of: " + price_key(T1) in first.skip_reason.skip_message
    clock["now"] += 59_000
    assert "waiting for" in tick(instance, first.cursor).skip_reason.skip_message
    clock["now"] += 1_000
    late = tick(instance, first.cursor)
    assert f"quarantined {T1}" in late.skip_reason.skip_message
    assert json.loads(late.cursor)["waiting"] == {}
    record = json.loads(store.get_text(f"quarantine/{T1}/reason.json"))
    assert record["file"] == deals_key(T1) and f"no {price_key(T1)} after 60 s" in record["reason"]
    assert record["files"] == [f"quarantine/{T1}/deals-{T1}.csv"] and not store.exists(deals_key(T1))


def test_a_batch_that_cannot_be_read_now_is_looked_at_again_next_tick(env, monkeypatch):
    store, instance = env
    land(store, T1)
    real_get = LocalStore.get_bytes
    calls = {"n": 0}

    def flaky(self, key):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk hiccup")
        return real_get(self, key)

    monkeypatch.setattr(LocalStore, "get_bytes", flaky)
    first = tick(instance)
    assert not first.run_requests and T1 not in json.loads(first.cursor)["done"]
    assert json.loads(first.cursor)["recheck"] == [T1]  # even if the listing moves past it
    second = tick(instance, first.cursor)
    assert requested(second) == [(T1, T1)] and "recheck" not in json.loads(second.cursor)
