"""The staging contract (DESIGN §4.1): the boundary between the streamer and the pipeline.

A batch is the pair `staging/price-<T>.csv` + `staging/deals-<T>.csv` (T = export time,
epoch ms, 13 digits), complete only when both exist. This module names the keys; the files'
format, its one strict reader and its writer live in `glue/staging.py` (re-exported here),
because the feature job ships glue/ to AWS Glue on its own and must read batches exactly as
ingest does. No Dagster or AWS imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from glue.staging import (  # noqa: F401  (the contract, re-exported for the rest of the project)
    DEAL_COLUMNS,
    DEAL_SCHEMA,
    DEAL_TYPES,
    NULLABLE,
    OUTCOMES,
    PRICE_COLUMNS,
    PRICE_SCHEMA,
    ParsedFile,
    StagingBatch,
    StagingFormatError,
    deals_rows,
    format_rows,
    js_number,
    js_string,
    parse_deals,
    parse_prices,
    price_rows,
    read_batch,
    read_deals,
    read_prices,
)

STAGING_PREFIX = "staging/"
DEALS_PREFIX = STAGING_PREFIX + "deals-"
PRICE_PREFIX = STAGING_PREFIX + "price-"
_KEY_RE = re.compile(r"^staging/(deals|price)-(\d{13})\.csv$")
KINDS = ("deals", "price")


@dataclass(frozen=True)
class BatchKey:
    """One file of a batch, parsed from its key."""

    kind: str  # "deals" | "price"
    export_ms: int

    @property
    def batch_id(self) -> str:
        return str(self.export_ms)


def deals_key(batch_id: str | int) -> str:
    return f"{DEALS_PREFIX}{batch_id}.csv"


def price_key(batch_id: str | int) -> str:
    return f"{PRICE_PREFIX}{batch_id}.csv"


def batch_file_key(kind: str, batch_id: str | int) -> str:
    """staging/<kind>-<T>.csv for kind "deals" or "price"."""
    return deals_key(batch_id) if kind == "deals" else price_key(batch_id)


def parse_key(key: str) -> BatchKey | None:
    """The batch file a key names, or None for anything else under staging/."""
    m = _KEY_RE.match(key)
    return BatchKey(m.group(1), int(m.group(2))) if m else None
