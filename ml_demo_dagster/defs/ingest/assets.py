"""Ingest: a batch's staging files, validated against the contract and kept columnar.

Both assets read the whole batch with the staging contract's one strict reader
(glue/staging.py through core/quarantine.py), the same reader the sensor used before asking
for the run and the feature job uses after. A batch that breaks the contract is moved to
`quarantine/<T>/` with `reason.json` (file, line, field, reason) and the step fails with
that one line, not retried (it would fail the same way). The sensor and the other batches
go on. A quarantined batch whose files were fixed in place is found there, checked again
and, if it passes, moved back to `staging/` before the run goes on (a retry: README,
Troubleshooting). A byte-order mark or Windows line endings are accepted and said so in the
materialization's `notes` and in the log.
"""

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from ml_demo_dagster.core import batch_steps
from ml_demo_dagster.core.layout import raw_key
from ml_demo_dagster.core.staging import StagingBatch
from ml_demo_dagster.core.store import ObjectStore
from ml_demo_dagster.defs.ingest import checks
from ml_demo_dagster.defs.metadata import preview
from ml_demo_dagster.defs.partitions import batches
from ml_demo_dagster.defs.resources import ProjectConfigResource, StoreResource
from ml_demo_dagster.defs.retries import STORAGE_RETRY


def quarantine_failure(store: ObjectStore, batch_id: str, problem: dict, stage: str) -> dg.Failure:
    """Quarantine the batch and return the step's failure: one line, never retried."""
    return as_failure(batch_steps.quarantine_batch(store, batch_id, problem, stage))


def as_failure(error: batch_steps.StepError) -> dg.Failure:
    """A step's error as the asset's failure: one line; quarantined batches carry their record."""
    metadata = {"quarantine": dg.MetadataValue.json(error.record)} if isinstance(error, batch_steps.Quarantined) else {}
    return dg.Failure(description=str(error), metadata=metadata, allow_retries=error.retry)


def loaded(context: dg.AssetExecutionContext, batch_id: str, step) -> tuple:
    """Run an ingest step (core/batch_steps.py): its failure as the asset's, its notes in the log."""
    try:
        done, results = step()
    except batch_steps.StepError as e:
        raise as_failure(e) from None
    if done.released is not None:
        context.log.info(f"batch {batch_id}: fixed files pass the contract; moved back to staging/: {done.released}")
    for note in done.batch.notes:
        context.log.warning(f"batch {batch_id}: {note}")
    return done.batch, results


def _span(ts: pa.ChunkedArray) -> dict:
    lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
    return {"first_ms": lo, "last_ms": hi, "minutes": round((hi - lo) / 60000, 1)}


def _notes(batch: StagingBatch) -> dict:
    return {"notes": dg.MetadataValue.json(list(batch.notes))} if batch.notes else {}


@dg.asset(partitions_def=batches, group_name="ingest", kinds={"csv", "parquet"}, check_specs=checks.TICK_CHECKS,
          retry_policy=STORAGE_RETRY)  # fmt: skip
def raw_ticks(context: dg.AssetExecutionContext, store: StoreResource) -> dg.MaterializeResult:
    """Price ticks of one batch, validated against the staging contract, as parquet."""
    batch_id, s = context.partition_key, store.open()
    batch, results = loaded(context, batch_id, lambda: batch_steps.raw_ticks(s, batch_id))
    ticks = batch.prices
    return dg.MaterializeResult(
        metadata={"rows": ticks.num_rows, **_span(ticks.column("timestamp")), "preview": preview(ticks),
                  "path": s.uri(raw_key("ticks", batch_id)), **_notes(batch)},
        check_results=[checks.result(c, checks.RAW_TICKS) for c in results],
    )  # fmt: skip


@dg.asset(partitions_def=batches, group_name="ingest", kinds={"csv", "parquet"}, deps=[raw_ticks],
          check_specs=checks.DEAL_CHECKS, retry_policy=STORAGE_RETRY)  # fmt: skip
def raw_deals(
    context: dg.AssetExecutionContext, store: StoreResource, project: ProjectConfigResource
) -> dg.MaterializeResult:
    """Buy deals of one batch with their outcome, validated against the staging contract, as parquet."""
    batch_id, s = context.partition_key, store.open()
    point_value = project.get().market.point_value
    batch, results = loaded(context, batch_id, lambda: batch_steps.raw_deals(s, batch_id, point_value))
    deals = batch.deals
    profit = pc.sum(pc.equal(deals.column("loss_or_profit"), "profit")).as_py()
    return dg.MaterializeResult(
        metadata={"rows": deals.num_rows, "profit_share": round(profit / deals.num_rows, 4),
                  **_span(deals.column("timestamp")), "preview": preview(deals),
                  "path": s.uri(raw_key("deals", batch_id)), **_notes(batch)},
        check_results=[checks.result(c, checks.RAW_DEALS) for c in results],
    )  # fmt: skip
