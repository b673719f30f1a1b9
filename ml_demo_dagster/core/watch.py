"""Watching `staging/` for complete batches, with a cursor: the sensor's pure core.

Each scan lists only keys after the cursor (S3 `StartAfter`), one listing per file kind,
so its cost follows what is new, not the size of the prefix. A batch is complete when
both its price and deals files exist; a batch seen with one file only is remembered in
the cursor as waiting, and its partner is looked up directly on later scans (so it is
found even if it lands with a key below the listing cursor). Nothing is lost when several
batches land at once: every complete batch is returned, oldest first.
No Dagster imports: the Dagster sensor and `ml-demo pipeline` both call `scan`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ml_demo_dagster.core.staging import DEALS_PREFIX, PRICE_PREFIX, deals_key, parse_key, price_key
from ml_demo_dagster.core.store import ObjectStore

_KINDS = {"deals": DEALS_PREFIX, "price": PRICE_PREFIX}
_PARTNER_KEY = {"deals": price_key, "price": deals_key}
_PARTNER_KIND = {"deals": "price", "price": "deals"}


@dataclass
class StagingCursor:
    """Where the last scan stopped: the last key listed per kind, and half-landed batches."""

    after: dict[str, str] = field(default_factory=dict)  # kind -> last key listed
    waiting: dict[str, str] = field(default_factory=dict)  # batch id -> kind seen so far

    def to_json(self) -> str:
        return json.dumps({"after": self.after, "waiting": self.waiting}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> StagingCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(after=dict(data.get("after", {})), waiting=dict(data.get("waiting", {})))


@dataclass
class ScanResult:
    complete: list[str]  # batch ids (T), oldest first
    cursor: StagingCursor
    ignored: list[str]  # keys under staging/ that are not batch files

    def waiting_reason(self) -> str:
        """What the watcher waits for, in words (the sensor's skip reason)."""
        if self.cursor.waiting:
            parts = [
                f"{_PARTNER_KEY[kind](batch)} (have {kind})" for batch, kind in sorted(self.cursor.waiting.items())
            ]
            return "waiting for the other file of: " + ", ".join(parts)
        return f"no new complete batch in {DEALS_PREFIX}<T>.csv + {PRICE_PREFIX}<T>.csv"


def scan(store: ObjectStore, cursor: StagingCursor) -> ScanResult:
    """List what landed since `cursor`; return complete batches and the advanced cursor."""
    seen: dict[str, set[str]] = {batch: {kind} for batch, kind in cursor.waiting.items()}
    after = dict(cursor.after)
    ignored: list[str] = []
    for kind, prefix in _KINDS.items():
        for key in store.list_keys(prefix, start_after=after.get(kind)):
            after[kind] = key
            parsed = parse_key(key)
            if parsed is None or parsed.kind != kind:
                ignored.append(key)
                continue
            seen.setdefault(parsed.batch_id, set()).add(kind)
    # Half-landed batches: look their partner up directly (it may sort below the cursor).
    for batch, kinds in seen.items():
        if len(kinds) == 1:
            (kind,) = kinds
            if store.exists(_PARTNER_KEY[kind](batch)):
                kinds.add(_PARTNER_KIND[kind])
    complete = sorted((b for b, k in seen.items() if len(k) == 2), key=int)
    waiting = {b: next(iter(k)) for b, k in seen.items() if len(k) == 1}
    return ScanResult(complete=complete, cursor=StagingCursor(after=after, waiting=waiting), ignored=ignored)
