"""Memory of the streamer over a long replay: 1,000 ticks per second of simulated time.

A price file of simulated ticks exactly 1 ms apart (1,000 ticks/s of market time) is
replayed as fast as possible by `run_stream` with a spool, as `ml-demo stream --source
replay` runs it, in a fresh child process that records its own resident memory (VmRSS) and
peak (VmHWM) every 0.1 s of wall time, against the simulated time reached. The store is a
local folder; each batch's two files are deleted once the next batch is written (the
streamer never reads them back), so the disk holds two batches, not gigabytes.

What to expect: every batch's price file holds `export.price_lead_seconds` (600 s) of ticks
before its earliest deal, so the streamer must keep that window of ticks in memory: at
1,000 ticks/s, 600,000 ticks. Memory grows while the window fills (the first 10 simulated
minutes) and must be flat after it. The run is 20 simulated minutes to show both.

    .venv/bin/python benchmarks/streamer_memory.py [--minutes 20] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from benchmarks.machine import describe_machine  # noqa: E402
from benchmarks.report import BENCHMARKS_MD, write_section  # noqa: E402

SECTION = "## Streamer memory"
START_MS = 1_767_225_600_000
TICKS_PER_SECOND = 1000


def memory_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def child(price_file: Path, out: Path) -> None:
    """Replay the file through run_stream with a spool; write the samples as JSON to `out`."""
    from ml_demo_dagster.config import default_config
    from ml_demo_dagster.core.staging import deals_key, price_key
    from ml_demo_dagster.core.store import LocalStore
    from streamer.runner import run_stream
    from streamer.sources.replay import ReplaySource
    from streamer.spool import open_spool

    class TwoBatchStore(LocalStore):
        """A local folder that keeps only the newest two batches (the streamer never reads back)."""

        written: list[str] = []

        def put_bytes(self, key: str, data: bytes) -> None:
            super().put_bytes(key, data)
            if key.startswith("staging/deals-"):
                self.written.append(key.removeprefix("staging/deals-").removesuffix(".csv"))
                while len(self.written) > 2:
                    old = self.written.pop(0)
                    self.delete(deals_key(old))
                    self.delete(price_key(old))

    config = default_config()
    samples: list[dict] = []
    position = {"ticks": 0, "buffered": 0, "batches": 0}
    done = threading.Event()

    def progress(stats) -> None:  # every 256 ticks (progress_every_s=0): cheap reads only
        position.update(ticks=stats.resumed_at + stats.ticks, buffered=stats.buffered_ticks,
                        batches=stats.batches_written)  # fmt: skip

    def sample() -> None:
        started = time.monotonic()
        while not done.wait(0.1):
            rss, hwm = memory_mb()
            samples.append({"wall_s": time.monotonic() - started, "sim_s": position["ticks"] / TICKS_PER_SECOND,
                            "rss_mb": rss, "hwm_mb": hwm, **position})  # fmt: skip

    rss0, _ = memory_mb()
    with tempfile.TemporaryDirectory() as tmp:
        source = ReplaySource([price_file])
        store = TwoBatchStore(Path(tmp) / "store")
        rss_loaded, _ = memory_mb()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with open_spool(Path(tmp) / "replay.spool", config, source, store.url) as spool:
            stats = run_stream(config, source, store, spool=spool, progress=progress, progress_every_s=0.0)
        done.set()
        sampler.join()
    out.write_text(json.dumps({"samples": samples, "rss_start_mb": rss0, "rss_loaded_mb": rss_loaded,
                               "ticks": stats.ticks, "batches": stats.batches_written,
                               "seconds": stats.elapsed_seconds}))  # fmt: skip


def write_price_file(path: Path, minutes: int) -> int:
    from ml_demo_dagster.config import default_config
    from ml_demo_dagster.core.staging import PRICE_SCHEMA
    from streamer.formatting import format_csv
    from streamer.sources.sim import SimSource

    n = minutes * 60 * TICKS_PER_SECOND
    ticks = itertools.islice(SimSource(default_config(), seed=17, start_ms=START_MS), n)
    rows = [t._replace(timestamp=START_MS + i * 1000 // TICKS_PER_SECOND) for i, t in enumerate(ticks)]
    path.write_bytes(format_csv(rows, PRICE_SCHEMA))
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=20, help="simulated minutes at 1,000 ticks/s")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--child", nargs=2, metavar=("PRICE_FILE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return 0
    command = "python benchmarks/streamer_memory.py" + "".join(f" {a}" for a in sys.argv[1:] if a != "--no-write")
    from ml_demo_dagster.config import default_config

    config = default_config()
    with tempfile.TemporaryDirectory() as tmp:
        price_file, out = Path(tmp) / "price-1000-per-s.csv", Path(tmp) / "samples.json"
        print(f"writing {args.minutes} simulated minutes at {TICKS_PER_SECOND:,} ticks/s ...", file=sys.stderr)
        n = write_price_file(price_file, args.minutes)
        size_mb = price_file.stat().st_size / 2**20
        print("replaying in a child process ...", file=sys.stderr)
        loads = []
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(price_file), str(out)])
        while proc.poll() is None:
            loads.append(os.getloadavg()[0])
            time.sleep(1.0)  # a sampling interval for the load average, not synchronisation
        if proc.returncode != 0:
            raise SystemExit(f"the replay failed ({proc.returncode})")
        result = json.loads(out.read_text())

    samples = result["samples"]
    rows = []
    for minute in range(1, args.minutes + 1):
        at = [s for s in samples if s["sim_s"] <= minute * 60]
        if not at:
            continue
        s = at[-1]
        rows.append(f"| {minute} | {s['rss_mb']:.0f} | {s['hwm_mb']:.0f} | {s['buffered']:,} | {s['batches']} |")
    lead_min = config.export.price_lead_seconds / 60
    plateau = [s for s in samples if s["sim_s"] >= (lead_min + 1) * 60]
    growth = (plateau[-1]["rss_mb"] - plateau[0]["rss_mb"]) if len(plateau) > 1 else float("nan")
    text = "\n".join(
        [
            "`benchmarks/streamer_memory.py`: a price file of simulated ticks exactly 1 ms apart "
            f"(1,000 ticks/s of market time, {args.minutes} simulated minutes: {n:,} ticks, {size_mb:.0f} MiB) "
            "replayed as fast as possible by `run_stream` with a spool (what `ml-demo stream --source "
            "replay` runs), in a fresh process sampling its own resident memory every 0.1 s. Default "
            f"config: batch size {config.export.batch_size:,} (a batch every ~10 simulated seconds), "
            f"price lead {config.export.price_lead_seconds} s. Each batch's files are deleted once the next "
            "is written (the streamer never reads them back), so the disk holds two batches.",
            "",
            f"Machine: {describe_machine()}. Date: {dt.date.today().isoformat()}. Load average (1 min) during "
            f"the run: {min(loads):.1f} to {max(loads):.1f}.",
            "",
            f"Command: `{command}`",
            "",
            "| simulated minute | RSS MiB | peak RSS so far MiB | ticks buffered | batches written |",
            "|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"- Before the replay: {result['rss_start_mb']:.0f} MiB (interpreter and libraries), "
            f"{result['rss_loaded_mb']:.0f} MiB with the file parsed into Arrow. The run took "
            f"{result['seconds']:.0f} s for {result['ticks']:,} ticks and {result['batches']} batches.",
            f"- The price buffer is what grows: every price file starts {config.export.price_lead_seconds} s "
            f"before its earliest deal, so {config.export.price_lead_seconds * TICKS_PER_SECOND:,} ticks "
            "(plus the span of the batch in hand) must be kept at this rate, as Python tuples. It fills "
            f"during the first {lead_min:.0f} simulated minutes, then stays level: RSS changed by {growth:+.0f} MiB from "
            f"minute {lead_min + 1:.0f} to minute {args.minutes}. The peak includes one price file being "
            "formatted (~610,000 rows).",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
        print(f"\nwritten to {BENCHMARKS_MD} ({SECTION})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
