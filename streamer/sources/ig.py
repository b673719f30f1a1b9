"""The live source: IG's market feed through Lightstreamer, as the seed followed it (DESIGN §2).

A REST login (`streamer.sources.ig_login`) gives two session tokens and a Lightstreamer
endpoint; the official client, `lightstreamer-client-lib`, then subscribes to item
`MARKET:<market.epic>` in MERGE mode with the seed's ten fields, as user = the IG
identifier and password = `CST-<cst>|XST-<token>`.

Ticks. A MERGE update carries only the fields that changed; `TickAssembler` keeps the last
value of each field, so every tick is complete. Every update is a tick, as in the seed. A
tick whose BID or OFFER is missing, or whose numbers do not parse as finite numbers (BID
and OFFER also > 0), is counted and logged and never passed on; the fields keep the values
the server sent, so the next update that fixes them is a tick again.

Time. A tick's timestamp is the local wall clock when the update arrives, in epoch ms:
what the seed's streamer did (`Date.now()` on each update). IG's UPDATE_TIME is only a
time of day in whole seconds, in the market's time zone, with no date, so it cannot place
a tick on its own; it is kept, as sent, in its own column. Timestamps are held strictly
increasing: an update arriving in the same millisecond as the one before (or after a step
back of the system clock) gets the last timestamp + 1 ms, because the staging contract
allows one price row per timestamp and one deal per tick (a burst of updates is then
spread over a few milliseconds, never reordered).

Connection life. Every status change of the client is logged. When the link drops, the
library reconnects by itself (recovering the session when it can, else opening a new one
with the same tokens). When the server refuses or closes the session (for instance because
IG's session expired and the tokens no longer open one), the library stops; this source
then logs in again for fresh tokens and reconnects. While the link is down no tick is
made up: the first tick after it logs the gap and its length. A failed attempt is a
connection attempt that ends before any update arrives (unless the link held for a minute),
or a login without an answer; after `ig.max_failed_attempts` of them in a row, iteration
raises IGFeedLost (one line), so a session that is refused or cut at once, again and
again, ends the run instead of hammering IG with logins.
A refused login (wrong credentials) raises IGLoginRefused at once: retrying cannot help.
No Dagster imports; no AWS imports unless the credentials come from Secrets Manager.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from lightstreamer.client import ClientListener, LightstreamerClient, Subscription, SubscriptionListener

from ml_demo_dagster.config import ProjectConfig
from streamer.sources.base import MarketSource, Tick
from streamer.sources.ig_login import (
    Credentials,
    IGError,
    IGLoginFailed,
    IGSession,
    load_credentials,
    login,
)

log = logging.getLogger(__name__)

# The seed's subscription (DESIGN §2), in its order.
FIELDS = ("UPDATE_TIME", "BID", "OFFER", "CHANGE", "CHANGE_PCT", "MID_OPEN", "HIGH", "LOW", "MARKET_STATE", "MARKET_DELAY")  # fmt: skip
_PRICES = ("BID", "OFFER")  # required on every tick, finite and > 0 (a deal's price is OFFER)
_LOG_FIRST_MALFORMED, _LOG_MALFORMED_EVERY = 20, 100
_POLL_S = 0.25  # how often a quiet feed looks at the stop event
_REASON_WAIT_S = 1.0  # after the library stops, how long its reason may take to arrive
_STABLE_S = 60.0  # a link up this long ends a run of failed attempts even if no update came


class IGFeedLost(IGError):
    """The feed could not be brought back within ig.max_failed_attempts attempts in a row."""


class _Interrupted(IGError):
    """The stop event was set while logging in."""


class MalformedUpdate(ValueError):
    """An update leaves a field that cannot be a tick's value; the message names field and value."""


def _ms_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class TickAssembler:
    """MERGE updates in, complete ticks out. Pure: no threads, no network; the clock is given."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self.values: dict[str, str | None] = {}
        self.last_ms: int | None = None  # timestamp of the last tick made

    def update(self, changed: Mapping[str, str | None]) -> Tick:
        """Take an update's changed fields; return the tick they complete, or raise MalformedUpdate."""
        for name, value in changed.items():
            if name in FIELDS:
                self.values[name] = value
        now = int(self._clock() * 1000)
        if self.last_ms is not None and now <= self.last_ms:
            now = self.last_ms + 1  # same millisecond, or the wall clock stepped back: strictly after
        tick = Tick(
            now,
            self._number("BID"),
            self._number("OFFER"),
            self._number("MID_OPEN"),
            self._number("CHANGE"),
            self._number("CHANGE_PCT"),
            self._number("HIGH"),
            self._number("LOW"),
            self._text("UPDATE_TIME"),
            self._text("MARKET_STATE"),
            self._number("MARKET_DELAY"),
        )
        self.last_ms = now
        return tick

    def _number(self, name: str) -> float | None:
        raw = self.values.get(name)
        if raw is None or raw.strip() == "":
            if name in _PRICES:
                raise MalformedUpdate(f"{name} is missing")
            return None
        try:
            value = float(raw)
        except ValueError:
            raise MalformedUpdate(f"{name} {_shown(raw)} is not a number") from None
        if not math.isfinite(value):
            raise MalformedUpdate(f"{name} {_shown(raw)} is not a finite number")
        if name in _PRICES and value <= 0:
            raise MalformedUpdate(f"{name} {_shown(raw)} is not a price above 0")
        return value

    def _text(self, name: str) -> str | None:
        raw = self.values.get(name)
        return raw if raw else None


