"""The state machine's steps job as Glue runs it: its script and zip alone, with nothing else
importable but the standard library, the modules Glue 5 ships and the pinned scipy.

Every step runs on one small batch in a local store (the steps open any store), in the two
runs the machine makes around the tuning job's transform, whose scores the test writes the
way SageMaker would. What the steps write is what the Dagster assets write (they call the
same core/batch_steps.py); here the point is that the shipped code runs on its own.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from glue.contract import BatchInput
from glue.feature_local import build_features_local
from ml_demo_dagster.aws import glue_code, steps_job
from ml_demo_dagster.config import load_config
from ml_demo_dagster.core.batch_steps import StepSettings
from ml_demo_dagster.core.dataset import read_dataset
from ml_demo_dagster.core.layout import dataset_prefix, features_prefix, live_key, scoring_keys, step_result_key
from ml_demo_dagster.core.registry import ModelRegistry
from ml_demo_dagster.core.staging import deals_key, price_key
from ml_demo_dagster.core.store import LocalStore

# Glue 5's own modules that the shipped code imports (and what those import), plus scipy.
GLUE_LIKE = ("numpy", "numpy.libs", "pyarrow", "boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3",
             "six", "scipy", "scipy.libs")  # fmt: skip
SETTINGS = {"ML_DEMO__EXPORT__BATCH_SIZE": "1500", "ML_DEMO__FEATURES__HISTORY_SECONDS": "60",
            "ML_DEMO__EVALUATION__MIN_BLOCKS": "2", "ML_DEMO__EVALUATION__BOOTSTRAP_SAMPLES": "200"}  # fmt: skip


def glue_like_path(folder: Path) -> Path:
    """A folder holding only the allowed packages (links into this environment)."""
    site = Path(importlib.util.find_spec("numpy").submodule_search_locations[0]).parent
    folder.mkdir()
    for name in GLUE_LIKE:
        source = site / name if (site / name).exists() else site / f"{name}.py"
        (folder / source.name).symlink_to(source)
    return folder


def run_steps(tmp: Path, code, steps: list[str], batch: str, store: Path, settings: str, **inputs: str):
    script = tmp / "steps_job.py"
    script.write_bytes(code.script)
    (tmp / "modules.zip").write_bytes(code.modules)
    argv = [sys.executable, "-S", "-s", str(script), "--JOB_NAME", "steps", "--steps", ",".join(steps),
            "--batch", batch, "--attempt", "1", "--store", str(store), "--settings", settings]  # fmt: skip
    for name, value in inputs.items():
        argv += [f"--{name}", value]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{tmp / 'modules.zip'}{os.pathsep}{tmp / 'glue'}"}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A local store with one simulated batch and its features (as the Glue feature job leaves them)."""
    from streamer.runner import run_stream
    from streamer.sources import make_source

    tmp = tmp_path_factory.mktemp("steps")
    config = load_config(environ={**os.environ, **SETTINGS})
    store = LocalStore(tmp / "store")
    (t,) = run_stream(config, make_source("sim", config, seed=2, start_ms=1_767_225_600_000), store,
                      max_batches=1).batch_ids  # fmt: skip
    build_features_local([BatchInput(t, store.uri(deals_key(t)), store.uri(price_key(t)))],
                         store.uri(features_prefix(t)), config.features.history_seconds)  # fmt: skip
    glue_like_path(tmp / "glue")
    return tmp, store, config, t


def test_the_zip_holds_the_project_modules_the_steps_import_and_threadpoolctl():
    code = glue_code.build_steps()
    names = set(zipfile.ZipFile(io.BytesIO(code.modules)).namelist())
    assert {"ml_demo_dagster/core/batch_steps.py", "ml_demo_dagster/core/registry.py", "glue/staging.py",
            "ml_demo_dagster/aws/transform_io.py", "threadpoolctl.py"} <= names  # fmt: skip
    # Not what the steps never run: Dagster shells, the config (pydantic), training's scikit-learn.
    assert not {n for n in names if n.startswith(("ml_demo_dagster/defs", "ml_demo_dagster/config", "dagster"))}
    assert "ml_demo_dagster/core/metrics.py" not in names
    script_key, zip_key = code.keys("code/")
    assert script_key.endswith("/steps_job.py") and zip_key.endswith("/ml_demo_steps.zip")
    assert code.digest != glue_code.build().digest


