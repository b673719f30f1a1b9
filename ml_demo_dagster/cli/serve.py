"""`ml-demo serve`: the local endpoint for the store's champion model (DESIGN §4.4, §4.5).

A thin shell around `core.endpoint`: it binds 127.0.0.1 unless told otherwise, prints
where it listens, follows the champion pointer (a new champion is served without a
restart) and stops cleanly on Ctrl-C or SIGTERM. No Dagster or Spark imports.
"""

from __future__ import annotations

import argparse
import signal
import sys

from ml_demo_dagster.cli.common import UserError, add_store_argument, open_store_from_args
from ml_demo_dagster.config import default_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the champion model over HTTP (SageMaker's /ping and /invocations)",
        description="Serve the store's champion model with SageMaker's container contract: GET /ping, "
        "POST /invocations (text/csv rows of feature values). A newly promoted champion is picked up "
        "without a restart.",
    )
    add_store_argument(parser)
    parser.add_argument("--port", type=int, metavar="N", help="port (default: serving.port in the config; 0: any free)")
    parser.add_argument("--host", metavar="H", help="address to bind (default: serving.host, 127.0.0.1)")
    parser.add_argument(
        "--refresh-seconds",
        type=float,
        default=1.0,
        metavar="S",
        help="how often at most to re-check the champion pointer (default: 1)",
    )
    parser.set_defaults(handler=run)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    config = default_config()
    host = args.host or config.serving.host
    port = config.serving.port if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {port}")
    if not args.refresh_seconds >= 0:
        raise UserError(f"--refresh-seconds must be >= 0, got {args.refresh_seconds}")
    store = open_store_from_args(args, config)
    from ml_demo_dagster.core.endpoint import make_server  # imported late: `ml-demo --help` stays fast

    try:
        server = make_server(store, host, port, refresh_seconds=args.refresh_seconds)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    champion, problem = server.watcher.current()
    state = f"serving model {champion.version}" if champion else f"waiting: {problem}"
    # SIGINT too, explicitly: a process started in the background, or forked while another
    # thread of its parent was inside system(3), inherits SIGINT ignored and would never stop.
    # Installed before the "listening" line: whoever reads that line may signal at once.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(f"ml-demo serve: listening on {server.url} (store {store.url}; {state})", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("ml-demo serve: stopped", file=sys.stderr, flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
    return 0