@dataclass(frozen=True)
class Gap:
    """A stretch without ticks around a time the link was down."""

    last_tick_ms: int | None  # the last tick before it (None: the link fell before any tick)
    next_tick_ms: int  # the first tick after it
    seconds: float  # from the last tick (or, without one, from the link's fall) to the next


@dataclass(frozen=True)
class _Status:
    status: str
    at: float  # time.monotonic() when the library reported it


@dataclass(frozen=True)
class _ServerError:
    code: int
    message: str


@dataclass(frozen=True)
class _Malformed:
    reason: str


@dataclass(frozen=True)
class _Fatal:
    error: IGError


class _ClientEvents(ClientListener):
    """The client's events, queued in the order the library reports them."""

    def __init__(self, events: queue.Queue):
        self._events = events

    def onStatusChange(self, status):
        self._events.put(_Status(status, time.monotonic()))

    def onServerError(self, code, message):
        self._events.put(_ServerError(code, message or ""))


class _ItemEvents(SubscriptionListener):
    """The subscription's events: updates become ticks here, on arrival (their timestamp)."""

    def __init__(self, events: queue.Queue, item: str, assembler: TickAssembler):
        self._events, self._item, self._assembler = events, item, assembler

    def onItemUpdate(self, update):
        try:
            self._events.put(self._assembler.update(update.getChangedFields()))
        except MalformedUpdate as e:
            self._events.put(_Malformed(str(e)))

    def onSubscription(self):
        log.info("Lightstreamer: subscribed to %s", self._item)

    def onSubscriptionError(self, code, message):
        error = IGError(f"Lightstreamer refused the subscription to {self._item}: code {code} {message or ''}".rstrip())
        self._events.put(_Fatal(error))

    def onItemLostUpdates(self, itemName, itemPos, lostUpdates):
        log.warning("Lightstreamer: %s updates of %s were lost on the way", lostUpdates, itemName)


