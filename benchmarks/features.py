"""Benchmark: the Spark feature job vs a naive reference vs a single-process numpy/pyarrow job.

All three build the same features (DESIGN §4.2, glue/feature_kernel.py) from the same
generated staging files, in the same run, at 10k, 100k and 1M deals (batches of 10,000
deals, the streamer's batch size):

- naive: a plain Python loop over deals; per deal it filters the whole price table for
  the deal's tick and the whole per-second table for its window, forward-fills in a loop
  and scans the later prices for the resolution. Where a full run would take longer than
  --naive-budget seconds it runs on the first whole batches only and is extrapolated
  linearly by deal count (the table says so).
- numpy/pyarrow: glue.feature_local.build_features_local, one process.
- Spark: glue.feature_job.build_features on local Spark (glue.spark.local_spark_conf()), each
  size in a fresh process, timed with and without the session start.

Data: a random walk (~1 tick/s, exponential gaps plus occasional 5-30 s gaps), the dealer
opening a buy deal on every tick, written in the staging format under benchmarks/.data/
(git-ignored; outputs are deleted as soon as they are timed; --keep-data keeps inputs).

    .venv/bin/python benchmarks/features.py                 # 10k, 100k, 1M; writes BENCHMARKS.md
    .venv/bin/python benchmarks/features.py --sizes 10000 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe_machine  # noqa: E402
from glue.batch import OUTPUT_SCHEMA  # noqa: E402
from glue.contract import DEAL_COLUMNS, PRICE_COLUMNS, BatchInput, features_matrix, pack_features  # noqa: E402
from glue.feature_kernel import first_at_or_above, first_at_or_below  # noqa: E402
from glue.feature_local import build_features_local  # noqa: E402
from glue.spark import class_archive_path  # noqa: E402
from glue.staging import read_deals, read_prices  # noqa: E402

BATCH_DEALS = 10_000
DATA_DIR = ROOT / "benchmarks" / ".data" / "features"
MD_PATH = ROOT / "BENCHMARKS.md"


# ---------------------------------------------------------------- data


def generate(n_deals: int, folder: Path, seed: int, config) -> list[BatchInput]:
    """Staging files for n_deals deals in batches of BATCH_DEALS; returns the batches."""
    rng = np.random.default_rng(seed)
    lead_ms = config.export.price_lead_seconds * 1000
    n_ticks = n_deals + 50_000  # a tail of ticks so that every deal resolves
    gaps = rng.exponential(config.sim.tick_interval_seconds * 1000, n_ticks)
    long_gap = rng.random(n_ticks) < 0.002
    gaps[long_gap] += rng.uniform(5_000, 30_000, long_gap.sum())
    ts = 1_700_000_000_000 + np.cumsum(np.maximum(gaps, 1)).astype(np.int64)
    mid = np.round(config.sim.start_price + np.cumsum(rng.normal(0, config.sim.volatility, n_ticks)), 2)
    half = config.market.spread / 2
    bid, offer = np.round(mid - half, 2), np.round(mid + half, 2)

    stop, limit = config.dealer.stop * config.market.point_value, config.dealer.limit * config.market.point_value
    first = int(np.searchsorted(ts, ts[0] + lead_ms))  # the first deal has a full lead of prices
    opened = np.arange(first, first + n_deals)
    stop_price, limit_price = np.round(offer[opened] - stop, 2), np.round(offer[opened] + limit, 2)
    loss_at = first_at_or_below(offer, opened + 1, stop_price)
    profit_at = first_at_or_above(offer, opened + 1, limit_price)
    if np.minimum(loss_at, profit_at).max() >= n_ticks:
        raise RuntimeError("generator: a deal did not resolve; lengthen the tail")
    outcome = np.where(profit_at < loss_at, "profit", "loss")

    folder.mkdir(parents=True, exist_ok=True)
    batches = []
    write = pacsv.WriteOptions(include_header=False, quoting_style="needed")  # the seed format
    for b in range(math.ceil(n_deals / BATCH_DEALS)):
        d = opened[b * BATCH_DEALS : (b + 1) * BATCH_DEALS]
        p = np.arange(np.searchsorted(ts, ts[d[0]] - lead_ms), d[-1] + 1)  # lead .. latest deal
        export = int(ts[d[-1]]) + 1
        deals = pa.table({
            "timestamp": ts[d], "loss_or_profit": outcome[d - first], "type": np.full(len(d), "buy"),
            "stop": np.full(len(d), stop), "limit": np.full(len(d), limit), "price": offer[d],
            "stop_price": stop_price[d - first], "limit_price": limit_price[d - first],
        })  # fmt: skip
        mid_p = mid[p]
        prices = pa.table({
            "timestamp": ts[p], "BID": bid[p], "OFFER": offer[p], "MID_OPEN": np.round(mid_p - 12.5, 2),
            "CHANGE": np.round(mid_p - mid[p[0]], 2), "CHANGE_PCT": np.round((mid_p / mid[p[0]] - 1) * 100, 4),
            "HIGH": np.round(mid_p + 30.25, 2), "LOW": np.round(mid_p - 30.25, 2),
            "UPDATE_TIME": np.full(len(p), "12:00:00"), "MARKET_STATE": np.full(len(p), "TRADEABLE"),
            "MARKET_DELAY": np.zeros(len(p)),
        })  # fmt: skip
        deals_path, price_path = folder / f"deals-{export}.csv", folder / f"price-{export}.csv"
        pacsv.write_csv(deals.select(list(DEAL_COLUMNS)), deals_path, write)
        pacsv.write_csv(prices.select(list(PRICE_COLUMNS)), price_path, write)
        batches.append(BatchInput(str(export), str(deals_path), str(price_path)))
    return batches


# ---------------------------------------------------------------- the naive reference


def naive_batch(batch: BatchInput, history: int) -> tuple[pa.Table, dict[str, int]]:
    """One batch, written plainly: a Python loop over deals filtering whole tables."""
    deals = read_deals(Path(batch.deals_uri).read_bytes(), batch.deals_uri).to_pandas()
    prices = (
        read_prices(Path(batch.price_uri).read_bytes(), batch.price_uri)
        .to_pandas()
        .sort_values("timestamp", kind="stable")
    )
    prices = prices.reset_index(drop=True)
    prices["second"] = prices["timestamp"] // 1000
    prices["mid"] = (prices["BID"] + prices["OFFER"]) / 2
    per_second = prices.groupby("second", as_index=False)["mid"].mean()
    sec, sec_mid = per_second["second"].to_numpy(), per_second["mid"].to_numpy()
    p_ts, p_offer = prices["timestamp"].to_numpy(), prices["OFFER"].to_numpy()
    tick_cols = prices[["BID", "OFFER", "MID_OPEN", "HIGH", "LOW"]].to_numpy()

    counts = {"deals": 0, "rows": 0, "no_history": 0, "no_tick": 0, "missing_tick_values": 0}
    out = {"timestamp": [], "label": [], "duration_ms": [], "duration_known": [], "features": []}
    for deal in deals.itertuples(index=False):
        if deal.type != "buy":
            continue
        counts["deals"] += 1
        same = np.flatnonzero(p_ts == deal.timestamp)
        if len(same) == 0:
            counts["no_tick"] += 1
            continue
        matching = same[p_offer[same] == deal.price]
        at = matching[-1] if len(matching) else same[-1]
        tick = tick_cols[at]
        if np.isnan(tick).any():
            counts["missing_tick_values"] += 1
            continue
        s = deal.timestamp // 1000
        known_before = sec_mid[sec <= s - history]
        if len(known_before) == 0:
            counts["no_history"] += 1
            continue
        in_window = (sec >= s - history) & (sec < s)
        by_second = dict(zip(sec[in_window].tolist(), sec_mid[in_window].tolist(), strict=True))
        last, window = known_before[-1], []
        for second in range(s - history, s):
            last = by_second.get(second, last)
            window.append(last)
        deal_mid = (tick[0] + tick[1]) / 2
        later = p_offer[at + 1 :]
        hit = np.flatnonzero((later <= deal.stop_price) | (later >= deal.limit_price))
        end = p_ts[at + 1 + hit[0]] if len(hit) else p_ts[-1]
        counts["rows"] += 1
        out["timestamp"].append(deal.timestamp)
        out["label"].append(1 if deal.loss_or_profit == "profit" else 0)
        out["duration_ms"].append(int(end - deal.timestamp))
        out["duration_known"].append(bool(len(hit)))
        out["features"].append(np.concatenate([tick, window]) - deal_mid)
    width = 5 + history
    values = np.array(out.pop("features"), dtype=np.float32).reshape(-1, width)
    table = pa.table(
        {
            "batch": pa.array([batch.batch_id] * counts["rows"], pa.string()),
            **{k: pa.array(v, OUTPUT_SCHEMA.field(k).type) for k, v in out.items()},
            "features": pack_features(values),
        },
        schema=OUTPUT_SCHEMA,
    )
    return table, counts


def run_naive(batches: list[BatchInput], out: Path, history: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    deals = 0
    for i, batch in enumerate(batches):
        table, counts = naive_batch(batch, history)
        pq.write_table(table, out / f"part-{i:05d}.parquet", use_dictionary=False, compression="snappy")
        deals += counts["deals"]
    return {"seconds": time.perf_counter() - t0, "deals": deals}


# ---------------------------------------------------------------- Spark, in a fresh process


def spark_child(batch_file: Path, out: Path, history: int) -> None:
    """Child process: session start and job, timed separately; prints one JSON line."""
    batches = [BatchInput(**b) for b in json.loads(batch_file.read_text())]
    t0 = time.perf_counter()
    from glue.spark import local_spark_session

    spark = local_spark_session("ml-demo-benchmark")
    t1 = time.perf_counter()
    from glue.feature_job import build_features

    report = build_features(spark, batches, str(out), history)
    t2 = time.perf_counter()
    spark.stop()
    print(json.dumps({"session_s": t1 - t0, "job_s": t2 - t1, "totals": report.totals()}))


def run_spark(batches: list[BatchInput], out: Path, history: int) -> dict:
    spec = out.parent / f"{out.name}-batches.json"
    spec.write_text(json.dumps([b.__dict__ for b in batches]))
    cmd = [sys.executable, __file__, "--spark-child", str(spec), str(out), str(history)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    spec.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"Spark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main


def machine() -> str:
    import pyspark

    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return (
        f"{describe_machine()}, numpy {np.__version__}, pyarrow {pa.__version__}, pyspark {pyspark.__version__}, {java}"
    )


def fmt_s(x: float) -> str:
    return f"{x:.1f} s" if x < 600 else f"{x / 60:.1f} min"


def write_markdown(section: str) -> None:
    """Replace (or add) the `## Features` section of BENCHMARKS.md; other sections stay."""
    text = MD_PATH.read_text() if MD_PATH.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Features\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    MD_PATH.write_text(text.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="deal counts, comma-separated")
    parser.add_argument("--naive-budget", type=float, default=180.0, help="seconds before the naive run is sampled")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2, help="runs of numpy/pyarrow and Spark per size (fastest kept)")
    parser.add_argument("--keep-data", action="store_true", help="keep the generated staging files")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--spark-child", nargs=3, metavar=("BATCHES", "OUT", "H"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spark_child:
        spark_child(Path(args.spark_child[0]), Path(args.spark_child[1]), int(args.spark_child[2]))
        return 0

    from ml_demo_dagster.config import default_config

    config = default_config()
    history = config.features.history_seconds
    sizes = [int(s) for s in args.sizes.split(",")]
    started = dt.datetime.now(dt.UTC)
    data = DATA_DIR / "staging"
    t0 = time.perf_counter()
    all_batches = generate(max(sizes), data, args.seed, config)
    print(f"generated {max(sizes)} deals in {len(all_batches)} batches in {time.perf_counter() - t0:.1f} s", flush=True)
    first = all_batches[0]
    from glue.staging import read_batch

    # the files meet the staging contract
    read_batch(Path(first.deals_uri).read_bytes(), Path(first.price_uri).read_bytes(), first.deals_uri, first.price_uri)

    results, per_deal_naive, loads = [], None, [os.getloadavg()[0]]
    for n in sizes:
        batches = all_batches[: math.ceil(n / BATCH_DEALS)]
        row = {"deals": n, "batches": len(batches)}

        numpy_runs, spark_runs = [], []
        for _ in range(args.repeat):  # alternate the two, keep each one's fastest run
            out = DATA_DIR / "out-local"
            t = time.perf_counter()
            report = build_features_local(batches, out, history)
            numpy_runs.append(time.perf_counter() - t)
            loads.append(os.getloadavg()[0])
            shutil.rmtree(out)
            print(f"{n}: numpy/pyarrow {numpy_runs[-1]:.1f} s ({report.totals()['rows']} rows)", flush=True)

            spark = run_spark(batches, DATA_DIR / "out-spark", history)
            assert spark["totals"] == report.totals(), (spark["totals"], report.totals())
            spark_runs.append(spark)
            loads.append(os.getloadavg()[0])
            shutil.rmtree(DATA_DIR / "out-spark")
            print(f"{n}: Spark job {spark['job_s']:.1f} s + session start {spark['session_s']:.1f} s", flush=True)
        row["rows"] = report.totals()["rows"]
        row["numpy_s"] = min(numpy_runs)
        best = min(spark_runs, key=lambda r: r["job_s"] + r["session_s"])
        row["spark_session_s"], row["spark_job_s"] = best["session_s"], best["job_s"]

        sample = batches
        if per_deal_naive is not None and per_deal_naive * n > args.naive_budget:
            sample = batches[: max(1, int(args.naive_budget / per_deal_naive / BATCH_DEALS))]
        naive = run_naive(sample, DATA_DIR / "out-naive", history)
        if sample is batches:
            _check_same(DATA_DIR / "out-naive", batches, history)
        shutil.rmtree(DATA_DIR / "out-naive")
        per_deal_naive = naive["seconds"] / naive["deals"]
        row["naive_s"] = per_deal_naive * n
        row["naive_sampled"] = len(sample) < len(batches)
        row["naive_measured"] = f"{naive['deals']} deals in {naive['seconds']:.1f} s"
        print(f"{n}: naive {fmt_s(row['naive_s'])} ({row['naive_measured']})", flush=True)
        results.append(row)

    if not args.keep_data:
        shutil.rmtree(data)
    loads.append(os.getloadavg()[0])
    section = render(results, started, history, loads, " ".join(sys.argv[1:]), args.repeat)
    print(section)
    if not args.no_write:
        write_markdown(section)
    return 0


def _check_same(naive_out: Path, batches: list[BatchInput], history: int) -> None:
    """The naive reference and the numpy/pyarrow job agree (same definition, same rows)."""
    local_out = DATA_DIR / "out-check"
    build_features_local(batches[:1], local_out, history)
    a = pq.read_table(local_out)
    b = pq.read_table(naive_out).filter(pa.compute.equal(pq.read_table(naive_out).column("batch"), batches[0].batch_id))
    shutil.rmtree(local_out)
    assert a.column("timestamp").equals(b.column("timestamp")), "naive and kernel keep different deals"
    fa = features_matrix(a.column("features"))
    fb = features_matrix(b.column("features"))
    assert np.abs(fa - fb).max() < 1e-3, "naive and kernel features differ"
    assert a.column("duration_ms").equals(b.column("duration_ms")), "naive and kernel durations differ"


def render(results, started, history, loads, argv, repeat) -> str:
    lines = [
        "## Features",
        "",
        f"`benchmarks/features.py`: the feature job (DESIGN §4.2, {5 + history} features per deal) three ways, "
        "same generated staging files, same run.",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        f"- Spark class archive (glue/spark.py): {'used' if class_archive_path().is_file() else 'not built'}",
        f"- Load average (1 min), sampled after each timed run: {min(loads):.1f} to {max(loads):.1f}, "
        f"mean {sum(loads) / len(loads):.1f} (other sessions shared this 2-core machine; Spark, using both "
        "cores, suffers more from that than the one-core numpy/pyarrow job)",
        f"- Command: `.venv/bin/python benchmarks/features.py{(' ' + argv) if argv else ''}`",
        "- Data: random walk, ~1 tick/s with gaps, a buy deal on every tick, batches of 10,000 deals "
        "with 600 s of price lead, written in the seed's staging format.",
        "- naive: a Python loop over deals, each filtering the whole price and per-second tables. "
        "numpy/pyarrow: `glue/feature_local.py`, one process. Spark: `glue/feature_job.py` on local Spark "
        "(`local[*]`), each run in a fresh process; 'job' excludes the session start, 'total' includes it. "
        f"All write the same parquet. numpy/pyarrow and Spark ran {repeat} times each per size, alternating, "
        "and the fastest run of each is shown (Spark: fastest total); the naive one ran once.",
        "",
        "| deals | batches | naive | numpy/pyarrow | Spark job | Spark session start | Spark total "
        "| naive / Spark total | Spark job / numpy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        total = r["spark_job_s"] + r["spark_session_s"]
        naive = fmt_s(r["naive_s"]) + (f" (extrapolated from {r['naive_measured']})" if r["naive_sampled"] else "")
        lines.append(
            f"| {r['deals']:,} | {r['batches']} | {naive} | {fmt_s(r['numpy_s'])} | {fmt_s(r['spark_job_s'])} "
            f"| {fmt_s(r['spark_session_s'])} | {fmt_s(total)} | {r['naive_s'] / total:.1f}x "
            f"| {r['spark_job_s'] / r['numpy_s']:.2f}x |"
        )
    by = {r["deals"]: r for r in results}
    if 1_000_000 in by:
        big = by[1_000_000]
        total = big["spark_job_s"] + big["spark_session_s"]
        checks = [
            ("at 1M deals, Spark (session start included) at least 8x faster than naive",
             big["naive_s"] / total >= 8, f"{big['naive_s'] / total:.1f}x"),
            ("at 1M deals, Spark (session start excluded) within 3x of numpy/pyarrow",
             big["spark_job_s"] / big["numpy_s"] <= 3, f"{big['spark_job_s'] / big['numpy_s']:.2f}x"),
        ]  # fmt: skip
        if 100_000 in by:
            ratio = big["spark_job_s"] / by[100_000]["spark_job_s"]
            ratio_total = total / (by[100_000]["spark_job_s"] + by[100_000]["spark_session_s"])
            checks.append(("Spark 1M within 12x of Spark 100k", ratio <= 12,
                           f"{ratio:.1f}x (job), {ratio_total:.1f}x (with session start)"))  # fmt: skip
        lines += ["", "Budgets:", ""]
        lines += [f"- {'met' if ok else 'MISSED'}: {name}: {value}" for name, ok, value in checks]
        per_deal_ms = big["naive_s"] / big["deals"] * 1000
        lines += [
            "",
            "Reading the numbers:",
            "",
            f"- The naive reference ran at {per_deal_ms:.2f} ms a deal at 1M (the issue expected about 0.57; "
            "it moves with the machine's load from run to run, as do the others). An 8x margin over it needs "
            f"Spark done in {big['naive_s'] / 8:.0f} s, session start included; it took {total:.1f} s.",
            "- Spark beats the single-process job at 1M because its tasks use both cores; at 10k the "
            "first job's warm-up dominates.",
            "- How the Spark job got here (same benchmark, 1M deals): the first shape read the staging files with "
            "Spark (`binaryFile`), shuffled each batch's two files into one partition, computed in `mapInArrow` "
            "and wrote with Spark's parquet writer: 42-54 s of job time. Its event log showed where that went: "
            "a Spark job just to list the 200 input files (5 s: Spark lists in parallel above 32 paths), "
            "collecting the paths and planning (about 7 s), the shuffle (3 s), and the features going through "
            "the JVM to parquet-mr: the same job with a no-op writer took 30 s instead of 54. Now each task reads "
            "its batches, computes and writes their part files with pyarrow, and only counts go through the JVM "
            "(glue/feature_job.py). The job's time is Python work on both cores plus about 3 s of first-job "
            "warm-up (Python workers starting and importing numpy/pyarrow).",
            "- Session start: the driver JVM runs with the C1 JIT only and a class-data-sharing archive that "
            "`make` builds once per virtualenv (glue/spark.py). Session start plus a first trivial job measured "
            "16 s with Spark's defaults, 11 s with C1 only, 6.5-7 s with both.",
            "- `features` is written packed, one binary value of 605 float32 per row "
            "(glue.contract.pack_features). As `array<float>`, parquet wrote 605 values a row and the "
            "write dominated (a 100k x 605 write took 6 s as a list against 1 s packed).",
            "- Each Spark size runs in a fresh JVM, so its 'job' time includes the first job's warm-up: "
            "that is most of the 10k time.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
