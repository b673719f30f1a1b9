"""`ml-demo stream` end to end, in subprocesses: the issue's done-when, S3, signals, bad input."""

from __future__ import annotations

import signal
import subprocess
import time

import boto3
import pytest
from streamer_testkit import CLI, batches_in, brute_force_deals, no_temporary_files, read_batch, run_cli

from ml_demo_dagster.core.staging import deals_rows, format_rows, price_rows, read_deals, read_prices
from ml_demo_dagster.core.store import open_store

STOP = LIMIT = 20.0  # the project config's dealer.stop and dealer.limit; point value 1


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """The issue's command: two batches of 1000 deals from the seeded simulator."""
    store = tmp_path_factory.mktemp("sim-store")
    result = run_cli("stream", "--source", "sim", "--max-batches", "2", "--batch-size", "1000", "--seed", "7",
                     "--store", str(store))  # fmt: skip
    return store, result


def test_sim_run_leaves_exactly_two_complete_batches_that_parse(sim_run):
    store, result = sim_run
    assert result.returncode == 0, result.stderr
    batches = batches_in(store / "staging")
    assert len(batches) == 2 and all(set(files) == {"deals", "price"} for files in batches.values())
    for files in batches.values():
        deals, prices = read_batch(files)
        assert len(deals) == 1000 and prices
    assert str(store / "staging") in result.stdout  # says where the batches are
    assert no_temporary_files(store)


def test_every_deal_agrees_with_the_rule_over_its_own_price_file(sim_run):
    store, _ = sim_run
    checked = 0
    for files in batches_in(store / "staging").values():
        deals, prices = read_batch(files)
        offers = [(row[0], row[2]) for row in prices]
        position = {ts: i for i, (ts, _) in reversed(list(enumerate(offers)))}
        assert prices[0][0] >= deals[0][0] - 600_000 and prices[-1][0] == deals[-1][0]
        for ts, outcome, kind, stop, limit, price, stop_price, limit_price in deals:
            i = position[ts]  # the opening tick is in the file
            assert (kind, stop, limit, price) == ("buy", STOP, LIMIT, offers[i][1])
            assert (stop_price, limit_price) == (price - STOP, price + LIMIT)
            for _, later in offers[i + 1 :]:
                expected = "loss" if stop_price >= later else "profit" if limit_price <= later else None
                if expected:
                    assert outcome == expected
                    checked += 1
                    break
    assert checked > 1500  # most deals resolve inside their own batch's price file


def test_replaying_a_batch_price_file_reproduces_the_rules_deals(sim_run, tmp_path):
    store, _ = sim_run
    price_file = sorted(batches_in(store / "staging").values(), key=lambda f: f["price"].name)[0]["price"]
    replay_store = tmp_path / "replay-store"
    result = run_cli("stream", "--source", "replay", "--replay-file", str(price_file), "--batch-size", "100",
                     "--store", str(replay_store))  # fmt: skip
    assert result.returncode == 0, result.stderr
    prices = price_rows(read_prices(price_file.read_bytes(), str(price_file)))
    expected = [row for row, _ in brute_force_deals([(p[0], p[2]) for p in prices], STOP, LIMIT)]
    batches = [read_batch(files)[0] for _, files in sorted(batches_in(replay_store / "staging").items())]
    assert len(batches) == len(expected) // 100 >= 8
    for n, deals in enumerate(batches):
        assert deals == sorted(expected[n * 100 : (n + 1) * 100], key=lambda row: row[0])


def test_streams_into_s3_through_moto(moto_endpoint, monkeypatch):
    env = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "eu-west-2"}  # fmt: skip
    s3 = boto3.client("s3", region_name="eu-west-2", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket="stream-test", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    result = run_cli("stream", "--max-batches", "2", "--batch-size", "300", "--seed", "3",
                     "--store", "s3://stream-test/team-a", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "s3://stream-test/team-a/staging/" in result.stdout
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="stream-test")["Contents"]]
    assert len(keys) == 4 and all(k.startswith("team-a/staging/") for k in keys)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    store = open_store("s3://stream-test/team-a", region="eu-west-2")
    deal_keys = list(store.list_keys("staging/deals-"))
    assert len(deal_keys) == 2
    for key in deal_keys:
        deals = deals_rows(read_deals(store.get_bytes(key), key))
        prices = read_prices(store.get_bytes(key.replace("deals-", "price-")), key)
        assert len(deals) == 300 and prices.num_rows > 0


