"""`ml-demo stream`: run the streamer (DESIGN §4.5), a thin shell around streamer.run_stream.

It reads the config, builds the source, opens the stream's spool (`stream.spool` in the
config, or --spool) and streams into the store until `--max-batches` complete batches are
written, the source ends (replay), or SIGINT/SIGTERM arrives; a signal only sets the stop
event, so the run ends after the current tick and never leaves half a batch. Whatever is
pending stays in the spool, and the next run with the same settings continues from there,
after a clean stop or a crash alike. Progress goes to stderr every few seconds, and so does
the log of the live source (`--source ig`: logins, connection status, gaps, updates set
aside). A live feed lost for good ends the command with one line and exit code 1; refused
credentials with one line and exit code 2. Imports neither Dagster nor Spark, so it starts fast.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from contextlib import contextmanager

from ml_demo_dagster.cli.common import UserError, add_store_argument, open_store_from_args
from ml_demo_dagster.config import REPO_DIR, load_config

PROGRESS_EVERY_S = 5.0


def _whole_number(low: int, high: int | None = None, range_text: str = ""):
    """An argparse type: a whole number in [low, high] (no upper bound if high is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {range_text or f'>= {low}'} (got {value})")
        return value

    return parse


_positive_int = _whole_number(1)
_seed = _whole_number(0, 2**63 - 1, "between 0 and 2**63-1")


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0 (got {text})")
    return value


def register(subparsers) -> None:
    """Add the `stream` subcommand."""
    parser = subparsers.add_parser(
        "stream",
        help="run the streamer: market ticks -> dealer -> batches in staging/",
        description=(
            "Follow a market (simulated, replayed from price files, or IG live), open one buy "
            "order per tick, and write each batch of resolved deals with its prices to "
            "staging/ in the store. Stops after --max-batches, at the end of a replay, or on "
            "Ctrl-C/SIGTERM (after the current tick; never half a batch). What is not yet in a "
            "batch is kept in a local spool, so a restart (after a stop or a crash) continues "
            "the stream: nothing lost, nothing written twice."
        ),
        epilog=(
            "--source ig logs in to IG (ig.base_url: the demo API by default) with IG_IDENTIFIER, "
            "IG_PASSWORD and IG_API_KEY from the environment, or from the AWS Secrets Manager secret "
            "ig.secret_name (keys ig_identifier, ig_password, ig_api_key), and follows market.epic "
            "through Lightstreamer; it reconnects by itself and exits with code 1 after "
            "ig.max_failed_attempts failed connection attempts in a row."
        ),
    )
    parser.add_argument("--source", choices=("sim", "replay", "ig"), default="sim", help="market source (default: sim)")
    add_store_argument(parser)
    parser.add_argument("--max-batches", type=_positive_int, metavar="N", help="exit after N complete batches")
    parser.add_argument(
        "--batch-size", type=_positive_int, metavar="N", help="resolved deals per batch (default: export.batch_size)"
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        metavar="S",
        help="sim: random seed (default: the spooled stream's, else a fresh one, printed)",
    )
    parser.add_argument(
        "--replay-file",
        action="append",
        metavar="F",
        help="replay: a staging price CSV; repeat for several (merged in time order)",
    )
    parser.add_argument(
        "--speed",
        type=_speed,
        metavar="X",
        help="pace ticks at X market seconds per wall second (default: as fast as possible)",
    )
    parser.add_argument(
        "--spool",
        metavar="PATH",
        help="the stream's spool file; {source} and {store} are filled in "
        "(default: stream.spool in the config, one per source and store)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start a new stream: an existing spool is renamed aside (*.discarded-<time>), "
        "its pending deals are not exported",
    )
    parser.set_defaults(handler=run)


@contextmanager
def _stop_on_signals(stop: threading.Event):
    """SIGINT and SIGTERM set `stop` (the loop ends after the current tick) while inside."""

    def handler(signum, frame):
        stop.set()

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _log_to_stderr():
    """The streamer's log (the live source's) on stderr, while inside."""
    logger = logging.getLogger("streamer")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s ml-demo stream: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}es" if word.endswith("ch") else f"{n:,} {word}s"


