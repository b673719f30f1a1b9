"""What every subcommand shares: the errors that are the user's to fix, and --store."""

from __future__ import annotations

import argparse

from ml_demo_dagster.aws.errors import AwsSetupError
from ml_demo_dagster.config import ConfigError, ProjectConfig, default_config
from ml_demo_dagster.core.staging import StagingFormatError
from ml_demo_dagster.core.store import ObjectStore, StoreError, open_store

EXIT_USER_ERROR = 2


class UserError(RuntimeError):
    """Something the user asked for cannot be done; the message says why, in one line."""


# Errors shown as one line (never a traceback): bad input, bad config, unreachable store, aws setup.
USER_ERRORS = (UserError, ConfigError, StoreError, StagingFormatError, FileNotFoundError, AwsSetupError)


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="DIR_OR_S3URL",
        help="object store: a local folder or s3://bucket[/prefix] (default: store.url in the config)",
    )


def open_store_from_args(args: argparse.Namespace, config: ProjectConfig | None = None) -> ObjectStore:
    config = config or default_config()
    return open_store(args.store or config.store_url, region=config.project.region)
