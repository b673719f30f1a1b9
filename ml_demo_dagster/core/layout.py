"""Where everything derived from a batch lives in the object store (one place for keys).

staging/{deals,price}-<T>.csv   the streamer's batches (core/staging.py)
quarantine/<T>/                 a bad batch's files and reason.json (core/quarantine.py)
raw/{ticks,deals}/<T>.parquet   validated, columnar copies
features/<T>/*.parquet          the feature job's output for batch T (complete: _SUCCESS)
datasets/<T>/                   training channels (CSV) + columnar copy, window ending at T
models/...                      model versions and the champion pointer (core/registry.py)
monitoring/live/<T>.json        the serving model's precision on batch T, before retraining
scoring/<name>/                 a SageMaker transform job's input rows and output scores
pipes/                          Dagster Pipes context and messages of the aws target's Glue runs
steps/<T>/<step>.json           what a step of the state machine's steps job found (read back by the machine)
state/                          cursors of headless runs
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from ml_demo_dagster.core.store import ObjectStore

FEATURES_PREFIX = "features/"
LIVE_PREFIX = "monitoring/live/"
SCORING_PREFIX = "scoring/"
STEPS_PREFIX = "steps/"
PIPES_PREFIX = "pipes/"


def raw_key(kind: str, batch_id: str) -> str:
    return f"raw/{kind}/{batch_id}.parquet"


def features_prefix(batch_id: str) -> str:
    return f"{FEATURES_PREFIX}{batch_id}"


def dataset_prefix(batch_id: str) -> str:
    return f"datasets/{batch_id}"


def live_key(batch_id: str) -> str:
    return f"{LIVE_PREFIX}{batch_id}.json"


def tuning_output_prefix(version: str) -> str:
    """Where a tuning job writes its training jobs' artifacts (S3OutputPath)."""
    return f"models/{version}/tuning/"


def scoring_keys(name: str) -> tuple[str, str]:
    """(input, output) keys of a transform job's rows: one CSV in, `<input name>.out` back."""
    return f"{SCORING_PREFIX}{name}/input/rows.csv", f"{SCORING_PREFIX}{name}/output/rows.csv.out"


def step_result_key(batch_id: str, step: str) -> str:
    """What a step of the steps job reports for the state machine to read ("asset" or "asset:phase")."""
    return f"{STEPS_PREFIX}{batch_id}/{step.replace(':', '.')}.json"


def write_table(store: ObjectStore, key: str, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    store.put_bytes(key, sink.getvalue())


def read_table(store: ObjectStore, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(store.get_bytes(key)))


def read_features(store: ObjectStore, batch_id: str) -> pa.Table:
    """All parquet parts the feature job wrote for one batch, as one table."""
    keys = [k for k in store.list_keys(features_prefix(batch_id) + "/") if k.endswith(".parquet")]
    if not keys:
        raise FileNotFoundError(f"{store.url}: no features for batch {batch_id}")
    tables = [read_table(store, k) for k in keys]
    return pa.concat_tables(tables).sort_by("timestamp")


def delete_features(store: ObjectStore, batch_id: str) -> int:
    """Remove a batch's feature output, `_SUCCESS` first (so no window reads a part of it)."""
    prefix = features_prefix(batch_id) + "/"
    keys = list(store.list_keys(prefix))
    keys.sort(key=lambda k: not k.endswith("/_SUCCESS"))
    for key in keys:
        store.delete(key)
    return len(keys)


def batches_with_features(store: ObjectStore) -> list[str]:
    """Batch ids that have feature output, oldest first (a job's `_SUCCESS` marks done)."""
    done = set()
    for key in store.list_keys(FEATURES_PREFIX):
        parts = key[len(FEATURES_PREFIX) :].split("/")
        if len(parts) >= 2 and parts[-1] == "_SUCCESS":
            done.add(parts[0])
    return sorted(done, key=int)
