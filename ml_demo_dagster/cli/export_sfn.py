"""`ml-demo export-sfn [--out FILE]`: the asset graph as a Step Functions definition (DESIGN §4.7).

A thin shell around `ml_demo_dagster.stepfunctions.export_definition`: every name comes
from the config; the SageMaker role's ARN comes from [aws] (Terraform's outputs fill it
after `ml-demo infra apply`) or, while it is empty, stays a `${sagemaker_role_arn}`
reference that Terraform fills in when it deploys the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ml_demo_dagster.cli.common import UserError
from ml_demo_dagster.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-sfn",
        help="write the pipeline as an AWS Step Functions definition (Amazon States Language)",
        description="Walk the Dagster asset graph in dependency order and write the Step Functions state "
        "machine that runs one staging batch through it on AWS (Glue, SageMaker), with the same requests the "
        'aws target sends. Execution input: {"batch": T} or the S3 event\'s {"key": "staging/..."}.',
    )
    parser.add_argument("--out", metavar="FILE", help="file to write (default: standard output)")
    parser.add_argument(
        "--template",
        action="store_true",
        help="refer to every Terraform-created value as ${name} even when the config has it "
        "(what `ml-demo infra render` deploys)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ml_demo_dagster.core.sfn import SfnExportError
    from ml_demo_dagster.stepfunctions import dumps, export_definition, with_references

    config = load_config()
    try:
        text = dumps(export_definition(config, template=args.template))
    except SfnExportError as e:
        raise UserError(f"cannot export the state machine: {e}") from None
    referenced = with_references(config, args.template)[1]
    if args.out is None:
        sys.stdout.write(text)
    else:
        out = Path(args.out)
        if out.is_dir():
            raise UserError(f"--out {out}: is a folder, expected a file name")
        from ml_demo_dagster.core.infra import write_file

        write_file(out, text)
        print(f"wrote {out} ({len(text.encode())} bytes)")
    for key in referenced:
        print(f"note: aws.{key} is not set: the definition refers to ${{{key}}}, which Terraform fills in "
              "(ml-demo infra apply)", file=sys.stderr)  # fmt: skip
    return 0
