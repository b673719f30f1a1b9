"""Ingest: a batch's staging files, validated against the contract and kept columnar.

A malformed file never stops the pipeline: the run for that batch fails with the file,
line and field in its message, a rejection record is written to `rejected/<T>.json`, the
staging files stay untouched, and the sensor goes on with the next batches.
"""

import json

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from ml_demo_dagster.core.layout import raw_key, read_table, rejected_key, write_table
from ml_demo_dagster.core.staging import StagingFormatError, deals_key, price_key, read_deals, read_prices
from ml_demo_dagster.core.store import ObjectStore
from ml_demo_dagster.defs.ingest import checks
from ml_demo_dagster.defs.metadata import preview
from ml_demo_dagster.defs.partitions import batches
from ml_demo_dagster.defs.resources import ProjectConfigResource, StoreResource


def _parse_or_reject(store: ObjectStore, batch_id: str, key: str, parse) -> pa.Table:
    try:
        return parse(store.get_bytes(key), key)
    except StagingFormatError as e:
        record = {"batch": batch_id, "file": key, "line": e.line, "field": e.field, "reason": e.reason}
        store.put_text(rejected_key(batch_id), json.dumps(record, indent=2))
        raise dg.Failure(
            description=f"batch {batch_id} set aside: {e}",
            metadata={"rejection": dg.MetadataValue.json(record)},
            allow_retries=False,
        ) from None


def _span(ts: pa.ChunkedArray) -> dict:
    lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
    return {"first_ms": lo, "last_ms": hi, "minutes": round((hi - lo) / 60000, 1)}


@dg.asset(partitions_def=batches, group_name="ingest", kinds={"csv", "parquet"}, check_specs=checks.TICK_CHECKS)
def raw_ticks(context: dg.AssetExecutionContext, store: StoreResource) -> dg.MaterializeResult:
    """Price ticks of one batch, validated against the staging contract, as parquet."""
    batch_id, s = context.partition_key, store.open()
    ticks = _parse_or_reject(s, batch_id, price_key(batch_id), read_prices)
    write_table(s, raw_key("ticks", batch_id), ticks)
    return dg.MaterializeResult(
        metadata={"rows": ticks.num_rows, **_span(ticks.column("timestamp")), "preview": preview(ticks),
                  "path": s.uri(raw_key("ticks", batch_id))},
        check_results=[checks.ticks_are_ordered(ticks), checks.spread_is_positive(ticks)],
    )  # fmt: skip


@dg.asset(partitions_def=batches, group_name="ingest", kinds={"csv", "parquet"}, deps=[raw_ticks],
          check_specs=checks.DEAL_CHECKS)  # fmt: skip
def raw_deals(
    context: dg.AssetExecutionContext, store: StoreResource, project: ProjectConfigResource
) -> dg.MaterializeResult:
    """Buy deals of one batch with their outcome, validated against the staging contract, as parquet."""
    batch_id, s = context.partition_key, store.open()
    deals = _parse_or_reject(s, batch_id, deals_key(batch_id), read_deals)
    write_table(s, raw_key("deals", batch_id), deals)
    ticks = read_table(s, raw_key("ticks", batch_id))
    profit = pc.sum(pc.equal(deals.column("loss_or_profit"), "profit")).as_py()
    return dg.MaterializeResult(
        metadata={"rows": deals.num_rows, "profit_share": round(profit / deals.num_rows, 4),
                  **_span(deals.column("timestamp")), "preview": preview(deals),
                  "path": s.uri(raw_key("deals", batch_id))},
        check_results=[
            checks.deals_have_ticks(deals, ticks),
            checks.deal_levels_match_stop_and_limit(deals, project.get().market.point_value),
        ],
    )  # fmt: skip
