"""The AWS Glue entry script of the feature job (Glue 5: Spark 3.5, Python 3.11).

Glue runs this file as the job's script, with the job's arguments on the command line as
`--name value` pairs: its own (`--JOB_ID`, `--JOB_RUN_ID`, `--JOB_NAME`, ...), the job's
default arguments, the run's arguments (`--batch_id`, `--deals_uri`, `--price_uri`,
`--out_uri`, `--history_seconds`, `--pipes_interval_seconds`) and the two that Dagster Pipes
adds (`--dagster-pipes-context`, `--dagster-pipes-messages`). `resolved_options` reads them
the way `awsglue.utils.getResolvedOptions` does (that module exists only on Glue).

It runs the same transform as the local target (`glue.feature_job.build_features` on the
session Glue provides) and reports through Dagster Pipes: log lines, and the counts
(deals, rows, and why deals were dropped) as a custom message, while the job runs
(messages go to S3 in chunks; the Dagster side reads them as they land).

Where the imports come from on Glue: pyspark, boto3, numpy and pyarrow are part of Glue 5;
the `glue` package and `dagster_pipes` (pure Python, no dependencies) come from the zip
in the job's `--extra-py-files`, which the project uploads next to this script, both
under a key named by their content hash (ml_demo_dagster/aws/glue_code.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

JOB_ARGUMENTS = ("batch_id", "deals_uri", "price_uri", "out_uri", "history_seconds")
OPTIONAL_ARGUMENTS = {"pipes_interval_seconds": "10"}


class JobArgumentError(ValueError):
    """A job argument the script needs is missing or malformed."""


def resolved_options(argv: Sequence[str], names: Iterable[str]) -> dict[str, str]:
    """The values of `--name value` (or `--name=value`) for each of `names`; the last one
    given wins, arguments not asked for are ignored (like getResolvedOptions)."""
    wanted = set(names)
    found: dict[str, str] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--"):
            name, has_value, value = token[2:].partition("=")
            if name in wanted:
                if not has_value:
                    if i + 1 >= len(argv):
                        raise JobArgumentError(f"job argument --{name} has no value")
                    value = argv[i + 1]
                    i += 1
                found[name] = value
        i += 1
    missing = [n for n in names if n not in found]
    if missing:
        raise JobArgumentError("missing job argument(s): " + ", ".join(f"--{n}" for n in missing))
    return found


def _options(argv: Sequence[str]) -> dict[str, str]:
    options = resolved_options(argv, ("JOB_NAME", *JOB_ARGUMENTS))
    for name, default in OPTIONAL_ARGUMENTS.items():
        try:
            options.update(resolved_options(argv, (name,)))
        except JobArgumentError:
            options[name] = default
    try:
        int(options["history_seconds"])
        float(options["pipes_interval_seconds"])
    except ValueError as e:
        raise JobArgumentError(f"bad job argument: {e}") from None
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = _options(sys.argv[1:] if argv is None else argv)

    import boto3
    from botocore.config import Config
    from dagster_pipes import PipesCliArgsParamsLoader, PipesS3ContextLoader, PipesS3MessageWriter, open_dagster_pipes
    from pyspark.sql import SparkSession

    from glue.contract import BatchInput
    from glue.feature_job import build_features

    s3 = boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 8}))
    with open_dagster_pipes(
        params_loader=PipesCliArgsParamsLoader(),
        context_loader=PipesS3ContextLoader(s3),
        message_writer=PipesS3MessageWriter(s3, interval=float(options["pipes_interval_seconds"])),
    ) as pipes:
        batch = options["batch_id"]
        pipes.log.info(f"{options['JOB_NAME']}: batch {batch}: {options['deals_uri']} + {options['price_uri']}")
        spark = SparkSession.builder.appName(options["JOB_NAME"]).getOrCreate()
        try:
            report = build_features(
                spark,
                [BatchInput(batch, options["deals_uri"], options["price_uri"])],
                options["out_uri"],
                int(options["history_seconds"]),
            )
        finally:
            spark.stop()
        counts = report.totals()
        dropped = {k: v for k, v in counts.items() if k not in ("deals", "rows")}
        pipes.log.info(f"batch {batch}: {counts['rows']} rows of {counts['deals']} deals; dropped {dropped}")
        pipes.log.info(f"wrote {options['out_uri']}")
        pipes.report_custom_message({"counts": counts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
