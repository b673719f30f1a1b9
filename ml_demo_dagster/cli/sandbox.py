"""`ml-demo sandbox`: AWS on loopback for the aws target (DESIGN §4.8), until Ctrl-C.

A thin shell around ml_demo_dagster.sandbox: it binds 127.0.0.1 unless told otherwise,
prints `AWS_ENDPOINT_URL=http://HOST:PORT` as its first line on stdout (so a script can
read it), then how to use it, and stops cleanly on Ctrl-C or SIGTERM: job runs, tuning
jobs and endpoints it started go with it. State is in memory only.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys

from ml_demo_dagster.cli.common import UserError

DEFAULT_PORT = 4750


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="AWS on loopback (moto plus real Glue, SageMaker and endpoint executors) for --target aws",
        description="Serve AWS's APIs on loopback with moto, and run what the aws target starts: Glue job "
        "runs execute their script on local Spark, tuning jobs train with the local linear-learner, transform "
        "jobs and endpoints serve with the local endpoint code. Any credentials are accepted; state is in "
        "memory. Point the aws target at it with AWS_ENDPOINT_URL.",
    )
    parser.add_argument("--host", default="127.0.0.1", metavar="H", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="N",
                        help=f"port (default {DEFAULT_PORT}; 0: any free port)")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="log every request on stderr")
    parser.set_defaults(handler=run)


def _check_address(host: str, port: int) -> None:
    """One line if the address cannot be bound (the HTTP server would print several and exit)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")  # fmt: skip
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
    _check_address(args.host, args.port)
    from ml_demo_dagster.sandbox.server import Sandbox  # imported late: `ml-demo --help` stays fast

    try:
        sandbox = Sandbox(args.host, args.port)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    # Installed before the first line: whoever reads the endpoint may send SIGTERM at once.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        _announce(sandbox.url)
        sandbox.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the normal way to stop
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sandbox.stop()
        print("ml-demo sandbox: stopped", file=sys.stderr, flush=True)
    return 0


def _announce(url: str) -> None:
    print(f"AWS_ENDPOINT_URL={url}", flush=True)
    print(
        "ml-demo sandbox: AWS on loopback is up (any credentials work; state is in memory).\n"
        "In another terminal:\n"
        f"  export AWS_ENDPOINT_URL={url} AWS_ACCESS_KEY_ID=sandbox AWS_SECRET_ACCESS_KEY=sandbox\n"
        "  aws s3 mb s3://BUCKET   (or boto3), put batches in s3://BUCKET/staging/, then\n"
        "  ml-demo pipeline --target aws --store s3://BUCKET\n"
        "Ctrl-C stops it.",
        flush=True,
    )
