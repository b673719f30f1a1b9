"""AWS console links for what the aws target starts, for Dagster metadata (pure strings)."""

from __future__ import annotations

from urllib.parse import quote


def glue_run(region: str, job_name: str, run_id: str) -> str:
    return (
        f"https://{region}.console.aws.amazon.com/gluestudio/home?region={region}#/job/{quote(job_name)}/run/{run_id}"
    )


def sagemaker(region: str, kind: str, name: str) -> str:
    """kind: hyper-tuning-jobs, jobs (training), transform-jobs, endpoints, models."""
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/{kind}/{quote(name)}"