def test_every_step_runs_from_the_zip_with_only_glue_s_modules(batch):
    tmp, store, config, t = batch
    isolated = subprocess.run([sys.executable, "-S", "-s", "-c", "import numpy, scipy.special, boto3\n"
                               "for m in ('sklearn', 'pydantic', 'dagster', 'ml_demo_dagster'):\n"
                               "    try: __import__(m); print('importable', m)\n    except ImportError: pass"],
                              env={"PYTHONPATH": str(tmp / "glue")}, capture_output=True, text=True, cwd=tmp)  # fmt: skip
    assert isolated.returncode == 0 and isolated.stdout == "", isolated.stdout + isolated.stderr
    code, settings = glue_code.build_steps(), StepSettings.from_config(config).to_json()
    first = ["raw_ticks", "raw_deals", "batch_features", "live_precision:prepare", "live_precision",
             "training_dataset", "tuned_model:prepare"]  # fmt: skip
    done = run_steps(tmp, code, first, t, store.root, settings)
    assert done.returncode == 0, done.stderr[-3000:]
    for step in first:
        assert json.loads(store.get_text(step_result_key(t, step)))["step"] == step
    assert json.loads(store.get_text(step_result_key(t, "live_precision:prepare")))["score"] is False
    assert json.loads(store.get_text(live_key(t)))["serving_version"] is None
    dataset = read_dataset(store, dataset_prefix(t))
    rows_in, rows_out = scoring_keys(steps_job.scoring_name(t, "1", "tuned_model"))
    n = len(dataset.validation) + len(dataset.test)
    assert store.get_bytes(rows_in).count(b"\n") == n

    # What the transform job would write: one JSON line per row (here, scores that know the labels).
    y = np.concatenate([dataset.validation.y, dataset.test.y])
    scores = np.clip(0.5 + 0.4 * (y - 0.5) + np.random.default_rng(1).normal(0, 0.1, n), 0.01, 0.99)
    store.put_bytes(rows_out, "".join(json.dumps({"score": float(s), "predicted_label": int(s > 0.5)}) + "\n"
                                      for s in scores).encode())  # fmt: skip
    tuning = {"job": f"ml-demo-dev-t-{t}-1", "best_training_job": f"ml-demo-dev-t-{t}-1-002-abc", "objective": 0.61,
              "tuned": {"l1": "0.001", "mini_batch_size": "200"}, "counters": {"Completed": 2, "Stopped": 0},
              "best": {"model_data_url": "s3://b/models/x/model.tar.gz"}}  # fmt: skip
    second = ["tuned_model", "deployed_model:prepare", "deployed_model", "deployed_model:promote"]
    done = run_steps(tmp, code, second, t, store.root, settings, tuning=json.dumps(tuning), model_name="m-1")
    assert done.returncode == 0, done.stderr[-3000:]
    record = ModelRegistry(store).load_record(t)
    assert record["artifact"] == {"kind": "sagemaker", "tuning_job": tuning["job"], "model_name": "m-1",
                                  "best_training_job": tuning["best_training_job"],
                                  "model_data_url": "s3://b/models/x/model.tar.gz"}  # fmt: skip
    assert record["hyperparameters"]["mini_batch_size"] == 200 and record["trials"] == 2
    assert record["test"]["roc_auc"]["value"] > 0.9
    gate = json.loads(store.get_text(step_result_key(t, "deployed_model")))
    assert gate["deploy"] is True, gate["reason"]
    assert ModelRegistry(store).champion_pointer()["version"] == t
    assert not list(store.list_keys("scoring/"))  # read, then deleted


def test_a_step_that_cannot_go_on_fails_the_run_with_one_line(batch):
    tmp, store, config, t = batch
    settings = StepSettings.from_config(config).to_json()
    done = run_steps(tmp, glue_code.build_steps(), ["raw_ticks"], "1767225000000", store.root, settings)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "ml_demo_dagster.core.batch_steps.StepError: batch 1767225000000: its two files are in neither"
    )
    done = run_steps(tmp, glue_code.build_steps(), ["no_such_step"], t, store.root, settings)
    assert "unknown step(s) ['no_such_step']" in done.stderr
