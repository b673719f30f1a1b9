"""The spool file on its own: records round-trip, a torn last record, an empty file, damage,
another stream's spool, a second streamer, compaction, and where spools live."""

from __future__ import annotations

from pathlib import Path

import pytest

import streamer.spool as spool_module
from ml_demo_dagster.config import REPO_DIR
from streamer.sources.base import Tick
from streamer.spool import Spool, SpoolError, read_records, spool_path

IDENTITY = {"source": "replay", "source.sha256": ["ab" * 32], "store": "/tmp/store", "export.batch_size": 200}
TICK = Tick(1_767_225_600_000, 29980.0, 30020.0, 30000.0, 0.0, 0.0, 30000.0, 30000.0, "00:00:00", "TRADEABLE", 0)


def state(position: int) -> dict:
    return {"position": position, "last_tick": list(TICK), "dealer": {"open": []},
            "exporter": {"pending": [], "buffered": 0}}  # fmt: skip


def test_a_new_spool_holds_only_its_header_and_recovers_nothing(tmp_path):
    path = tmp_path / "s.spool"
    with Spool.open(path, IDENTITY) as spool:
        assert spool.recovery.empty and "new stream" in spool.describe()
    records, valid = read_records(path)
    assert records == [{"k": "header", "format": 1, "identity": IDENTITY}]
    assert valid == path.stat().st_size


def test_the_last_checkpoint_and_what_follows_it_are_recovered(tmp_path):
    path = tmp_path / "s.spool"
    with Spool.open(path, IDENTITY) as spool:
        spool.checkpoint(state(100))
        spool.record_batch(0, "1767225600123")
        spool.log_tick(TICK)
        spool.checkpoint(state(300))  # supersedes everything before it
        spool.record_batch(1, "1767225600456")
        spool.log_tick(TICK._replace(timestamp=TICK.timestamp + 1))
    with Spool.open(path, IDENTITY) as spool:
        recovery = spool.recovery
    assert recovery.state["position"] == 300
    assert recovery.decided == {1: 1767225600456}
    assert recovery.ticks == [TICK._replace(timestamp=TICK.timestamp + 1)]
    assert isinstance(recovery.ticks[0], Tick) and recovery.torn_bytes == 0


@pytest.mark.parametrize("cut", [1, 9, 30, -1], ids=["1 byte", "crc only", "mid-JSON", "all but the newline"])
def test_a_torn_last_record_is_cut_off_and_the_spool_goes_on(tmp_path, cut):
    """A SIGKILL in the middle of os.write leaves part of the last record."""
    path = tmp_path / "s.spool"
    with Spool.open(path, IDENTITY) as spool:
        spool.checkpoint(state(100))
        whole = path.stat().st_size
        spool.checkpoint(state(200))
    data = path.read_bytes()
    torn = cut if cut > 0 else len(data) - whole + cut
    path.write_bytes(data[: whole + torn])
    with Spool.open(path, IDENTITY) as spool:
        assert spool.recovery.state["position"] == 100  # the torn checkpoint is gone, the one before stays
        assert spool.recovery.torn_bytes == torn
        assert f"a torn last record of {torn} bytes dropped" in spool.describe()
        assert path.stat().st_size == whole  # cut off before anything is appended after it
        spool.checkpoint(state(300))
    with Spool.open(path, IDENTITY) as spool:
        assert spool.recovery.state["position"] == 300 and spool.recovery.torn_bytes == 0


def test_a_last_record_that_fails_its_checksum_is_torn_too(tmp_path):
    path = tmp_path / "s.spool"
    with Spool.open(path, IDENTITY) as spool:
        spool.checkpoint(state(100))
        spool.checkpoint(state(200))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # a flipped bit inside the last record (what a machine crash can leave)
    path.write_bytes(bytes(data))
    with Spool.open(path, IDENTITY) as spool:
        assert spool.recovery.state["position"] == 100 and spool.recovery.torn_bytes > 0


def test_damage_before_the_end_is_refused_not_skipped(tmp_path):
    path = tmp_path / "s.spool"
    with Spool.open(path, IDENTITY) as spool:
        spool.checkpoint(state(100))
        spool.checkpoint(state(200))
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1][:20] + b"X" + lines[1][21:]  # the first checkpoint; a good one follows
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(SpoolError, match=r"is damaged at line 2 \(valid records follow it\)"):
        Spool.open(path, IDENTITY)


