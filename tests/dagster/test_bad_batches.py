"""Issue 8's bad-batch corpus, end to end through `ml-demo pipeline`: one good batch of
realistic size (10,000 deals from the simulated streamer) beside one batch of every bad
kind, lone files and a name that is not a batch. The good batch trains, every bad one is
quarantined with its reason, lone files wait and are quarantined after the timeout, the
exit code is 0 and the summary lists them all; a fixed batch, retried, is trained on."""

from __future__ import annotations

import json
import re

import pytest
from staging_kit import bad_variants

from ml_demo_dagster.cli import main
from ml_demo_dagster.core import watch
from ml_demo_dagster.core.layout import batches_with_features
from ml_demo_dagster.core.staging import deals_key, price_key
from ml_demo_dagster.core.store import LocalStore

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SMALL_TUNING = {
    "ML_DEMO__SIM__VOLATILITY": "5",
    "ML_DEMO__TUNING__MAX_JOBS": "2",
    "ML_DEMO__TUNING__MAX_PARALLEL_JOBS": "2",
    "ML_DEMO__TRAINING__WINDOW_BATCHES": "3",
    "ML_DEMO__INGEST__LONE_FILE_TIMEOUT_SECONDS": "600",
}


def run_json(capsys, *argv) -> tuple[int, dict]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def by_batch(summary: dict) -> dict[str, dict]:
    return {row["batch"] or row["key"]: row for row in summary["batches"]}


def test_a_staging_folder_of_every_bad_kind(tmp_path, capsys, monkeypatch):
    for name, value in SMALL_TUNING.items():
        monkeypatch.setenv(name, value)
    store_dir = tmp_path / "store"
    assert main(["stream", "--source", "sim", "--seed", "5", "--max-batches", "1", "--store", str(store_dir)]) == 0
    store = LocalStore(store_dir)
    (good_key,) = store.list_keys("staging/deals-")
    good = good_key.split("-")[1].split(".")[0]
    deals, price = store.get_bytes(deals_key(good)), store.get_bytes(price_key(good))
    assert deals.count(b"\n") == 10_000

    expected = {}  # batch -> (file at fault, line, field)
    t = int(good) + 1
    for kind, (bad_deals, bad_price, at_fault, line, field) in bad_variants(deals, price).items():
        store.put_bytes(price_key(t), bad_price)
        store.put_bytes(deals_key(t), bad_deals)
        expected[str(t)] = (kind, f"staging/{at_fault}-{t}.csv", line, field)
        t += 1
    windows = str(t)  # the same good batch with a byte-order mark and Windows line endings
    store.put_bytes(price_key(windows), b"\xef\xbb\xbf" + price.replace(b"\n", b"\r\n"))
    store.put_bytes(deals_key(windows), b"\xef\xbb\xbf" + deals.replace(b"\n", b"\r\n"))
    lone_deals, lone_price = str(t + 1), str(t + 2)
    store.put_bytes(deals_key(lone_deals), deals)
    store.put_bytes(price_key(lone_price), price)
    store.put_bytes("staging/deals-notes.csv", b"not a batch")

    code, summary = run_json(capsys, "pipeline", "--store", str(store_dir))
    assert code == 0, summary
    rows = by_batch(summary)
    assert rows[good]["status"] == "trained" and rows[good]["deals"] == 10_000
    assert rows[windows]["status"] == "trained"
    assert any("byte-order mark" in n for n in rows[windows]["notes"])
    assert any("Windows line endings (CRLF) on 10000 line(s)" in n for n in rows[windows]["notes"])
    for batch, (kind, file, line, field) in expected.items():
        row = rows[batch]
        assert row["status"] == "quarantined", (kind, row)
        assert (row["file"], row["line"], row["field"]) == (file, line, field), (kind, row)
        record = json.loads(store.get_text(f"quarantine/{batch}/reason.json"))
        assert record["reason"] and record["file"] == file and record["line"] == line, kind
        assert not store.exists(deals_key(batch)) and not store.exists(price_key(batch))
    assert rows[lone_deals]["status"] == rows[lone_price]["status"] == "waiting"
    assert rows[lone_deals]["waiting_for"] == price_key(lone_deals)
    assert rows[lone_price]["waiting_for"] == deals_key(lone_price)
    assert rows["staging/deals-notes.csv"]["status"] == "ignored"
    overall = summary["overall"]
    assert (overall["trained"], overall["quarantined"], overall["waiting"], overall["failed"]) == (
        2,
        len(expected),
        2,
        0,
    )
    # Nothing quarantined ever reaches a training window.
    assert set(batches_with_features(store)) == {good, windows}
    assert rows[windows]["window"] == [good, windows]

    # Past the timeout, the lone files are quarantined, and the run still exits 0.
    later = watch.now_ms() + 601_000
    monkeypatch.setattr(watch, "now_ms", lambda: later)
    code, summary = run_json(capsys, "pipeline", "--store", str(store_dir))
    assert code == 0
    rows = by_batch(summary)
    assert rows[lone_deals]["status"] == rows[lone_price]["status"] == "quarantined"
    assert re.search(rf"no {price_key(lone_deals)} after \d+ s \(lone file timeout 600 s\)", rows[lone_deals]["reason"])

    # Fix one bad batch in place and retry it: it is trained on.
    fixed = next(b for b, (kind, *_) in expected.items() if kind == "unknown loss_or_profit")
    store.put_bytes(f"quarantine/{fixed}/deals-{fixed}.csv", deals)
    code, summary = run_json(capsys, "pipeline", "--store", str(store_dir), "--retry", fixed)
    assert code == 0, summary
    row = by_batch(summary)[fixed]
    assert row["status"] == "trained" and fixed in row["window"]
    assert store.get_bytes(deals_key(fixed)) == deals and not store.exists(f"quarantine/{fixed}/reason.json")

    # Retrying a batch that is not quarantined is the user's mistake: one line, exit 2.
    capsys.readouterr()
    assert main(["pipeline", "--store", str(store_dir), "--retry", good]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"batch {good} is not quarantined" in err