def test_a_missing_bucket_fails_at_once_with_one_line(moto_endpoint):
    env = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    result = run_cli("stream", "--seed", "1", "--store", "s3://no-such-bucket/x", env=env)
    assert result.returncode != 0
    assert "s3://no-such-bucket" in one_error_line(result)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_stream_cleanly(tmp_path, sig):
    store = tmp_path / "store"
    # Paced: ~2000 simulated ticks per second, so it is still running when the signal comes.
    proc = subprocess.Popen([*CLI, "stream", "--speed", "2000", "--batch-size", "100", "--seed", "5",
                             "--store", str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not any((store / "staging").glob("deals-*.csv")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no batch written within 60 s"
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in out
    batches = batches_in(store / "staging")
    assert batches and all(set(files) == {"deals", "price"} for files in batches.values())
    for files in batches.values():
        deals, _ = read_batch(files)
        assert len(deals) == 100
    assert no_temporary_files(store)


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_bad_config_is_one_clear_line_and_writes_nothing(tmp_path):
    store = tmp_path / "store"
    result = run_cli("stream", "--max-batches", "1", "--seed", "1", "--store", str(store),
                     env={"ML_DEMO__DEALER__STOP": "-1"})  # fmt: skip
    assert result.returncode != 0
    assert "dealer.stop" in one_error_line(result)
    assert not store.exists()


def test_bad_replay_input_names_file_line_and_field_and_writes_nothing(tmp_path):
    lines = [
        b'1767225600000,29980,30020,30000,0,0,30000,30000,"00:00:00","TRADEABLE",0',
        b'1767225601000,29981,30021,30000,1,0,30001,30000,"00:00:01","TRADEABLE",0',
        b'1767225602000,29982,thirty,30000,2,0,30002,30000,"00:00:02","TRADEABLE",0',
    ]
    bad = tmp_path / "price-bad.csv"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    store = tmp_path / "store"
    result = run_cli("stream", "--source", "replay", "--replay-file", str(bad), "--store", str(store))
    assert result.returncode != 0
    line = one_error_line(result)
    assert str(bad) in line and "line 3" in line and "OFFER" in line
    assert not store.exists()


def test_a_missing_replay_file_is_a_clear_error(tmp_path):
    result = run_cli("stream", "--source", "replay", "--replay-file", str(tmp_path / "nope.csv"))
    assert result.returncode != 0
    assert "nope.csv: not found" in one_error_line(result)


def test_replaying_overlapping_batches_merges_them(tmp_path, sim_run):
    store, _ = sim_run
    files = [f["price"] for _, f in sorted(batches_in(store / "staging").items())]
    merged = [row for f in files for row in price_rows(read_prices(f.read_bytes(), str(f)))]
    unique = sorted(set(merged), key=lambda row: row[0])
    assert len(unique) < len(merged)  # the second file's lead overlaps the first file
    expected_file = tmp_path / "merged.csv"
    expected_file.write_bytes(format_rows(unique))
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    args = ("stream", "--source", "replay", "--batch-size", "250")
    ra = run_cli(*args, "--replay-file", str(files[1]), "--replay-file", str(files[0]), "--store", str(out_a))
    rb = run_cli(*args, "--replay-file", str(expected_file), "--store", str(out_b))
    assert ra.returncode == rb.returncode == 0, ra.stderr + rb.stderr
    got = [read_batch(f)[0] for _, f in sorted(batches_in(out_a / "staging").items())]
    want = [read_batch(f)[0] for _, f in sorted(batches_in(out_b / "staging").items())]
    assert got == want and len(got) >= 4


def test_stream_starts_without_dagster_or_spark(tmp_path):
    code = (
        "import sys\n"
        "from ml_demo_dagster.cli import main\n"
        f"rc = main(['stream', '--max-batches', '1', '--batch-size', '50', '--seed', '1', '--store', {str(tmp_path)!r}])\n"
        "heavy = sorted(m for m in ('dagster', 'pyspark', 'sklearn', 'boto3') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run([CLI[0], "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout


def test_a_spool_of_another_stream_is_one_clear_line_and_fresh_sets_it_aside(tmp_path):
    store, spool = tmp_path / "store", tmp_path / "my.spool"
    args = ("stream", "--max-batches", "1", "--batch-size", "50", "--store", str(store), "--spool", str(spool))
    assert run_cli(*args, "--seed", "1").returncode == 0
    refused = run_cli(*args, "--seed", "2")
    assert refused.returncode == 2
    line = one_error_line(refused)
    assert f"spool {spool} belongs to another stream: source.seed is 1 there, 2 here" in line and "--fresh" in line
    fresh = run_cli(*args, "--seed", "2", "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert "(new stream)" in fresh.stderr and len(list(tmp_path.glob("my.spool.discarded-*"))) == 1


def test_a_run_without_a_seed_continues_the_spooled_sim_stream(tmp_path):
    from ml_demo_dagster.config import default_config
    from ml_demo_dagster.core.store import LocalStore
    from streamer.runner import run_stream
    from streamer.sources.sim import SimSource
    from streamer.spool import read_records

    store, spool = tmp_path / "store", tmp_path / "sim.spool"
    args = ("stream", "--max-batches", "1", "--batch-size", "100", "--store", str(store), "--spool", str(spool))
    first = run_cli(*args, "--seed", "5")
    assert first.returncode == 0, first.stderr
    assert "1 batch written" in first.stdout and f"deals pending in {spool}" in first.stdout
    second = run_cli(*args)  # no --seed: the spooled stream's seed and start time are taken
    assert second.returncode == 0, second.stderr
    assert "sim (seed 5," in second.stderr and "resuming:" in second.stderr
    # The two runs wrote what one run of that stream writes in two batches.
    identity = read_records(spool)[0][0]["identity"]
    config = default_config()
    config = config.model_copy(update={"export": config.export.model_copy(update={"batch_size": 100})})
    reference = LocalStore(tmp_path / "reference")
    run_stream(config, SimSource(config, seed=5, start_ms=identity["source.start_ms"]), reference, max_batches=2)
    got = [read_batch(f)[0] for _, f in sorted(batches_in(store / "staging").items())]
    want = [read_batch(f)[0] for _, f in sorted(batches_in(tmp_path / "reference" / "staging").items())]
    assert got == want and len(got) == 2
