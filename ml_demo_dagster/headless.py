"""Headless runs: evaluate the staging sensor once and materialize what it asks for, in
this process, without a Dagster daemon. `ml-demo pipeline` and `ml-demo demo` use it.

The same sensor core (core/watch.intake: bad batches quarantined before any run, lone
files waiting then quarantined), assets and resources as `dagster dev`. State kept in the
store (`state/pipeline.json`): the sensor cursor and the batches requested but not yet
done, so an invocation killed halfway is finished by the next one, and a second invocation
with nothing new does nothing. `retry` runs quarantined batches again (after a fix).

The summary lists every batch the invocation saw, each with a status: `trained`,
`quarantined` (with the file, line, field and reason), `waiting` (with the file it waits
for and when it will be quarantined), `ignored` (a key under staging/ that is not a batch
file), or `failed` (the pipeline itself failed on it, after its retries: the only status
that makes `ml-demo pipeline` exit non-zero).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from ml_demo_dagster.config import ProjectConfig
from ml_demo_dagster.core import quarantine
from ml_demo_dagster.core.store import ObjectStore
from ml_demo_dagster.core.watch import StagingCursor, intake
from ml_demo_dagster.defs.partitions import batches as batches_partitions
from ml_demo_dagster.defs.resources import StoreResource, resources_for

STATE_KEY = "state/pipeline.json"

# What the summary reports per batch: (asset, metadata key) -> summary field.
SUMMARY_FIELDS = {
    ("raw_deals", "rows"): "deals",
    ("batch_features", "rows"): "feature_rows",
    ("batch_features", "feature_dim"): "features",
    ("batch_features", "glue_job_run_id"): "glue_job_run",
    ("training_dataset", "rows_train"): "train_rows",
    ("training_dataset", "rows_validation"): "validation_rows",
    ("training_dataset", "rows_test"): "test_rows",
    ("training_dataset", "gap_seconds"): "purge_gap_seconds",
    ("training_dataset", "batches"): "window",
    ("tuned_model", "trials"): "trials",
    ("tuned_model", "best_hyperparameters"): "best_hyperparameters",
    ("tuned_model", "objective_metric"): "objective_metric",
    ("tuned_model", "validation_objective"): "validation_objective",
    ("tuned_model", "validation_roc_auc"): "validation_roc_auc",
    ("tuned_model", "test_precision"): "test_precision",
    ("tuned_model", "test_recall"): "test_recall",
    ("tuned_model", "test_roc_auc"): "test_roc_auc",
    ("tuned_model", "test_base_rate"): "test_base_rate",
    ("tuned_model", "artifact"): "model_artifact",
    ("live_precision", "live_precision"): "live_precision",
    ("live_precision", "live_roc_auc"): "live_roc_auc",
    ("live_precision", "serving_version"): "live_serving_version",
    ("deployed_model", "decision"): "decision",
    ("deployed_model", "reason"): "decision_reason",
    ("deployed_model", "gate_metric"): "gate_metric",
    ("deployed_model", "challenger_score"): "challenger_score",
    ("deployed_model", "champion_score"): "champion_score",
    ("deployed_model", "difference"): "gate_difference",
    ("deployed_model", "serving_version"): "serving_version",
    ("deployed_model", "endpoint"): "endpoint",
}
# Scores whose metadata carries an interval (`<key>_ci_low`, `<key>_ci_high`): the summary
# shows it beside the value as `<field>_ci95: [low, high]` (null where none is claimed).
INTERVAL_SUFFIXES = ("_ci_low", "_ci_high")


@dataclass
class PipelineState:
    cursor: StagingCursor = field(default_factory=StagingCursor)
    pending: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, store: ObjectStore) -> PipelineState:
        if not store.exists(STATE_KEY):
            return cls()
        data = json.loads(store.get_text(STATE_KEY))
        return cls(StagingCursor.from_json(data.get("cursor")), list(data.get("pending", [])))

    def save(self, store: ObjectStore) -> None:
        store.put_text(STATE_KEY, json.dumps({"cursor": self.cursor.to_json(), "pending": self.pending}, indent=2))


def _plain(v: Any) -> Any:
    if isinstance(v, dg.NullMetadataValue):
        return None
    return getattr(v, "value", v)


TRAINED, QUARANTINED, WAITING, IGNORED, FAILED = "trained", "quarantined", "waiting", "ignored", "failed"


class RetryError(ValueError):
    """A batch asked to be retried is not quarantined (the message says where to look)."""


def _quarantine_of(result: dg.ExecuteInProcessResult) -> dict | None:
    """The quarantine record a failed step left in its Failure's metadata, if any."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data:
            record = event.step_failure_data.user_failure_data.metadata.get("quarantine")
            if record is not None:
                return getattr(record, "value", record)
    return None


def quarantined_row(record: dict, seconds: float = 0.0) -> dict[str, Any]:
    """A summary row for a quarantined batch: where it broke the contract and why."""
    row = {"batch": record["batch"], "status": QUARANTINED, "reason": quarantine.one_line(record)}
    row.update({k: record.get(k) for k in ("file", "line", "field", "stage")})
    row["quarantine"] = quarantine.quarantine_prefix(record["batch"])
    row["seconds"] = round(seconds, 1)
    return row


