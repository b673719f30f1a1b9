"""The streamer's spool: what a stream has not yet written as batches, on local disk, so that
a SIGKILL at any moment (or a machine crash) loses no resolved deal and writes none twice.

What is kept. The dealer and the exporter are deterministic: the same ticks give the same
deals and the same batches. So the spool does not copy every deal; it keeps what cannot be
made again:

- a header: the stream's identity (source, the settings that shape deals and batches, the
  store); a spool is never resumed by a different stream;
- checkpoints: the open orders, the resolved deals not yet in a batch, the stream position
  (ticks handled) and the price buffer, after every batch and every `stream.checkpoint_seconds`;
- every batch id T, recorded *before* the batch is uploaded: T is the one thing that is not
  deterministic (the wall clock), and with it recorded a re-upload writes the same two keys
  with the same bytes;
- for a source that cannot hand its ticks out again (a live feed: `resumable` False), every
  tick as it arrives; a resumable source (replay, sim) is instead restarted at the position,
  and the price buffer is re-read from it rather than stored.

A restart reads the last checkpoint and what follows it, restores the dealer and the
exporter, feeds the logged ticks (or restarts the source), and then every batch comes out
exactly as in a run never interrupted, with the Ts already decided. When a resumable source
ends, the stream is complete and the spool is removed.

The file: one record a line, `<crc32, 8 hex digits> <JSON>\\n`, appended with os.write (a
kill loses nothing os.write has returned from; only Python's own buffers would be lost, and
none are used). A kill in the middle of a write leaves a torn last line: it fails its CRC
or has no newline, and is cut off at the next open. fsync (for machine crashes only) is
done where losing a write would do harm: before each upload (a T must be on disk before its
batch can be in the store, else a crash could re-export it under a new T), for a live
source's ticks at most once a second (they cannot be fetched again), and around the rewrite
that compacts the file. Checkpoints are not fsynced on their own: losing one to a machine
crash only means starting from the one before. One process at a time: a lock file beside
the spool. No Dagster or AWS imports.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_demo_dagster.config import ProjectConfig, check_spool_template
from streamer.sources.base import MarketSource, Tick

FORMAT = 1
_SYNC_TICKS_EVERY_S = 1.0  # a live source's ticks reach the disk at least this often
_COMPACT_AT_BYTES = 8 * 2**20  # rewrite the file (header + last checkpoint) beyond this size


class SpoolError(RuntimeError):
    """The spool cannot be used as asked; the message is one line for the user."""


def spool_path(template: str, *, source: str, store_url: str, base: str | os.PathLike[str]) -> Path:
    """The spool of `source` writing to `store_url`: `template` with {source} and {store}
    (12 hex digits of the store URL's SHA-256) filled in; relative paths are under `base`."""
    try:
        check_spool_template(template)
    except ValueError as e:
        raise SpoolError(f"spool path {template!r}: {e}") from None
    store = hashlib.sha256(store_url.encode("utf-8")).hexdigest()[:12]
    return Path(base) / Path(template.format(source=source, store=store)).expanduser()


def stream_identity(config: ProjectConfig, source: MarketSource, store_url: str) -> dict[str, Any]:
    """Everything that makes a stream's deals and batches what they are, as flat JSON values."""
    identity = {f"source.{k}" if k != "source" else k: v for k, v in source.identity().items()}
    identity.update(
        {
            "store": store_url,
            "market.epic": config.market.epic,
            "market.point_value": config.market.point_value,
            "dealer.stop": config.dealer.stop,
            "dealer.limit": config.dealer.limit,
            "export.batch_size": config.export.batch_size,
            "export.price_lead_seconds": config.export.price_lead_seconds,
        }
    )
    return identity


@dataclass
class Recovery:
    """What the spool holds of an earlier run."""

    state: dict[str, Any] | None = None  # the last checkpoint (None: the stream never got that far)
    ticks: list[Tick] = field(default_factory=list)  # logged after it (sources that cannot resume)
    decided: dict[int, int] = field(default_factory=dict)  # batch seq -> T, recorded after it
    torn_bytes: int = 0  # a torn last record cut off

    @property
    def empty(self) -> bool:
        return self.state is None and not self.ticks and not self.decided


def _encode(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, separators=(",", ":")).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _decode(line: bytes) -> dict[str, Any] | None:
    """The record on one line (without its newline), or None if it is torn or corrupt."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a spool file and the length of its valid part (a torn tail follows it).

    A bad record with a good one after it is not a torn write but damage: SpoolError."""
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    offset = 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], 1):  # the part after the last newline is torn
        record = _decode(line)
        if record is None:
            if any(_decode(later) is not None for later in lines[number:-1]):
                raise SpoolError(
                    f"spool {path} is damaged at line {number} (valid records follow it); "
                    "move it aside or pass --fresh to start a new stream"
                )
            break
        records.append(record)
        offset += len(line) + 1
    return records, offset