@pytest.mark.parametrize("content", [b"", b"0000"], ids=["0 bytes", "a torn header"])
def test_an_empty_spool_starts_a_new_stream(tmp_path, content):
    """A spool whose header never reached the disk holds nothing: a new stream starts."""
    path = tmp_path / "s.spool"
    path.write_bytes(content)
    with Spool.open(path, IDENTITY) as spool:
        assert spool.recovery.empty
    assert read_records(path)[0][0]["k"] == "header"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"export.batch_size": 100}, "export.batch_size is 200 there, 100 here"),
        ({"source": "sim"}, 'source is "replay" there, "sim" here'),
        ({"source.sha256": ["cd" * 32]}, "source.sha256 is"),
        ({"store": "s3://bucket/x"}, 'store is "/tmp/store" there, "s3://bucket/x" here'),
    ],
)
def test_a_spool_of_another_stream_is_refused_in_one_line(tmp_path, change, key):
    path = tmp_path / "s.spool"
    with Spool.open(path, IDENTITY) as spool:
        spool.checkpoint(state(100))
    with pytest.raises(SpoolError) as err:
        Spool.open(path, {**IDENTITY, **change})
    message = str(err.value)
    assert key in message and str(path) in message and "--fresh" in message and "\n" not in message
    # --fresh sets it aside (nothing deleted) and starts a new stream.
    with Spool.open(path, {**IDENTITY, **change}, fresh=True) as spool:
        assert spool.recovery.empty
    aside = list(tmp_path.glob("s.spool.discarded-*"))
    assert len(aside) == 1 and read_records(aside[0])[0][1]["position"] == 100


def test_a_spool_of_another_format_is_refused(tmp_path):
    path = tmp_path / "s.spool"
    with Spool.open(path, IDENTITY):
        pass
    monkey = path.read_bytes().replace(b'"format":1', b'"format":9')
    path.write_bytes(b"%08x %s" % (spool_module.zlib.crc32(monkey[9:-1]), monkey[9:]))
    with pytest.raises(SpoolError, match="has format 9, this streamer writes 1"):
        Spool.open(path, IDENTITY)


def test_a_second_streamer_on_the_same_spool_is_refused(tmp_path):
    path = tmp_path / "s.spool"
    with Spool.open(path, IDENTITY):
        with pytest.raises(SpoolError, match=r"is in use by another streamer \(pid \d+\)"):
            Spool.open(path, IDENTITY)
    with Spool.open(path, IDENTITY):  # released on close (and by the kernel when a process dies)
        pass


def test_a_large_spool_is_compacted_to_its_header_and_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "_COMPACT_AT_BYTES", 4096)
    path = tmp_path / "s.spool"
    with Spool.open(path, IDENTITY) as spool:
        for i in range(100):
            spool.log_tick(TICK._replace(timestamp=TICK.timestamp + i))
        spool.checkpoint(state(100))
        assert spool.size == path.stat().st_size < 4096
        spool.record_batch(3, "1767225600999")
    records, _ = read_records(path)
    assert [r["k"] for r in records] == ["header", "state", "batch"]
    with Spool.open(path, IDENTITY) as spool:
        assert spool.recovery.state["position"] == 100 and spool.recovery.decided == {3: 1767225600999}
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_spool_paths_come_from_a_template(tmp_path):
    a = spool_path("spools/{source}-{store}.spool", source="sim", store_url="/data/a", base=tmp_path)
    b = spool_path("spools/{source}-{store}.spool", source="sim", store_url="/data/b", base=tmp_path)
    assert a.parent == tmp_path / "spools" and a.name.startswith("sim-") and len(a.stem) == len("sim-") + 12
    assert a != b  # one spool per store
    assert spool_path("/abs/x.spool", source="sim", store_url="/data/a", base=tmp_path) == Path("/abs/x.spool")
    with pytest.raises(SpoolError, match=r"unknown placeholder \{seed\}"):
        spool_path("{seed}.spool", source="sim", store_url="/data/a", base=tmp_path)


def test_the_config_default_lives_under_the_repository():
    from ml_demo_dagster.config import ConfigError, load_config

    config = load_config(environ={})
    assert config.stream.spool == ".ml-demo/spool/{source}-{store}.spool"
    path = spool_path(config.stream.spool, source="replay", store_url="/x", base=REPO_DIR)
    assert path.parent == REPO_DIR / ".ml-demo" / "spool"
    with pytest.raises(ConfigError, match="stream.spool: unknown placeholder"):
        load_config(environ={"ML_DEMO__STREAM__SPOOL": "{where}.spool"})


def test_a_spool_in_a_place_that_cannot_be_written_is_one_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the spool's folder should be")
    with pytest.raises(SpoolError, match=r"spool .*not-a-folder/s\.spool: cannot use it: "):
        Spool.open(blocker / "s.spool", IDENTITY)