class IGSource(MarketSource):
    """Ticks of `market.epic` from IG, live. Logs in at construction (bad credentials fail there).

    The library's thread only turns updates into ticks (stamped on arrival) and queues them
    with its status changes and server errors, in the order it reports them; the iterating
    thread does all the rest: logging, counting failed attempts, gaps, logging in again.
    """

    name = "ig"

    def __init__(
        self,
        config: ProjectConfig,
        *,
        stop: threading.Event | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(stop=stop)
        self.settings = config.ig
        self.item = f"MARKET:{config.market.epic}"
        self.malformed = 0  # updates set aside
        self.gaps: list[Gap] = []
        self.logins = 0
        self._assembler = TickAssembler(clock)
        self._events: queue.Queue = queue.Queue()
        self._failed = 0  # failed attempts in a row
        self._status = ""
        self._link_up = False
        self._up_since = 0.0  # monotonic time the link came up
        self._down_since: float | None = None  # monotonic time the link went down
        self._gap_from: float | None = None  # the link fell at this monotonic time; no tick since
        self._last_tick_ms: int | None = None
        self._stopped_at: float | None = None  # the library stopped trying, at this monotonic time
        self._client: LightstreamerClient | None = None
        self._credentials: Credentials = load_credentials(self.settings.secret_name, config.project.region, environ)
        self._session: IGSession = self._login()

    def describe(self) -> str:
        return f"IG {self.item} live from {self.settings.base_url} (credentials from {self._credentials.origin})"

    def _ticks(self) -> Iterator[Tick]:
        self._client = self._connect()
        try:
            while not self._stop.is_set():
                try:
                    event = self._events.get(timeout=_POLL_S)
                except queue.Empty:
                    if self._stopped_at is not None and time.monotonic() - self._stopped_at > _REASON_WAIT_S:
                        self._restart(f"the client stopped ({self._status})")  # with no reason given
                    continue
                if isinstance(event, Tick):
                    self._failed = 0  # data flows: the attempts so far did succeed
                    self._note_tick(event)
                    yield event
                elif isinstance(event, _Status):
                    self._on_status(event)
                elif isinstance(event, _Malformed):
                    self._failed = 0
                    self.malformed += 1
                    if self.malformed <= _LOG_FIRST_MALFORMED or not self.malformed % _LOG_MALFORMED_EVERY:
                        log.warning("IG update set aside (%d so far): %s", self.malformed, event.reason)
                elif isinstance(event, _ServerError):
                    self._on_server_error(event)
                elif isinstance(event, _Fatal):
                    raise event.error
        except _Interrupted:
            return  # a stop while logging in again: the end of the stream, not an error
        finally:
            self._disconnect()

    def close(self) -> None:
        super().close()
        self._disconnect()

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()

    # -- logging in and connecting ---------------------------------------------------------

    def _login(self) -> IGSession:
        """A login, tried again while it gets no answer; a refusal is raised at once."""
        while True:
            try:
                session = login(self.settings.base_url, self._credentials, self.settings.request_timeout_seconds)
            except IGLoginFailed as e:
                self._failure(str(e))
                log.warning("%s; trying again in %g s", e, self.settings.retry_delay_seconds)
                if self._stop.wait(self.settings.retry_delay_seconds):
                    raise _Interrupted("stopped while logging in to IG") from None
                continue
            self.logins += 1
            log.info("logged in to IG at %s; streaming from %s", self.settings.base_url, session.lightstreamer_endpoint)
            return session

    def _connect(self) -> LightstreamerClient:
        client = LightstreamerClient(self._session.lightstreamer_endpoint, None)
        client.connectionDetails.setUser(self._credentials.identifier)
        client.connectionDetails.setPassword(self._session.streaming_password().reveal())
        options = client.connectionOptions
        options.setRetryDelay(int(self.settings.retry_delay_seconds * 1000))
        options.setStalledTimeout(int(self.settings.stalled_timeout_seconds * 1000))
        options.setReconnectTimeout(int(self.settings.reconnect_timeout_seconds * 1000))
        options.setSessionRecoveryTimeout(int(self.settings.session_recovery_timeout_seconds * 1000))
        client.addListener(_ClientEvents(self._events))
        subscription = Subscription("MERGE", [self.item], list(FIELDS))
        subscription.setRequestedSnapshot("yes")
        subscription.addListener(_ItemEvents(self._events, self.item, self._assembler))
        client.subscribe(subscription)
        client.connect()
        return client

    def _failure(self, what: str) -> None:
        """Count one failed attempt; past the limit, give up."""
        self._failed += 1
        if self._failed >= self.settings.max_failed_attempts:
            raise IGFeedLost(f"IG feed lost: {self._failed} connection attempts failed in a row (last: {what})")

    # -- events, in the order the library reported them -------------------------------------

    def _on_status(self, event: _Status) -> None:
        previous, status = self._status, event.status
        self._status = status
        log.info("Lightstreamer: %s", status)
        if status.startswith("CONNECTED:") and status != "CONNECTED:STREAM-SENSING":
            if self._down_since is not None:
                log.info(
                    "Lightstreamer: connected again, %.1f s after the link was reported down",
                    event.at - self._down_since,
                )
            self._link_up, self._up_since, self._down_since = True, event.at, None
            return
        if not (status == "STALLED" or status.startswith("DISCONNECTED")):
            return
        if self._link_up:
            if event.at - self._up_since >= _STABLE_S:
                self._failed = 0  # a link that held this long was a success, data or not
            self._link_up, self._down_since = False, event.at
            if self._gap_from is None:
                self._gap_from = event.at
            log.warning("Lightstreamer: the link is down (%s); no ticks until it is back", status)
        elif status.startswith("DISCONNECTED:") and previous != "STALLED":
            self._failure(status)
        if status == "DISCONNECTED":
            # The library has stopped for good; the server's reason (onServerError) follows.
            self._stopped_at = event.at

    def _on_server_error(self, event: _ServerError) -> None:
        log.warning("Lightstreamer: the session was refused or closed (code %s: %s)", event.code, event.message)
        self._restart(f"the session was refused or closed: code {event.code} {event.message}".rstrip())

    def _restart(self, reason: str) -> None:
        """The library stopped trying (the session was refused or closed): log in afresh and
        connect again. IG's tokens expire; a fresh login is what brings an expired session back."""
        self._stopped_at = None
        self._failure(reason)
        if self._failed > 1 and self._stop.wait(self.settings.retry_delay_seconds):
            return
        client = self._client
        if client is None:
            return
        log.info("logging in to IG again for a new streaming session")
        self._session = self._login()
        client.connectionDetails.setServerAddress(self._session.lightstreamer_endpoint)
        client.connectionDetails.setPassword(self._session.streaming_password().reveal())
        client.connect()

    def _note_tick(self, tick: Tick) -> None:
        if self._gap_from is not None:
            if self._last_tick_ms is not None:
                seconds = (tick[0] - self._last_tick_ms) / 1000
            else:
                seconds = time.monotonic() - self._gap_from
            gap = Gap(self._last_tick_ms, tick[0], seconds)
            self._gap_from = None
            self.gaps.append(gap)
            before = f"last tick {_ms_text(gap.last_tick_ms)}" if gap.last_tick_ms is not None else "no tick before"
            log.warning(
                "gap in the IG feed: no ticks for %.1f s (%s, next %s); nothing filled in",
                gap.seconds, before, _ms_text(tick[0]),
            )  # fmt: skip
        self._last_tick_ms = tick[0]
