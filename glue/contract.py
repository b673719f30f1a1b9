"""What the feature job reads, writes and reports, shared by its Spark and pyarrow faces.

The staging column names repeat `ml_demo_dagster.core.staging` on purpose: glue/ is
shipped to AWS Glue on its own, without the rest of the project (a test keeps the two
in step). No Spark, Dagster or AWS imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from glue.feature_kernel import COUNT_KEYS, empty_counts

DEAL_COLUMNS = ("timestamp", "loss_or_profit", "type", "stop", "limit", "price", "stop_price", "limit_price")
PRICE_COLUMNS = (
    "timestamp", "BID", "OFFER", "MID_OPEN", "CHANGE", "CHANGE_PCT", "HIGH", "LOW",
    "UPDATE_TIME", "MARKET_STATE", "MARKET_DELAY",
)  # fmt: skip
# batch string, timestamp int64, label int8, duration_ms int64, duration_known bool, features array<float>.
OUTPUT_COLUMNS = ("batch", "timestamp", "label", "duration_ms", "duration_known", "features")


@dataclass(frozen=True)
class BatchInput:
    """One batch's two staging files (local paths, file: or s3:// URIs)."""

    batch_id: str
    deals_uri: str
    price_uri: str


@dataclass(frozen=True)
class FeatureReport:
    """Counts per batch (deals, rows, no_history, no_tick, missing_tick_values) and in total."""

    batches: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def totals(self) -> dict[str, int]:
        """The counts summed over all batches."""
        total = empty_counts()
        for counts in self.batches.values():
            for key in COUNT_KEYS:
                total[key] += counts[key]
        return total

    def to_dict(self) -> dict:
        """Plain JSON-ready form: {"batches": {id: counts}, "total": counts}."""
        return {"batches": {b: dict(c) for b, c in self.batches.items()}, "total": self.totals()}
