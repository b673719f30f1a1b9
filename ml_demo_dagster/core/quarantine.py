"""Bad batches, moved aside: `quarantine/<T>/` holds a batch's files and why (DESIGN §4.9).

A batch that breaks the staging contract (glue/staging.py says where: file, line, field),
whose features fail a blocking check, or a file whose partner never landed, is moved out of
`staging/` into `quarantine/<T>/`, with `reason.json` beside the files:

    {"batch": T, "file": ..., "line": ..., "field": ..., "reason": ..., "stage": ...,
     "files": [...], "quarantined_at": ..., "retry": "how to run it again"}

Files are moved, never altered: each is copied byte for byte, the record written, and only
then is the staging copy deleted, so an interrupted move leaves a copy in both places and
is finished by the next attempt. Nothing under quarantine/ is ever in a training window
(windows read features/, and a quarantined batch has none).

To run a batch again, fix its files where they are (`quarantine/<T>/`) and retry it
(`ml-demo pipeline --retry T`, or launch the batch's partition in the Dagster UI): ingest
finds the files there, reads them with the same strict reader and, if they now pass, moves
them back to `staging/` (`release`) before the run goes on. No Dagster imports.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from ml_demo_dagster.core.staging import KINDS, StagingBatch, StagingFormatError, batch_file_key, read_batch
from ml_demo_dagster.core.store import ObjectNotFound, ObjectStore

QUARANTINE_PREFIX = "quarantine/"
REASON_NAME = "reason.json"


def quarantine_prefix(batch_id: str) -> str:
    return f"{QUARANTINE_PREFIX}{batch_id}/"


def reason_key(batch_id: str) -> str:
    return f"{quarantine_prefix(batch_id)}{REASON_NAME}"


def quarantined_file_key(kind: str, batch_id: str) -> str:
    """quarantine/<T>/<kind>-<T>.csv: the same name the file had in staging/."""
    return quarantine_prefix(batch_id) + batch_file_key(kind, batch_id).rpartition("/")[2]


def retry_hint(batch_id: str) -> str:
    return (
        f"fix the files in {quarantine_prefix(batch_id)}, then run `ml-demo pipeline --retry {batch_id}` "
        f"(or launch partition {batch_id} of batch_job in the Dagster UI)"
    )


@dataclass(frozen=True)
class BatchFiles:
    """Where a batch's two files are: `staging` (normal) or `quarantine` (set aside, maybe fixed)."""

    batch_id: str
    place: str  # "staging" | "quarantine"
    deals: str  # key
    price: str  # key


def locate(store: ObjectStore, batch_id: str) -> BatchFiles | None:
    """The batch's files: both in staging/, else both in quarantine/<T>/, else None."""
    staged = {kind: batch_file_key(kind, batch_id) for kind in KINDS}
    if all(store.exists(k) for k in staged.values()):
        return BatchFiles(batch_id, "staging", staged["deals"], staged["price"])
    aside = {kind: quarantined_file_key(kind, batch_id) for kind in KINDS}
    if all(store.exists(k) for k in aside.values()):
        return BatchFiles(batch_id, "quarantine", aside["deals"], aside["price"])
    return None


def read(store: ObjectStore, files: BatchFiles) -> StagingBatch:
    """Both files through the strict reader (StagingFormatError names file, line and field).

    Errors name the staging key even for files read from quarantine/, so a record says the
    same thing whichever copy was read."""
    return read_batch(
        store.get_bytes(files.deals), store.get_bytes(files.price),
        batch_file_key("deals", files.batch_id), batch_file_key("price", files.batch_id),
    )  # fmt: skip


def problem_of(error: StagingFormatError) -> dict:
    """The {file, line, field, reason} of a contract violation."""
    return error.to_dict()


def read_reason(store: ObjectStore, batch_id: str) -> dict | None:
    """The batch's quarantine record, or None when it is not quarantined."""
    try:
        return json.loads(store.get_text(reason_key(batch_id)))
    except ObjectNotFound:
        return None


def quarantine(store: ObjectStore, batch_id: str, problem: dict, stage: str, now: float | None = None) -> dict:
    """Move the batch's files (whichever exist, in staging/ or already aside) under
    quarantine/<T>/ and write reason.json beside them; returns the record."""
    moved = []
    for kind in KINDS:
        source, target = batch_file_key(kind, batch_id), quarantined_file_key(kind, batch_id)
        if store.exists(source):
            store.put_bytes(target, store.get_bytes(source))
        if store.exists(target):
            moved.append(target)
    record = {
        "batch": batch_id,
        "file": problem.get("file"),
        "line": problem.get("line"),
        "field": problem.get("field"),
        "reason": problem.get("reason"),
        "stage": stage,
        "files": moved,
        "quarantined_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now)),
        "retry": retry_hint(batch_id),
    }
    store.put_text(reason_key(batch_id), json.dumps(record, indent=2))
    for kind in KINDS:  # only now: the copies and the reason are safe
        store.delete(batch_file_key(kind, batch_id))
    return record


def release(store: ObjectStore, batch_id: str) -> list[str]:
    """Move a (fixed) quarantined batch back to staging/: files first, then the record goes."""
    restored = []
    for kind in KINDS:
        source, target = quarantined_file_key(kind, batch_id), batch_file_key(kind, batch_id)
        if store.exists(source):
            store.put_bytes(target, store.get_bytes(source))
            restored.append(target)
    store.delete(reason_key(batch_id))
    for kind in KINDS:
        store.delete(quarantined_file_key(kind, batch_id))
    return restored


def quarantined_batches(store: ObjectStore) -> list[str]:
    """Batch ids with a quarantine record, oldest first."""
    ids = [k[len(QUARANTINE_PREFIX) :].split("/")[0] for k in store.list_keys(QUARANTINE_PREFIX)]
    return sorted({b for b in ids if store.exists(reason_key(b))}, key=lambda b: (len(b), b))


def one_line(record: dict) -> str:
    """A quarantine record as one line: file, line, field, reason."""
    where = record.get("file") or f"batch {record.get('batch')}"
    if record.get("line") is not None:
        where += f" line {record['line']}"
    if record.get("field"):
        where += f" field {record['field']}"
    return f"{where}: {record.get('reason')}"
