"""`ml-demo`: the command line. Each subcommand lives in its own module and is a thin
shell around a pure core (streamer, feature job, trainer, endpoint) or the Dagster
definitions. User errors print one line and exit non-zero; no tracebacks for them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ml_demo_dagster.cli.common import EXIT_USER_ERROR, USER_ERRORS

# Subcommand modules, each with `register(subparsers)`; imported lazily by name so that
# `ml-demo stream` does not pay for importing Dagster or Spark.
COMMANDS = {
    "stream": "ml_demo_dagster.cli.stream",
    "features": "ml_demo_dagster.cli.features",
    "pipeline": "ml_demo_dagster.cli.pipeline",
    "demo": "ml_demo_dagster.cli.pipeline",
    "serve": "ml_demo_dagster.cli.serve",
    "up": "ml_demo_dagster.cli.up",
    "export-sfn": "ml_demo_dagster.cli.export_sfn",
    "infra": "ml_demo_dagster.cli.infra",
    "sandbox": "ml_demo_dagster.cli.sandbox",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ml-demo",
        description="Continuous training on live market data, orchestrated by Dagster.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    registered = set()
    for module_name in COMMANDS.values():
        if module_name in registered:
            continue
        registered.add(module_name)
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except USER_ERRORS as e:
        print(f"ml-demo {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"ml-demo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
