"""Load test of the local endpoint: requests per second and latency for 500-row requests.

`ml-demo serve` runs as users run it (its own process, 127.0.0.1, a 605-feature champion in
a temporary store); this process sends POST /invocations of 500 rows each (text/csv, about
2 MB) from a pool of client threads, each on its own keep-alive connection, and times every
request from send to the last byte of the answer. Each concurrency level runs after a
warm-up; every answer must be 200 with 500 predictions. Beside it, in the same run, the
CPU time of parsing one such body with the endpoint's parser (Arrow's CSV reader) and with
the reference parser (Python, a row at a time; the naive way).

    .venv/bin/python benchmarks/endpoint.py [--requests N] [--concurrency 1,2,4] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402

from benchmarks.machine import describe_machine  # noqa: E402
from benchmarks.report import BENCHMARKS_MD, write_section  # noqa: E402
from ml_demo_dagster.core.endpoint import parse_csv, parse_csv_reference  # noqa: E402
from ml_demo_dagster.core.linear_learner import LinearLearnerModel  # noqa: E402
from ml_demo_dagster.core.registry import ModelRegistry  # noqa: E402
from ml_demo_dagster.core.store import LocalStore  # noqa: E402

SECTION = "## Endpoint"
ROWS, FEATURES = 500, 605


def make_body(rng: np.random.Generator) -> bytes:
    """500 rows like the features the pipeline makes: prices minus the deal's mid, 2 decimals."""
    X = np.round(rng.normal(scale=25.0, size=(ROWS, FEATURES)), 2)
    return ("\n".join(",".join(repr(float(v)) for v in row) for row in X) + "\n").encode()


def start_server(store_dir: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_demo_dagster.cli", "serve", "--store", str(store_dir), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    line = proc.stdout.readline()
    match = re.search(r"listening on http://127\.0\.0\.1:(\d+) .*serving model", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the endpoint did not start: {line}{proc.stderr.read()}")
    return proc, int(match.group(1))


def load(port: int, body: bytes, concurrency: int, requests: int) -> dict:
    """`requests` POSTs from `concurrency` threads (one connection each); latencies in seconds."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        try:
            while True:
                with lock:
                    if next(counter, None) is None:
                        break
                t0 = time.perf_counter()
                conn.request("POST", "/invocations", body=body, headers={"Content-Type": "text/csv"})
                response = conn.getresponse()
                data = response.read()
                mine.append(time.perf_counter() - t0)
                if response.status != 200 or len(json.loads(data)["predictions"]) != ROWS:
                    failures.append(f"{response.status}: {data[:200]!r}")
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client) for _ in range(concurrency)]:
            future.result()
    elapsed = time.perf_counter() - started
    lat = np.array(latencies)
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "rps": len(lat) / elapsed,
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
        "max_ms": float(lat.max() * 1000),
        "failures": failures,
    }


def parse_cpu(body: bytes, repeats: int = 5) -> tuple[float, float]:
    """Best CPU seconds to parse the body: the endpoint's parser, the reference parser."""

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            c0 = time.process_time()
            fn(body, FEATURES)
            times.append(time.process_time() - c0)
        return min(times)

    return best(parse_csv), best(parse_csv_reference)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per concurrency level")
    parser.add_argument("--concurrency", default="1,2,4", help="client threads, comma-separated levels")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    command = "python benchmarks/endpoint.py" + "".join(f" {a}" for a in sys.argv[1:] if a != "--no-write")
    rng = np.random.default_rng(7)
    body = make_body(rng)

    with tempfile.TemporaryDirectory() as tmp:
        registry = ModelRegistry(LocalStore(tmp))
        model = LinearLearnerModel(rng.normal(size=FEATURES) / 50, 0.1, rng.normal(size=FEATURES),
                                   rng.uniform(5, 30, size=FEATURES), 0.5, {})  # fmt: skip
        registry.save("1767225600000", model, {})
        registry.promote("1767225600000")
        proc, port = start_server(Path(tmp))
        results, loads = [], []
        try:
            load(port, body, 2, 20)  # warm-up, untimed
            for c in levels:
                print(f"concurrency {c}: {args.requests} requests ...", file=sys.stderr)
                results.append(load(port, body, c, args.requests))
                loads.append(os.getloadavg()[0])
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
    fast, reference = parse_cpu(body)

    failures = [f for r in results for f in r["failures"]]
    rows = [
        f"| {r['concurrency']} | {r['requests']:,} | {r['rps']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} "
        f"| {r['max_ms']:.0f} | {load_avg:.1f} |"
        for r, load_avg in zip(results, loads, strict=True)
    ]
    text = "\n".join(
        [
            f"`benchmarks/endpoint.py`: `ml-demo serve` (its own process, 127.0.0.1) under POST /invocations "
            f"of {ROWS} rows x {FEATURES} features (text/csv, {len(body) / 1e6:.1f} MB a request: values "
            "like the pipeline's features, 2 decimals), each client thread on its own keep-alive connection, "
            "every request timed from send to the last byte of the answer.",
            "",
            f"Machine: {describe_machine()}. Date: {dt.date.today().isoformat()}. Client and server share "
            "the machine's 2 cores with each other and with other work (load average beside each row).",
            "",
            f"Command: `{command}`",
            "",
            "| client threads | requests | requests/s | p50 ms | p99 ms | max ms | load avg (1 min) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"- Answers: {sum(r['requests'] for r in results):,} timed, "
            + ("every one 200 with 500 predictions." if not failures else f"{len(failures)} FAILED: {failures[:3]}"),
            f"- Parsing one request body (CPU time, best of 5, this process): Arrow's CSV reader "
            f"{fast * 1000:.0f} ms, the reference parser a row at a time (Python) {reference * 1000:.0f} ms "
            f"({reference / fast:.1f}x). The rest of a request is scoring (a 500 x 605 product), JSON out and HTTP.",
            "- One server process: Python threads share one interpreter, so more client threads raise "
            "throughput only as far as the parsing and scoring release the GIL (Arrow and numpy do).",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
        print(f"\nwritten to {BENCHMARKS_MD} ({SECTION})", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
