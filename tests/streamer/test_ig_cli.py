"""`ml-demo stream --source ig` end to end, in subprocesses, against the loopback IG fakes:
the issue's done-when (one complete batch whose prices are exactly what the fake sent, in
order; a dropped connection, the reconnect and the gap in the log; wrong credentials in
one line), giving up after failed attempts, and a start without Dagster, Spark or boto3."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import pytest
from ig_fakes import FakeIG
from streamer_testkit import CLI, batches_in, no_temporary_files, read_batch

from ml_demo_dagster.cli import main

FAST = {
    "ML_DEMO__IG__RETRY_DELAY_SECONDS": "0.2",
    "ML_DEMO__IG__STALLED_TIMEOUT_SECONDS": "0.2",
    "ML_DEMO__IG__RECONNECT_TIMEOUT_SECONDS": "0.2",
    "ML_DEMO__IG__SESSION_RECOVERY_TIMEOUT_SECONDS": "1",
}
STOP = LIMIT = 20.0  # dealer.stop and dealer.limit in the project config


def env_for(fake: FakeIG, fast: bool = True, **override) -> dict[str, str]:
    """The issue's environment (credentials and ML_DEMO__IG__BASE_URL), with the library's
    timers shortened unless fast=False."""
    return {
        **os.environ, **(FAST if fast else {}), "ML_DEMO__IG__BASE_URL": fake.rest_url,
        "IG_IDENTIFIER": fake.identifier, "IG_PASSWORD": fake.password, "IG_API_KEY": fake.api_key, **override,
    }  # fmt: skip


def start_cli(fake: FakeIG, *args: str, fast: bool = True, **env) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "stream", "--source", "ig", *args], env=env_for(fake, fast, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def market(n: int, seed: int, offer: float = 30000.0) -> list[dict[str, str]]:
    """n MERGE updates: the first complete, then OFFER moves by 25 every update (each deal
    resolves on the next one), BID only every other update, HIGH/LOW now and then."""
    rng = random.Random(seed)
    updates = [{"UPDATE_TIME": "09:00:00", "BID": f"{offer - 40:.2f}", "OFFER": f"{offer:.2f}", "CHANGE": "0",
                "CHANGE_PCT": "0", "MID_OPEN": f"{offer - 20:.2f}", "HIGH": f"{offer + 500:.2f}",
                "LOW": f"{offer - 500:.2f}", "MARKET_STATE": "TRADEABLE", "MARKET_DELAY": "0"}]  # fmt: skip
    for i in range(1, n):
        offer += rng.choice((-25.0, 25.0)) + rng.choice((0.0, 0.25, 0.5))
        change = {"OFFER": f"{offer:.2f}", "UPDATE_TIME": f"09:{i // 60:02d}:{i % 60:02d}"}
        if i % 2:
            change["BID"] = f"{offer - 40:.2f}"
        if i % 17 == 0:
            change["HIGH"] = f"{offer + 600:.2f}"
            change["CHANGE"] = f"{rng.uniform(-50, 50):.2f}"
        updates.append(change)
    return updates


def expected_row(state: dict[str, str | None]) -> tuple:
    def number(name):
        value = state.get(name)
        return None if value in (None, "") else float(value)

    return (number("BID"), number("OFFER"), number("MID_OPEN"), number("CHANGE"), number("CHANGE_PCT"),
            number("HIGH"), number("LOW"), state.get("UPDATE_TIME") or None, state.get("MARKET_STATE") or None,
            number("MARKET_DELAY"))  # fmt: skip


def the_one_batch(store) -> tuple[list[tuple], list[tuple]]:
    batches = batches_in(store / "staging")
    assert len(batches) == 1, batches
    [files] = batches.values()
    assert set(files) == {"deals", "price"}
    return read_batch(files)


def assert_batch_is_what_the_fake_sent(store, fake: FakeIG, deals_expected: int) -> None:
    deals, prices = the_one_batch(store)
    assert len(deals) == deals_expected
    timestamps = [row[0] for row in prices]
    assert timestamps == sorted(timestamps)
    # Every price row is a complete tick: the fake's item state after each update, in order.
    assert [row[1:] for row in prices] == [expected_row(state) for state in fake.sent_rows[: len(prices)]]
    assert len(prices) >= deals_expected
    # Each deal opened at a tick of the file, at that tick's OFFER, with the configured stop/limit.
    offer_at = {}
    for row in prices:
        offer_at.setdefault(row[0], row[2])
    for ts, _, kind, stop, limit, price, stop_price, limit_price in deals:
        assert (kind, stop, limit) == ("buy", STOP, LIMIT) and ts in offer_at
        assert (stop_price, limit_price) == (price - STOP, price + LIMIT)


@pytest.fixture
def fake():
    with FakeIG() as f:
        yield f


def test_one_complete_batch_whose_prices_are_exactly_the_updates_sent(fake, tmp_path):
    store = tmp_path / "store"
    proc = start_cli(fake, "--max-batches", "1", "--batch-size", "100", "--store", str(store), fast=False)
    fake.wait_subscribed(process=proc)
    fake.send_many(market(110, seed=1))
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert_batch_is_what_the_fake_sent(store, fake, 100)
    assert "1 batch written" in out and str(store / "staging") in out
    assert "Lightstreamer: CONNECTED:WS-STREAMING" in err and "subscribed to MARKET:CS.D.BITCOIN.CFD.IP" in err
    assert no_temporary_files(store)


def test_a_dropped_connection_reconnects_gets_more_ticks_and_logs_the_gap(fake, tmp_path):
    store = tmp_path / "store"
    proc = start_cli(fake, "--max-batches", "1", "--batch-size", "100", "--store", str(store))
    updates = market(110, seed=2)
    fake.wait_subscribed(process=proc)
    fake.send_many(updates[:50])
    fake.drop()
    fake.wait_subscribed(2, process=proc)  # a new session; its snapshot repeats the last state, then more ticks
    fake.send_many(updates[50:])
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert_batch_is_what_the_fake_sent(store, fake, 100)
    assert fake.sent_rows[50] == fake.sent_rows[49]  # the snapshot: the server's state, not a made-up tick
    assert "Lightstreamer: the link is down" in err and "Lightstreamer: connected again, " in err
    [gap_line] = [line for line in err.splitlines() if "gap in the IG feed" in line]
    assert "no ticks for " in gap_line and "nothing filled in" in gap_line


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"IG_PASSWORD": "Wr0ng-Pa55word"}, "HTTP 401 error.security.invalid-details (wrong identifier or password)"),
        ({"IG_API_KEY": "wrong-api-key-42"}, "HTTP 403 error.security.api-key-invalid (wrong API key"),
    ],
    ids=["password", "api-key"],
)
def test_wrong_credentials_exit_non_zero_with_one_line_and_no_secret(fake, tmp_path, override, named):
    store = tmp_path / "store"
    proc = start_cli(fake, "--store", str(store), **override)
    out, err = finish(proc)
    assert proc.returncode == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"ml-demo stream: error: IG login refused at {fake.rest_url}/session: ") and named in line
    for secret in (*override.values(), fake.password, fake.api_key):
        assert secret not in out + err
    assert not store.exists()


def test_missing_credentials_name_the_variables(fake, tmp_path, monkeypatch, capsys):
    for name, value in env_for(fake, IG_IDENTIFIER="", IG_PASSWORD="").items():
        monkeypatch.setenv(name, value)
    assert main(["stream", "--source", "ig", "--store", str(tmp_path / "store")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ml-demo stream: error: IG credentials: IG_IDENTIFIER, IG_PASSWORD are not set")


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--seed", "3"], "--seed is only for --source sim"), (["--speed", "2"], "source 'ig' does not take speed")],
)
def test_options_the_live_source_cannot_honour_are_refused(fake, tmp_path, monkeypatch, capsys, args, message):
    for name, value in env_for(fake).items():
        monkeypatch.setenv(name, value)
    assert main(["stream", "--source", "ig", *args, "--store", str(tmp_path / "store")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"ml-demo stream: error: {message}"]
    assert fake.logins == []  # refused before logging in


def test_the_feed_lost_for_good_exits_1_with_one_clear_last_line(fake, tmp_path):
    proc = start_cli(fake, "--batch-size", "100", "--store", str(tmp_path / "store"),
                     ML_DEMO__IG__MAX_FAILED_ATTEMPTS="3")  # fmt: skip
    fake.wait_subscribed(process=proc)
    fake.send_many(market(5, seed=3))
    fake.stop_serving()
    _, err = finish(proc)
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("ml-demo stream: error: IG feed lost: 3 connection attempts failed in a row (last: ")
    assert "Traceback" not in err


def test_streaming_from_ig_loads_no_dagster_spark_sklearn_or_boto3(fake, tmp_path):
    code = (
        "import sys\n"
        "from ml_demo_dagster.cli import main\n"
        f"rc = main(['stream', '--source', 'ig', '--max-batches', '1', '--batch-size', '5', '--store', {str(tmp_path)!r}])\n"
        "heavy = sorted(m for m in ('dagster', 'pyspark', 'sklearn', 'boto3', 'botocore') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env_for(fake), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    fake.wait_subscribed(process=proc)
    fake.send_many(market(10, seed=4))
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert "heavy: []" in out


def test_sigterm_stops_the_live_stream_cleanly(fake, tmp_path):  # how ECS stops a task
    store = tmp_path / "store"
    proc = start_cli(fake, "--batch-size", "5", "--store", str(store))
    fake.wait_subscribed(process=proc)
    fake.send_many(market(8, seed=5))
    fake.wait_for(lambda: (store / "staging").exists() and any((store / "staging").glob("deals-*.csv")), 30,
                  "the first batch")  # fmt: skip
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert "stopped" in out and "1 batch written" in out
    fake.wait_for(lambda: not fake.connected, 10, "the streaming session to end")
