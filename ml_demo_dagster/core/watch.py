"""Watching `staging/` for complete batches, with a cursor: the sensor's pure core.

Each scan lists only keys after a start key (S3 `StartAfter`), so its cost follows what is
new, not the size of the prefix. Deals files are listed every scan; price files at most
once a minute (PRICE_LISTING_INTERVAL_MS): a batch is complete only with its deals file
(the exporter's commit mark), whose price partner is then looked up directly, so the price
listing only finds price files whose deals never came, which wait 10 minutes anyway. That
halves a tick's listing requests (on moto's server, beside 100,000 objects, each costs
about 0.7 s: BENCHMARKS.md, Sensor). The start key trails the
newest batch seen (the watermark) by a lookback window, so a batch whose T is a little
older than one already seen (two writers, clock skew) is still found; batches already
handed out inside that window are remembered in the cursor and not handed out twice.

A batch is complete when both its price and deals files exist; a batch seen with one
file only is remembered as waiting (with the time it was first seen), and its partner is
looked up directly on later scans. Nothing is lost when several batches land at once: every
complete batch is returned, oldest first.

`intake` is one whole sensor tick on top of `scan`: each complete batch is read with the
staging contract's strict reader before any run is asked for, and a bad one is quarantined
on the spot (core/quarantine.py) with its file, line, field and reason; a lone file still
alone after `lone_timeout_ms` is quarantined too. So bad data never starts a run, and never
stops the sensor or the other batches. No Dagster imports: the Dagster sensor and
`ml-demo pipeline` both call `intake`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from ml_demo_dagster.core import quarantine
from ml_demo_dagster.core.staging import DEALS_PREFIX, PRICE_PREFIX, StagingFormatError, deals_key, parse_key, price_key
from ml_demo_dagster.core.store import ObjectStore

_KINDS = {"deals": (DEALS_PREFIX, deals_key), "price": (PRICE_PREFIX, price_key)}
_PARTNER_KEY = {"deals": price_key, "price": deals_key}
_PARTNER_KIND = {"deals": "price", "price": "deals"}
DEFAULT_LOOKBACK_MS = 15 * 60 * 1000
PRICE_LISTING_INTERVAL_MS = 60 * 1000


@dataclass
class StagingCursor:
    """The newest batch seen, batches handed out within the lookback, half-landed batches."""

    watermark: int | None = None  # newest T seen in any listing
    done: list[str] = field(default_factory=list)  # handed out, T within the lookback
    waiting: dict[str, str] = field(default_factory=dict)  # batch id -> kind seen so far
    since: dict[str, int] = field(default_factory=dict)  # batch id -> when its lone file was first seen (ms)
    recheck: list[str] = field(default_factory=list)  # complete batches that could not be read: next tick
    price_listed_ms: int | None = None  # when price files were last listed

    def to_json(self) -> str:
        data = {"watermark": self.watermark, "done": self.done, "waiting": self.waiting}
        if self.since:
            data["since"] = self.since
        if self.recheck:
            data["recheck"] = self.recheck
        if self.price_listed_ms is not None:
            data["price_listed_ms"] = self.price_listed_ms
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> StagingCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            data.get("watermark"), list(data.get("done", [])), dict(data.get("waiting", {})),
            {k: int(v) for k, v in data.get("since", {}).items()},
            list(data.get("recheck", [])),
            data.get("price_listed_ms"),
        )  # fmt: skip


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


def now_ms() -> int:
    return int(time.time() * 1000)


def scan(
    store: ObjectStore,
    cursor: StagingCursor,
    lookback_ms: int = DEFAULT_LOOKBACK_MS,
    now: int | None = None,
    price_every_ms: int = PRICE_LISTING_INTERVAL_MS,
) -> ScanResult:
    """List what landed since `cursor`; return complete batches and the advanced cursor."""
    now = now_ms() if now is None else now
    list_prices = cursor.price_listed_ms is None or now - cursor.price_listed_ms >= price_every_ms
    done = set(cursor.done)
    seen: dict[str, set[str]] = {batch: {kind} for batch, kind in cursor.waiting.items()}
    ignored: list[str] = []
    watermark = cursor.watermark
    for kind, (prefix, key_of) in _KINDS.items():
        if kind == "price" and not list_prices:
            continue
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
    since = {b: cursor.since.get(b, now) for b in waiting}
    if seen:
        watermark = max([int(b) for b in seen] + ([watermark] if watermark is not None else []))
    horizon = (watermark or 0) - lookback_ms
    kept = sorted((b for b in done.union(complete) if int(b) > horizon), key=int)
    listed = now if list_prices else cursor.price_listed_ms
    return ScanResult(complete, StagingCursor(watermark, kept, waiting, since, [], listed), ignored)


@dataclass
class Waiting:
    """A lone file: which batch, what it has, what it waits for, since when, and until when."""

    batch: str
    have: str  # key of the file that is there
    waiting_for: str  # key of the missing partner
    since_ms: int
    quarantine_at_ms: int

    def to_dict(self) -> dict:
        return {"batch": self.batch, "have": self.have, "waiting_for": self.waiting_for,
                "since_ms": self.since_ms, "quarantine_at_ms": self.quarantine_at_ms}  # fmt: skip


@dataclass
class IntakeResult:
    """One tick: batches to run, batches quarantined now (their records), lone files waiting."""

    ready: list[str]
    quarantined: list[dict]
    waiting: list[Waiting]
    ignored: list[str]
    cursor: StagingCursor
    notes: dict[str, list[str]] = field(default_factory=dict)  # batch -> accepted oddities (BOM, CRLF)
    errors: list[str] = field(default_factory=list)  # batches that could not be checked now (retried next tick)

    def waiting_reason(self) -> str:
        if self.waiting:
            parts = [f"{w.waiting_for} (have {w.have.rpartition('/')[2]})" for w in self.waiting]
            return "waiting for the other file of: " + ", ".join(parts)
        return f"no new complete batch in {DEALS_PREFIX}<T>.csv + {PRICE_PREFIX}<T>.csv"


def intake(
    store: ObjectStore,
    cursor: StagingCursor,
    *,
    lone_timeout_ms: int,
    lookback_ms: int = DEFAULT_LOOKBACK_MS,
    now: int | None = None,
) -> IntakeResult:
    """scan, then check each complete batch with the strict reader and set aside what is bad."""
    now = now_ms() if now is None else now
    found = scan(store, cursor, lookback_ms, now)
    ready, set_aside, notes, errors, recheck = [], [], {}, [], []
    done = set(found.cursor.done)
    # Batches that could not be read last tick are looked at again even if the listing's
    # start key has moved past them.
    candidates = found.complete + sorted(set(cursor.recheck) - set(found.complete), key=int)
    for batch in candidates:
        try:
            files = quarantine.locate(store, batch)
            if files is None or files.place != "staging":  # gone since the listing (moved aside meanwhile)
                done.discard(batch)
                continue
            checked = quarantine.read(store, files)
        except StagingFormatError as e:
            set_aside.append(quarantine.quarantine(store, batch, quarantine.problem_of(e), "sensor", now / 1000))
            continue
        except Exception as e:  # noqa: BLE001 (a storage hiccup: look again next tick, never crash the sensor)
            errors.append(f"batch {batch}: {type(e).__name__}: {e}")
            done.discard(batch)
            recheck.append(batch)
            continue
        ready.append(batch)
        if checked.notes:
            notes[batch] = list(checked.notes)
    waiting, still = [], {}
    for batch, kind in sorted(found.cursor.waiting.items(), key=lambda kv: int(kv[0])):
        since = found.cursor.since.get(batch, now)
        partner = _PARTNER_KEY[kind](batch)
        if now - since >= lone_timeout_ms:
            waited = round((now - since) / 1000)
            problem = {"file": _KINDS[kind][1](batch), "line": None, "field": None,
                       "reason": f"no {partner} after {waited} s (lone file timeout {lone_timeout_ms // 1000} s)"}  # fmt: skip
            try:
                set_aside.append(quarantine.quarantine(store, batch, problem, "sensor", now / 1000))
                done.add(batch)  # a run for it comes only from a retry, never from the sensor
                continue
            except Exception as e:  # noqa: BLE001
                errors.append(f"batch {batch}: {type(e).__name__}: {e}")
        still[batch] = kind
        waiting.append(Waiting(batch, _KINDS[kind][1](batch), partner, since, since + lone_timeout_ms))
    cursor_out = StagingCursor(
        found.cursor.watermark,
        sorted(done, key=int),
        still,
        {b: found.cursor.since.get(b, now) for b in still},
        recheck,
        found.cursor.price_listed_ms,
    )
    return IntakeResult(ready, set_aside, waiting, found.ignored, cursor_out, notes, errors)