def _describe(value: Any) -> str:
    """A value for a one-line message: whole, but hashes cut to 12 digits."""
    if isinstance(value, list):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f'"{value[:12]}..."'
    return json.dumps(value)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """One stream's spool file, open for appending, locked against a second streamer."""

    def __init__(self, path: Path, identity: dict[str, Any], lock_fd: int):
        self.path = path
        self.identity = identity
        self._lock_fd = lock_fd
        self._fd = -1
        self._size = 0
        self._last_state_size = 0
        self._unsynced = False
        self._synced_at = time.monotonic()
        self.recovery = Recovery()

    # Opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], identity: dict[str, Any], *, fresh: bool = False) -> Spool:
        """Open the spool at `path` for the stream `identity`: resume what it holds, or start it.

        A spool of another stream is refused (SpoolError naming what differs) unless `fresh`,
        which renames it aside (`<name>.discarded-<time>`) and starts a new one."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = cls._lock(path)
        except OSError as e:
            raise SpoolError(f"spool {path}: cannot use it: {e.strerror or e}") from None
        spool = cls(path, identity, lock_fd)
        try:
            if fresh and path.exists():
                aside = path.with_name(f"{path.name}.discarded-{time.strftime('%Y%m%dT%H%M%S')}")
                os.replace(path, aside)
            spool._open_file()
        except OSError as e:
            spool.close()
            raise SpoolError(f"spool {path}: cannot use it: {e.strerror or e}") from None
        except BaseException:
            spool.close()
            raise
        return spool

    @staticmethod
    def _lock(path: Path) -> int:
        lock_path = path.with_name(path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise SpoolError(f"spool {path} is in use by another streamer{who}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        return fd

    def _open_file(self) -> None:
        records, valid = read_records(self.path) if self.path.exists() else ([], 0)
        if not records:  # no spool, or one whose header never reached the disk: a new stream
            self._create()
            return
        header = records[0]
        if header.get("k") != "header":
            raise SpoolError(f"spool {self.path} does not start with a spool header; move it aside or pass --fresh")
        if header.get("format") != FORMAT:
            raise SpoolError(
                f"spool {self.path} has format {header.get('format')!r}, this streamer writes {FORMAT}; "
                "finish it with the version that wrote it, or pass --fresh"
            )
        self._check_identity(header.get("identity") or {})
        size = self.path.stat().st_size
        self.recovery = self._recover(records[1:])
        self.recovery.torn_bytes = size - valid
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        if valid < size:  # cut the torn tail off before anything is appended after it
            os.ftruncate(self._fd, valid)
            os.fsync(self._fd)
        self._size = valid

    def _check_identity(self, theirs: dict[str, Any]) -> None:
        ours = self.identity
        differ = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
        if differ:
            k = differ[0]
            more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
            raise SpoolError(
                f"spool {self.path} belongs to another stream: {k} is {_describe(theirs.get(k))} there, "
                f"{_describe(ours.get(k))} here{more}; run with the same settings to finish it, "
                "or pass --fresh to set it aside and start a new stream"
            )

    @staticmethod
    def _recover(records: list[dict[str, Any]]) -> Recovery:
        recovery = Recovery()
        for record in records:
            kind = record.get("k")
            if kind == "state":
                recovery.state, recovery.ticks, recovery.decided = record, [], {}
            elif kind == "t":
                recovery.ticks.append(tuple.__new__(Tick, record["v"]))
            elif kind == "batch":
                recovery.decided[record["seq"]] = record["T"]
        return recovery

    def _create(self) -> None:
        """Write the header to a new file: written whole, synced, then renamed into place."""
        tmp = self.path.with_name(f".{self.path.name}.new")
        self._write_file(tmp, _encode({"k": "header", "format": FORMAT, "identity": self.identity}))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = self.path.stat().st_size

    def _write_file(self, tmp: Path, data: bytes) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)

    # Writing -----------------------------------------------------------------------------

    def log_tick(self, tick: Tick) -> None:
        """Append a tick of a source that cannot resume (before it is handled)."""
        self._append(_encode({"k": "t", "v": tick}))
        self._unsynced = True
        now = time.monotonic()
        if now - self._synced_at >= _SYNC_TICKS_EVERY_S:
            self.sync()

    def record_batch(self, seq: int, batch_id: str) -> None:
        """Record T of the stream's batch number `seq`, on disk before its upload starts."""
        self._append(_encode({"k": "batch", "seq": seq, "T": int(batch_id)}))
        self.sync()

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Append the streamer's state; compact the file when it has grown large."""
        record = _encode({"k": "state", **state})
        self._append(record)
        self._last_state_size = len(record)
        if self._size > max(_COMPACT_AT_BYTES, 4 * len(record)):
            self._compact(record)

    def sync(self) -> None:
        os.fsync(self._fd)
        self._unsynced = False
        self._synced_at = time.monotonic()

    def _append(self, data: bytes) -> None:
        _write_all(self._fd, data)
        self._size += len(data)

    def _compact(self, state_record: bytes) -> None:
        """Rewrite the file as its header and the latest checkpoint (all that a restart needs)."""
        header = _encode({"k": "header", "format": FORMAT, "identity": self.identity})
        os.close(self._fd)
        self._fd = -1
        self._write_file(self.path.with_name(f".{self.path.name}.new"), header + state_record)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(header) + len(state_record)
        self._unsynced = False

    # Ending ------------------------------------------------------------------------------

    def finish(self) -> None:
        """The stream is complete (its source ended): nothing is left to resume."""
        self._close_file()
        self.path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)

    def close(self) -> None:
        """Close the file (synced if a live tick is not yet on disk) and release the lock."""
        self._close_file()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def _close_file(self) -> None:
        if self._fd >= 0:
            if self._unsynced:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def size(self) -> int:
        return self._size

    def describe(self) -> str:
        """One line on what this spool resumes, for the streamer's first message."""
        r = self.recovery
        if r.empty:
            return f"spool {self.path} (new stream)"
        state = r.state or {}
        parts = [f"{state.get('position', 0):,} ticks in"]
        if state:
            parts.append(f"{len(state['exporter']['pending']):,} deals pending")
        if r.ticks:
            parts.append(f"{len(r.ticks):,} logged ticks to handle again")
        if r.decided:
            parts.append(f"{len(r.decided)} batch upload(s) to finish")
        if r.torn_bytes:
            parts.append(f"a torn last record of {r.torn_bytes} bytes dropped")
        return f"spool {self.path} (resuming: {', '.join(parts)})"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def open_spool(
    path: str | os.PathLike[str],
    config: ProjectConfig,
    source: MarketSource,
    store_url: str,
    *,
    fresh: bool = False,
) -> Spool:
    """Open the stream's spool; a source resuming it first adopts the choices it left open."""
    path = Path(path)
    if not fresh:
        for header in _header_of(path):
            theirs = header.get("identity") or {}
            if theirs.get("source") == source.name:
                source.adopt({k.removeprefix("source."): v for k, v in theirs.items() if k.startswith("source.")})
    return Spool.open(path, stream_identity(config, source, store_url), fresh=fresh)


def _header_of(path: Path) -> Iterator[dict[str, Any]]:
    """The header record of the spool at `path`, if there is a readable one."""
    try:
        with path.open("rb") as f:
            first = f.readline()
    except OSError:
        return
    if first.endswith(b"\n"):
        record = _decode(first[:-1])
        if record is not None and record.get("k") == "header":
            yield record
