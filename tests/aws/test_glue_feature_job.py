"""The Glue face of the feature job, driven by Dagster, against the sandbox: a Dagster run
that is terminated while its Glue run works stops that Glue run."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import boto3
import pytest
from conftest import REGION, stream_batches, wait_until

pytestmark = [pytest.mark.spark, pytest.mark.slow]

RUN_BATCH_FEATURES = textwrap.dedent("""
    import sys
    import dagster as dg
    from ml_demo_dagster.config import load_config
    from ml_demo_dagster.defs.features.assets import batch_features
    from ml_demo_dagster.defs.partitions import batches
    from ml_demo_dagster.defs.resources import StoreResource, resources_for

    bucket, batch = sys.argv[1], sys.argv[2]
    resources = resources_for(load_config(), "aws")
    resources["store"] = StoreResource(url=f"s3://{bucket}", region="eu-west-2")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(batches.name, [batch])
    result = dg.materialize([batch_features], partition_key=batch, instance=instance, raise_on_error=False,
                            resources={k: resources[k] for k in ("store", "feature_job", "project")})
    print("RESULT", "success" if result.success else "failure", flush=True)
""")


def test_a_terminated_dagster_run_stops_its_glue_run(bucket, tmp_path):
    (batch,) = stream_batches(bucket, 1)
    glue = boto3.client("glue", region_name=REGION)
    runner = subprocess.Popen([sys.executable, "-c", RUN_BATCH_FEATURES, bucket, batch], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip

    def running_glue_run():
        try:
            runs = glue.get_job_runs(JobName="ml-demo-dev-features")["JobRuns"]
        except glue.exceptions.EntityNotFoundException:
            return None
        mine = [r for r in runs if r["Arguments"].get("--batch_id") == batch and r["JobRunState"] == "RUNNING"]
        return mine[0] if mine else None

    def started():
        assert runner.poll() is None, (
            f"the Dagster run ended before its Glue run started: {runner.stdout.read()[-3000:]}"
        )
        return running_glue_run()

    run = wait_until(started, timeout=120, interval=0.5, what="the Glue run to start")
    # What Dagster does to a run worker it terminates: an interrupt in the step.
    runner.send_signal(signal.SIGINT)
    output, _ = runner.communicate(timeout=120)

    def stopped():
        state = glue.get_job_run(JobName="ml-demo-dev-features", RunId=run["Id"])["JobRun"]["JobRunState"]
        return state if state in ("STOPPED", "SUCCEEDED", "FAILED") else None

    assert wait_until(stopped, timeout=60, what="the Glue run to end") == "STOPPED", output[-3000:]
    assert f"Glue run {run['Id']} of job ml-demo-dev-features: stop requested" in output
    assert "RESULT success" not in output
