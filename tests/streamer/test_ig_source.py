"""IGSource with the real lightstreamer-client-lib against the loopback IG fakes: login and
subscription, MERGE updates, a dropped connection, an expired session, refusals, malformed
updates, giving up, and stopping. Every wait is on a condition with a deadline."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from ig_fakes import FakeIG

from ml_demo_dagster.config import ConfigError, load_config
from streamer.sources import make_source
from streamer.sources.ig import FIELDS, IGFeedLost, IGSource
from streamer.sources.ig_login import IGCredentialsError, IGLoginRefused

FAST = {  # the library's timers, shortened so that a drop is noticed in well under a second
    "ML_DEMO__IG__RETRY_DELAY_SECONDS": "0.2",
    "ML_DEMO__IG__STALLED_TIMEOUT_SECONDS": "0.2",
    "ML_DEMO__IG__RECONNECT_TIMEOUT_SECONDS": "0.2",
    "ML_DEMO__IG__SESSION_RECOVERY_TIMEOUT_SECONDS": "1",
    "ML_DEMO__IG__REQUEST_TIMEOUT_SECONDS": "5",
}
FIRST = {
    "UPDATE_TIME": "10:00:00", "BID": "29990", "OFFER": "30010", "CHANGE": "12.5", "CHANGE_PCT": "0.04",
    "MID_OPEN": "29987.5", "HIGH": "30100", "LOW": "29900", "MARKET_STATE": "TRADEABLE", "MARKET_DELAY": "0",
}  # fmt: skip


def config_for(fake: FakeIG, **settings):
    env = {"ML_DEMO__IG__BASE_URL": fake.rest_url, **FAST}
    env.update({f"ML_DEMO__IG__{k.upper()}": str(v) for k, v in settings.items()})
    return load_config(environ=env)


def env_for(fake: FakeIG, **override):
    return {"IG_IDENTIFIER": fake.identifier, "IG_PASSWORD": fake.password, "IG_API_KEY": fake.api_key, **override}


class Reader:
    """Iterates a source on a thread, as the runner does; the test waits on what it read."""

    def __init__(self, source: IGSource):
        self.source, self.ticks, self.error = source, [], None
        self.done = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for tick in self.source:
                with self._cond:
                    self.ticks.append(tick)
                    self._cond.notify_all()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e
        finally:
            self.done.set()
            with self._cond:
                self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 20) -> list:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.ticks) < count:
                assert self.error is None, f"the source failed: {self.error!r}"
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"only {len(self.ticks)} of {count} ticks within {timeout} s"
                self._cond.wait(remaining)
        return list(self.ticks)

    def wait_done(self, timeout: float = 20):
        assert self.done.wait(timeout), "the source did not end in time"
        return self.error

    def stop(self):
        self.source.close()
        self.wait_done()


@pytest.fixture
def fake():
    with FakeIG() as f:
        yield f


@pytest.fixture
def open_reader(fake):
    readers = []

    def start(**settings) -> Reader:
        reader = Reader(IGSource(config_for(fake, **settings), environ=env_for(fake)))
        readers.append(reader)
        return reader

    yield start
    for reader in readers:
        reader.stop()


def prices(ticks):
    return [(t.bid, t.offer) for t in ticks]


def test_logs_in_then_subscribes_to_the_epic_in_merge_mode_with_the_tokens(fake, open_reader):
    reader = open_reader()
    sub = fake.wait_subscribed()
    [session_request] = fake.create_requests
    [login] = fake.logins
    assert session_request["LS_user"] == fake.identifier
    assert session_request["LS_password"] == f"CST-{login.cst}|XST-{login.token}"
    assert (sub.item, sub.mode, sub.fields, sub.snapshot) == ("MARKET:CS.D.BITCOIN.CFD.IP", "MERGE", list(FIELDS), True)
    fake.send(FIRST)
    [tick] = reader.wait_for(1)
    assert tuple(tick)[1:] == (29990.0, 30010.0, 29987.5, 12.5, 0.04, 30100.0, 29900.0, "10:00:00", "TRADEABLE", 0.0)
    assert reader.source.describe() == (
        f"IG MARKET:CS.D.BITCOIN.CFD.IP live from {fake.rest_url} (credentials from the environment)"
    )


def test_merge_updates_with_unchanged_fields_make_complete_ticks_in_order(fake, open_reader):
    reader = open_reader()
    fake.wait_subscribed()
    fake.send_many([FIRST, {"OFFER": "30020"}, {"BID": "29995", "UPDATE_TIME": "10:00:01"}, {"MARKET_STATE": "EDIT"}])
    ticks = reader.wait_for(4)
    assert prices(ticks) == [(29990.0, 30010.0), (29990.0, 30020.0), (29995.0, 30020.0), (29995.0, 30020.0)]
    assert [t.update_time for t in ticks] == ["10:00:00", "10:00:00", "10:00:01", "10:00:01"]
    assert ticks[-1].market_state == "EDIT" and all(t.high == 30100.0 for t in ticks)
    assert [t.timestamp for t in ticks] == sorted(t.timestamp for t in ticks)
    assert all(abs(t.timestamp / 1000 - time.time()) < 60 for t in ticks)  # the local clock at arrival


def test_malformed_updates_are_counted_and_logged_and_never_passed_on(fake, open_reader, caplog):
    caplog.set_level(logging.INFO, logger="streamer")
    reader = open_reader()
    fake.wait_subscribed()
    fake.send_many([FIRST, {"BID": "n/a"}, {"OFFER": "30050"}, {"BID": "30030"}, {"HIGH": "inf"}, {"HIGH": "30200"}])
    ticks = reader.wait_for(3)
    assert prices(ticks) == [(29990.0, 30010.0), (30030.0, 30050.0), (30030.0, 30050.0)]
    assert ticks[-1].high == 30200.0
    assert reader.source.malformed == 3
    set_aside = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    assert set_aside == [
        "IG update set aside (1 so far): BID 'n/a' is not a number",
        "IG update set aside (2 so far): BID 'n/a' is not a number",
        "IG update set aside (3 so far): HIGH 'inf' is not a finite number",
    ]


def test_a_dropped_connection_reconnects_with_the_librarys_retry_and_logs_the_gap(fake, open_reader, caplog):
    caplog.set_level(logging.INFO, logger="streamer")
    reader = open_reader()
    fake.wait_subscribed()
    fake.send_many([FIRST, {"OFFER": "30011"}])
    reader.wait_for(2)
    fake.drop()
    fake.wait_subscribed(2)  # a new session, same tokens: no new login
    fake.send({"OFFER": "30012"})
    ticks = reader.wait_for(4)
    # The new session's snapshot (what the server holds now), then the new update; nothing made up.
    assert prices(ticks) == [(29990.0, 30010.0), (29990.0, 30011.0), (29990.0, 30011.0), (29990.0, 30012.0)]
    assert len(fake.logins) == 1 and reader.source.logins == 1
    [gap] = reader.source.gaps
    assert gap.last_tick_ms == ticks[1].timestamp and gap.next_tick_ms == ticks[2].timestamp
    assert gap.seconds == pytest.approx((ticks[2].timestamp - ticks[1].timestamp) / 1000)
    messages = [r.getMessage() for r in caplog.records]
    assert "Lightstreamer: CONNECTED:WS-STREAMING" in messages
    assert any(m.startswith("Lightstreamer: the link is down (") for m in messages)
    assert any(m.startswith("Lightstreamer: connected again, ") for m in messages)
    assert any(m.startswith(f"gap in the IG feed: no ticks for {gap.seconds:.1f} s") for m in messages)


def test_a_drop_before_the_first_tick_is_a_gap_measured_from_the_fall(fake, open_reader, caplog):
    caplog.set_level(logging.INFO, logger="streamer")
    reader = open_reader()
    fake.wait_subscribed()
    fake.drop()
    fake.wait_subscribed(2)
    fake.send(FIRST)
    [tick] = reader.wait_for(1)
    [gap] = reader.source.gaps
    assert gap.last_tick_ms is None and gap.next_tick_ms == tick.timestamp and 0 < gap.seconds < 30
    assert any("no tick before" in r.getMessage() for r in caplog.records)


def test_an_expired_session_is_renewed_with_a_fresh_login(fake, open_reader, caplog):
    caplog.set_level(logging.INFO, logger="streamer")
    reader = open_reader()
    fake.wait_subscribed()
    fake.send(FIRST)
    reader.wait_for(1)
    fake.expire_tokens()  # IG's session ends: the tokens no longer open a streaming session
    fake.drop()
    fake.wait_subscribed(2, timeout=30)
    fake.send({"BID": "29991"})
    ticks = reader.wait_for(3)
    assert prices(ticks)[-1] == (29991.0, 30010.0)
    assert fake.refused_sessions >= 1 and len(fake.logins) == 2 and reader.source.logins == 2
    latest = fake.logins[-1]
    assert fake.create_requests[-1]["LS_password"] == f"CST-{latest.cst}|XST-{latest.token}"
    messages = [r.getMessage() for r in caplog.records]
    assert any("the session was refused or closed (code 1: User/password check failed)" in m for m in messages)
    assert len(reader.source.gaps) == 1


def test_a_session_closed_by_the_server_is_reopened(fake, open_reader):
    reader = open_reader()
    fake.wait_subscribed()
    fake.send(FIRST)
    reader.wait_for(1)
    fake.end_session(32, "Closed by the administrator")
    fake.wait_subscribed(2)
    fake.send({"OFFER": "30001"})
    assert prices(reader.wait_for(3))[-1] == (29990.0, 30001.0)


def test_after_the_configured_failed_attempts_in_a_row_it_gives_up_in_one_line(fake, open_reader):
    reader = open_reader(max_failed_attempts=3)
    fake.wait_subscribed()
    fake.send(FIRST)
    reader.wait_for(1)
    fake.stop_serving()  # both servers gone: every attempt fails
    error = reader.wait_done(timeout=30)
    assert isinstance(error, IGFeedLost)
    assert str(error).startswith("IG feed lost: 3 connection attempts failed in a row (last: ")
    assert "\n" not in str(error)


def test_a_streaming_server_that_refuses_every_session_ends_with_its_reason(fake, open_reader):
    fake.refuse_sessions = True
    reader = open_reader(max_failed_attempts=2)
    error = reader.wait_done(timeout=30)
    assert str(error) == (
        "IG feed lost: 2 connection attempts failed in a row "
        "(last: the session was refused or closed: code 1 User/password check failed)"
    )
    assert len(fake.logins) == 2  # a fresh login before the second attempt


def test_sessions_that_end_before_any_update_count_as_failed_attempts(fake, open_reader):
    fake.end_sessions = True  # each session is up a moment, then ended: no data ever flows
    reader = open_reader(max_failed_attempts=3)
    error = reader.wait_done(timeout=30)
    assert isinstance(error, IGFeedLost) and str(error).endswith(
        "(last: the session was refused or closed: code 33 Unexpected error on the server)"
    )
    assert len(fake.subscriptions) == 3 and reader.ticks == []


def test_wrong_credentials_fail_at_construction(fake):
    with pytest.raises(IGLoginRefused, match="wrong identifier or password"):
        IGSource(config_for(fake), environ=env_for(fake, IG_PASSWORD="wrong"))
    with pytest.raises(IGCredentialsError, match="IG_API_KEY is not set"):
        IGSource(config_for(fake), environ=env_for(fake, IG_API_KEY=""))


def test_an_unreachable_ig_is_tried_again_then_given_up(fake):
    fake.rest_down = True
    with pytest.raises(IGFeedLost, match=r"^IG feed lost: 3 connection attempts .*HTTP 503 system.error\)$"):
        IGSource(config_for(fake, max_failed_attempts=3), environ=env_for(fake))
    assert len(fake.logins) == 3


def test_stopping_ends_the_stream_and_closes_the_session(fake, open_reader):
    reader = open_reader()
    fake.wait_subscribed()
    fake.send(FIRST)
    reader.wait_for(1)
    reader.source.close()
    assert reader.wait_done(timeout=5) is None
    fake.wait_for(lambda: not fake.connected, timeout=10, what="the session to close")


def test_the_registry_builds_it_and_refuses_options_it_cannot_honour(fake, monkeypatch):
    for name, value in env_for(fake).items():
        monkeypatch.setenv(name, value)
    source = make_source("ig", config_for(fake))
    assert isinstance(source, IGSource) and source.logins == 1
    with pytest.raises(ValueError, match="source 'ig' does not take speed"):
        make_source("ig", config_for(fake), speed=2.0)


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [("BASE_URL", "ftp://ig.example", "ig.base_url"), ("MAX_FAILED_ATTEMPTS", "0", "ig.max_failed_attempts"),
     ("RETRY_DELAY_SECONDS", "-1", "ig.retry_delay_seconds"), ("SECRET_NAME", "a b", "ig.secret_name")],
)  # fmt: skip
def test_bad_ig_settings_are_one_line_naming_the_key(name, value, key):
    with pytest.raises(ConfigError, match=rf"^config .*: {key}: "):
        load_config(environ={f"ML_DEMO__IG__{name}": value})


def test_the_default_is_igs_demo_api():
    assert load_config(environ={}).ig.base_url == "https://demo-api.ig.com/gateway/deal"