def summarize_result(batch_id: str, result: dg.ExecuteInProcessResult, seconds: float) -> dict[str, Any]:
    """One batch's line of the summary, from the run's materializations and checks."""
    record = None if result.success else _quarantine_of(result)
    if record is not None:
        return quarantined_row(record, seconds)
    meta: dict[tuple[str, str], Any] = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        for key, v in mat.metadata.items():
            meta[(mat.asset_key.to_user_string(), key)] = _plain(v)
    row: dict[str, Any] = {"batch": batch_id, "status": TRAINED if result.success else FAILED}
    for source, name in SUMMARY_FIELDS.items():
        if source in meta:
            row[name] = meta[source]
            low, high = ((source[0], source[1] + suffix) for suffix in INTERVAL_SUFFIXES)
            if low in meta and high in meta:
                row[name + "_ci95"] = [meta[low], meta[high]]
    notes = meta.get(("raw_ticks", "notes"))
    if notes:
        row["notes"] = notes
    failed_checks = [
        f"{e.asset_check_evaluation_data.asset_key.to_user_string()}:{e.asset_check_evaluation_data.check_name}"
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed
    ]
    if failed_checks:
        row["failed_checks"] = failed_checks
    if not result.success:
        row["error"] = first_error(result)
    row["seconds"] = round(seconds, 1)
    return row


def first_error(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step's own message: a Failure's description, or the root exception."""
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            return f"{event.step_key}: {data.user_failure_data.description}"
        error = data.error
        while error is not None and error.cause is not None:
            error = error.cause
        message = (error.message if error else "").strip().splitlines()
        return f"{event.step_key}: {message[0] if message else 'failed'}"
    return "the run failed before any step ran"


def overall(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary over all batches of an invocation."""
    ok = [r for r in rows if r["status"] == TRAINED]
    last = ok[-1] if ok else {}
    count = {status: sum(1 for r in rows if r["status"] == status) for status in (QUARANTINED, WAITING, IGNORED)}
    return {
        "batches": len(rows),
        "trained": len(ok),
        **count,
        "failed": sum(1 for r in rows if r["status"] == FAILED),
        "deployed": sum(1 for r in ok if r.get("decision") == "deployed"),
        "serving_version": last.get("serving_version"),
        "latest_test_precision": last.get("test_precision"),
        "latest_test_precision_ci95": last.get("test_precision_ci95"),
        "latest_test_roc_auc": last.get("test_roc_auc"),
        "latest_test_roc_auc_ci95": last.get("test_roc_auc_ci95"),
        "latest_live_precision": last.get("live_precision"),
        "latest_live_precision_ci95": last.get("live_precision_ci95"),
        "seconds": round(sum(r.get("seconds", 0.0) for r in rows), 1),
    }


def _check_retries(store: ObjectStore, retry: list[str]) -> None:
    for batch_id in retry:
        if quarantine.read_reason(store, batch_id) is None:
            raise RetryError(
                f"--retry {batch_id}: batch {batch_id} is not quarantined (no {quarantine.reason_key(batch_id)} "
                f"in {store.url}); quarantined: {', '.join(quarantine.quarantined_batches(store)) or 'none'}"
            )


def run_pipeline(
    config: ProjectConfig,
    store_url: str,
    *,
    target: str | None = None,
    on_batch: Callable[[dict[str, Any]], None] | None = None,
    log_level: str = "WARNING",
    retry: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Evaluate the sensor over staging/ now and materialize every batch it requests (and `retry`)."""
    from ml_demo_dagster.definitions import ASSETS

    resources = resources_for(config, target)
    resources["store"] = StoreResource(url=store_url, region=config.project.region)
    store = resources["store"].open()
    retry = sorted(set(retry), key=int)
    _check_retries(store, retry)
    state = PipelineState.load(store)
    found = intake(store, state.cursor, lone_timeout_ms=config.ingest.lone_file_timeout_seconds * 1000)
    todo = sorted(set(state.pending) | set(found.ready) | set(retry), key=int)
    state = PipelineState(found.cursor, list(todo))
    state.save(store)

    rows: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        if on_batch:
            on_batch(row)

    for record in found.quarantined:
        report(quarantined_row(record))
    if todo:
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions(batches_partitions.name, todo)
        for batch_id in todo:
            started = time.perf_counter()
            result = dg.materialize(
                ASSETS, partition_key=batch_id, instance=instance, resources=resources, raise_on_error=False,
                tags={"ml-demo/batch": batch_id},
                run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            )  # fmt: skip
            report(summarize_result(batch_id, result, time.perf_counter() - started))
            state.pending.remove(batch_id)
            state.save(store)
    for lone in found.waiting:
        report({"batch": lone.batch, "status": WAITING, "reason": f"waiting for {lone.waiting_for}",
                **lone.to_dict(), "seconds": 0.0})  # fmt: skip
    for key in found.ignored:
        report({"batch": None, "status": IGNORED, "key": key,
                "reason": "not a batch file name (staging/deals-<T>.csv or staging/price-<T>.csv, T = 13 digits)",
                "seconds": 0.0})  # fmt: skip
    summary: dict[str, Any] = {"batches": rows, "overall": overall(rows)}
    if not todo:
        summary["message"] = f"nothing to do: {found.waiting_reason()}"
    return summary