def run(args: argparse.Namespace) -> int:
    """Handler of `ml-demo stream`."""
    from streamer.runner import run_stream
    from streamer.sources import SourceError, make_source
    from streamer.spool import SpoolError, open_spool, spool_path

    config = load_config()
    if args.batch_size is not None:
        config = config.model_copy(update={"export": config.export.model_copy(update={"batch_size": args.batch_size})})
    if args.source != "replay" and args.replay_file:
        raise UserError("--replay-file is only for --source replay")
    if args.source != "sim" and args.seed is not None:
        raise UserError("--seed is only for --source sim")
    stop = threading.Event()
    with _stop_on_signals(stop), _log_to_stderr():
        try:
            options = {"speed": args.speed, "stop": stop}
            if args.source == "sim":
                options["seed"] = args.seed
            elif args.source == "replay":
                options["files"] = args.replay_file
            source = make_source(args.source, config, **options)  # reads and checks replay files
        except SourceError as e:
            raise UserError(str(e)) from None
        store = open_store_from_args(args, config)
        next(iter(store.list_keys("staging/")), None)  # an unreachable store fails now, not at the first batch
        where = f"{store.url.rstrip('/')}/staging/"
        try:
            # A path given here is relative to the working directory; one from the config to the repository.
            path = spool_path(args.spool or config.stream.spool, source=args.source, store_url=store.url,
                              base="." if args.spool else REPO_DIR)  # fmt: skip
            spool = open_spool(path, config, source, store.url, fresh=args.fresh)
        except (SpoolError, SourceError) as e:
            raise UserError(str(e)) from None
        limit = f", stopping after {_plural(args.max_batches, 'batch')}" if args.max_batches else ""
        print(
            f"ml-demo stream: {source.describe()} -> {where} "
            f"(batch size {config.export.batch_size:,}{limit}; Ctrl-C stops cleanly)\n"
            f"ml-demo stream: {spool.describe()}",
            file=sys.stderr,
            flush=True,
        )

        last = [0, 0.0]  # ticks and elapsed seconds at the previous report

        def report(stats) -> None:
            interval = stats.elapsed_seconds - last[1]
            rate = (stats.ticks - last[0]) / interval if interval > 0 else 0.0
            last[:] = [stats.ticks, stats.elapsed_seconds]
            print(
                f"ml-demo stream: {_plural(stats.ticks, 'tick')} ({rate:,.0f}/s), "
                f"{stats.open_orders:,} open orders, {stats.resolved:,} resolved, "
                f"{_plural(stats.batches_written, 'batch')} written -> {where}",
                file=sys.stderr,
                flush=True,
            )

        with spool:
            try:
                stats = run_stream(
                    config, source, store, max_batches=args.max_batches, stop=stop,
                    progress=report, progress_every_s=PROGRESS_EVERY_S, spool=spool,
                )  # fmt: skip
            except SpoolError as e:
                raise UserError(str(e)) from None
            except SourceError as e:  # a live feed lost for good: not the user's doing, exit code 1
                print(f"ml-demo stream: error: {e}", file=sys.stderr, flush=True)
                return 1
    why = "stopped" if stats.stopped else "done"
    if stats.complete and source.resumable:
        left = f"stream complete, spool removed ({stats.pending:,} deals short of a batch left unexported)"
    else:
        left = f"{stats.pending:,} deals pending in {spool.path}; the next run continues from there"
    print(
        f"ml-demo stream: {why}: {_plural(stats.ticks, 'tick')}, {stats.resolved:,} resolved, "
        f"{_plural(stats.batches_written, 'batch')} written to {where}"
        + (f" (last: {stats.batch_ids[-1]})" if stats.batch_ids else "")
        + f"; {left}",
        flush=True,
    )
    return 0
