"""Watching `staging/` for complete batches, with a cursor: the sensor's pure core.

Each scan lists only keys after a start key (S3 `StartAfter`), one listing per file kind,
so its cost follows what is new, not the size of the prefix. The start key trails the
newest batch seen (the watermark) by a lookback window, so a batch whose T is a little
older than one already seen (two writers, clock skew) is still found; batches already
handed out inside that window are remembered in the cursor and not handed out twice.

A batch is complete when both its price and deals files exist; a batch seen with one
file only is remembered as waiting, and its partner is looked up directly on later scans.
Nothing is lost when several batches land at once: every complete batch is returned,
oldest first. No Dagster imports: the Dagster sensor and `ml-demo pipeline` both call `scan`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ml_demo_dagster.core.staging import DEALS_PREFIX, PRICE_PREFIX, deals_key, parse_key, price_key
from ml_demo_dagster.core.store import ObjectStore

_KINDS = {"deals": (DEALS_PREFIX, deals_key), "price": (PRICE_PREFIX, price_key)}
_PARTNER_KEY = {"deals": price_key, "price": deals_key}
_PARTNER_KIND = {"deals": "price", "price": "deals"}
DEFAULT_LOOKBACK_MS = 15 * 60 * 1000


@dataclass
class StagingCursor:
    """The newest batch seen, batches handed out within the lookback, half-landed batches."""

    watermark: int | None = None  # newest T seen in any listing
    done: list[str] = field(default_factory=list)  # handed out, T within the lookback
    waiting: dict[str, str] = field(default_factory=dict)  # batch id -> kind seen so far

    def to_json(self) -> str:
        return json.dumps({"watermark": self.watermark, "done": self.done, "waiting": self.waiting}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> StagingCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(data.get("watermark"), list(data.get("done", [])), dict(data.get("waiting", {})))


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


def scan(store: ObjectStore, cursor: StagingCursor, lookback_ms: int = DEFAULT_LOOKBACK_MS) -> ScanResult:
    """List what landed since `cursor`; return complete batches and the advanced cursor."""
    done = set(cursor.done)
    seen: dict[str, set[str]] = {batch: {kind} for batch, kind in cursor.waiting.items()}
    ignored: list[str] = []
    watermark = cursor.watermark
    for kind, (prefix, key_of) in _KINDS.items():
        start = key_of(watermark - lookback_ms) if watermark is not None else None
        for key in store.list_keys(prefix, start_after=start):
            parsed = parse_key(key)
            if parsed is None or parsed.kind != kind:
                ignored.append(key)
                continue
            if parsed.batch_id not in done:
                seen.setdefault(parsed.batch_id, set()).add(kind)
    # Half-landed batches: look their partner up directly (it may sort below the start key).
    for batch, kinds in seen.items():
        if len(kinds) == 1:
            (kind,) = kinds
            if store.exists(_PARTNER_KEY[kind](batch)):
                kinds.add(_PARTNER_KIND[kind])
    complete = sorted((b for b, k in seen.items() if len(k) == 2), key=int)
    waiting = {b: next(iter(k)) for b, k in seen.items() if len(k) == 1}
    if seen:
        watermark = max([int(b) for b in seen] + ([watermark] if watermark is not None else []))
    horizon = (watermark or 0) - lookback_ms
    kept = sorted((b for b in done.union(complete) if int(b) > horizon), key=int)
    return ScanResult(complete=complete, cursor=StagingCursor(watermark, kept, waiting), ignored=ignored)
