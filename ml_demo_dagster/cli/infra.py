"""`ml-demo infra render|init|plan|apply|destroy`: Terraform from the project config (DESIGN §4.7).

A thin shell around core/infra.py. `render` writes the layers' variables, backend configs,
the exported state machine and the Glue code into build/infra/ without calling AWS; the
other actions render first, then run terraform on each layer in order (bootstrap, base,
service; destroy: service, base), streaming its output and stopping at the first failure
with terraform's exit code. After `apply`, the base and service layers' outputs are
written where the config loader reads them back as [aws] values.
"""

from __future__ import annotations

import argparse
import os
import sys

from ml_demo_dagster.cli.common import UserError
from ml_demo_dagster.config import ProjectConfig, load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    from ml_demo_dagster.core.infra import ACTIONS, LAYERS

    parser = subparsers.add_parser(
        "infra",
        help="deploy to AWS with Terraform (render, init, plan, apply, destroy)",
        description="Run Terraform on infra/ with variables generated from the project config. "
        "render: write build/infra/ (variables, backend configs, state machine, the Glue jobs' code), no AWS call. "
        "init/plan/apply/destroy: render, then terraform on each layer in order "
        f"({', '.join(LAYERS)}; destroy takes down service and base).",
    )
    parser.add_argument("action", choices=ACTIONS, help="what to do")
    parser.add_argument("--layer", choices=LAYERS, help="only this layer (default: all, in order)")
    parser.add_argument("--auto-approve", action="store_true", help="apply or destroy without asking")
    parser.set_defaults(handler=run)


def _render(config: ProjectConfig, paths):
    """Gather what the layers need (exported definition, Glue code and job) and write it."""
    from ml_demo_dagster.aws import requests
    from ml_demo_dagster.core import infra
    from ml_demo_dagster.stepfunctions import export_definition

    try:
        from ml_demo_dagster.aws import glue_code
    except ImportError:
        raise UserError("this build has no Glue job code (ml_demo_dagster/aws/glue_code.py), so the "
                        "service layer cannot be rendered") from None  # fmt: skip
    bucket = infra.resource_names(config)["bucket"]
    code: dict[str, bytes] = {}
    glue_jobs = {}
    for name, bundle, build in (("features", glue_code.build(), requests.glue_job),
                                ("steps", glue_code.build_steps(), requests.glue_steps_job)):  # fmt: skip
        script_key, modules_key = bundle.keys(config.aws.code_prefix)
        code.update({script_key: bundle.script, modules_key: bundle.modules})
        glue_jobs[name] = (build(config, f"s3://{bucket}/{script_key}", f"s3://{bucket}/{modules_key}"), script_key)
    return infra.render(
        config,
        paths,
        definition=export_definition(config, template=True),
        code=code,
        glue_jobs=glue_jobs,
        algorithm_image=requests.linear_learner_image(config.project.region),
    )


def run(args: argparse.Namespace) -> int:
    from ml_demo_dagster.core import infra

    config = load_config()
    paths = infra.InfraPaths()
    try:
        layers = infra.layers_for(args.action, args.layer)
        if args.action != "render":
            terraform = infra.find_terraform()
            infra.require_credentials()
        rendered = _render(config, paths)
    except infra.InfraError as e:
        raise UserError(str(e)) from None
    if args.action == "render":
        for path in [*rendered.tfvars.values(), *rendered.backends.values(), rendered.definition]:
            print(f"wrote {path}")
        print(f"wrote {len(rendered.code)} Glue code files under {paths.code_dir}")
        return 0
    environ = dict(os.environ)
    code = infra.run_layers(terraform, args.action, layers, paths, environ, auto_approve=args.auto_approve,
                            announce=lambda line: print(line, flush=True))  # fmt: skip
    if code != 0:
        print(f"ml-demo infra {args.action}: terraform exited with code {code}", file=sys.stderr)
        return code
    if args.action == "apply":
        outputs = {}
        try:
            for layer in (name for name in infra.OUTPUT_LAYERS if name in layers):
                outputs.update(infra.read_outputs(terraform, layer, paths, environ))
        except infra.InfraError as e:
            raise UserError(str(e)) from None
        if outputs:
            path = infra.write_outputs(config, outputs)
            if path is not None:
                print(f"wrote Terraform outputs to {path}: the config reads them as [aws] values")
    return 0
