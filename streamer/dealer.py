"""The dealer: the seed's trading rule (DESIGN §2), which labels the data we train on.

On every tick, first the open buy orders are resolved against this tick's OFFER: an order
is a "loss" when stop_price >= OFFER, else a "profit" when limit_price <= OFFER (loss is
checked first, so an order meeting both is a loss). Then one new buy order opens at
price = OFFER, stop_price = OFFER - stop*point_value, limit_price = OFFER + limit*point_value.
An order never resolves on the tick that opened it.

`Dealer` does this in O(log n) per opened or resolved order: a max-heap on stop_price and
a min-heap on limit_price, each looked at only from the top. An order resolved from one
heap stays in the other as a stale entry (lazy deletion); a heap is rebuilt from the open
orders when its stale entries outnumber them, so memory stays proportional to the open
orders. Orders opened at the same OFFER resolve together, so they share one heap entry.
`NaiveDealer` scans every open order on every tick: the reference the tests and the
benchmark compare against. Both return, per tick, the orders it resolved, in opening
order. Both can say what is open (`state`, plain JSON values) and start again from that
(`restore`): the streamer's spool keeps it across a crash. Pure classes: no I/O, no clock.
"""

from __future__ import annotations

import math
from functools import partial
from heapq import heapify, heappop, heappush
from typing import NamedTuple

LOSS, PROFIT, BUY = "loss", "profit", "buy"


class Deal(NamedTuple):
    """A resolved order: the 8 staging deal columns, then when it resolved (not exported)."""

    timestamp: int  # epoch ms of the opening tick
    loss_or_profit: str
    type: str
    stop: float
    limit: float
    price: float
    stop_price: float
    limit_price: float
    resolved_at: int  # epoch ms of the resolving tick

    def row(self) -> tuple:
        """The staging deals row (DEAL_COLUMNS order)."""
        return self[:8]


_make_deal = partial(tuple.__new__, Deal)  # Deal from a tuple, without _make's Python frame
_NOTHING: tuple = ()


class _Rule:
    """Stop and limit distances shared by both dealers."""

    __slots__ = ("stop", "limit", "point_value", "_stop_distance", "_limit_distance", "resolved_count")

    def __init__(self, stop: float, limit: float, point_value: float = 1.0):
        for name, value in (("stop", stop), ("limit", limit), ("point_value", point_value)):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number (got {value})")
        self.stop, self.limit, self.point_value = stop, limit, point_value
        self._stop_distance = stop * point_value
        self._limit_distance = limit * point_value


class Dealer(_Rule):
    """The seed's rule with two heaps and lazy deletion: O(log n) per opened or resolved order.

    Orders opened at the same OFFER share their stop and limit prices, so they are kept
    together as one price level and resolve together. stop_price and limit_price both rise
    with the opening price, so the heaps hold plain prices: a max-heap (negated) whose top
    has the highest stop_price and a min-heap whose top has the lowest limit_price.
    """

    __slots__ = ("_levels", "_by_stop", "_by_limit", "_next_id")

    def __init__(self, stop: float, limit: float, point_value: float = 1.0):
        super().__init__(stop, limit, point_value)
        self._levels: dict[float, list[tuple[int, int]]] = {}  # price -> [(order id, opened at)]
        self._by_stop: list[float] = []  # -price of each level: top = highest stop_price
        self._by_limit: list[float] = []  # price of each level: top = lowest limit_price
        self._next_id = 0  # = orders opened so far
        self.resolved_count = 0

    @property
    def open_orders(self) -> int:
        return self._next_id - self.resolved_count

    @property
    def heap_sizes(self) -> tuple[int, int]:
        """Entries (live + stale) in the stop heap and the limit heap."""
        return len(self._by_stop), len(self._by_limit)

    @property
    def open_levels(self) -> int:
        """Distinct opening prices among the open orders."""
        return len(self._levels)

    def oldest_open_timestamp(self) -> int | None:
        """Opening time of the oldest open order, or None (O(open price levels))."""
        return min((level[0][1] for level in self._levels.values()), default=None)

    def state(self) -> dict:
        """The open orders ([id, opened at, price], by id) and the counters, as JSON values."""
        orders = sorted([oid, opened, price] for price, level in self._levels.items() for oid, opened in level)
        return {"next_id": self._next_id, "resolved": self.resolved_count, "open": orders}

    def restore(self, state: dict) -> None:
        """Continue from `state()`: the same deals follow the same ticks (the heaps start
        without stale entries, which only ever change when work is done, never the result)."""
        levels: dict[float, list[tuple[int, int]]] = {}
        for oid, opened, price in state["open"]:  # by id, so each level's orders stay in opening order
            levels.setdefault(price, []).append((oid, opened))
        self._levels = levels
        self._by_stop[:] = [-price for price in levels]
        heapify(self._by_stop)
        self._by_limit[:] = list(levels)
        heapify(self._by_limit)
        self._next_id = state["next_id"]
        self.resolved_count = state["resolved"]

    def on_tick(self, timestamp: int, offer: float) -> tuple[Deal, ...] | list[Deal]:
        """Resolve open orders against `offer`, then open one; returns the resolved deals."""
        resolved = _NOTHING
        by_stop = self._by_stop
        by_limit = self._by_limit
        if (by_stop and -by_stop[0] - self._stop_distance >= offer) or (
            by_limit and by_limit[0] + self._limit_distance <= offer
        ):
            resolved = self._resolve(timestamp, offer)
        oid = self._next_id
        self._next_id = oid + 1
        level = self._levels.get(offer)
        if level is None:
            self._levels[offer] = [(oid, timestamp)]
            heappush(by_stop, -offer)
            heappush(by_limit, offer)
        else:
            level.append((oid, timestamp))
        return resolved

    def _resolve(self, timestamp: int, offer: float) -> list[Deal]:
        levels = self._levels
        stop_distance, limit_distance = self._stop_distance, self._limit_distance
        # (first order id, level, outcome, price) per resolved level; ids are unique, so
        # sorting these tuples compares ids only.
        hits: list[tuple[int, list[tuple[int, int]], str, float]] = []
        crowded = False  # a level holding several orders (offers that repeated)
        # An entry whose level is gone is stale: that level resolved from the other heap.
        by_stop = self._by_stop
        while by_stop and -by_stop[0] - stop_distance >= offer:  # stop_price >= OFFER
            price = -heappop(by_stop)
            level = levels.pop(price, None)
            if level is not None:
                hits.append((level[0][0], level, LOSS, price))
                crowded = crowded or len(level) > 1
        by_limit = self._by_limit
        while by_limit and by_limit[0] + limit_distance <= offer:  # limit_price <= OFFER
            price = heappop(by_limit)
            level = levels.pop(price, None)
            if level is not None:
                hits.append((level[0][0], level, PROFIT, price))
                crowded = crowded or len(level) > 1
        # Compaction (in place: on_tick holds the lists) once stale entries outnumber live ones.
        live = len(levels)
        if len(by_stop) > 2 * live:
            by_stop[:] = [-price for price in levels]
            heapify(by_stop)
        if len(by_limit) > 2 * live:
            by_limit[:] = list(levels)
            heapify(by_limit)
        # Hand the deals out in opening order (order id), as the naive scan does.
        stop, limit = self.stop, self.limit
        hits.sort()
        if not crowded:  # the usual case: one order per level
            found = [
                _make_deal((level[0][1], outcome, BUY, stop, limit, price, price - stop_distance,
                            price + limit_distance, timestamp))
                for _, level, outcome, price in hits
            ]  # fmt: skip
        else:  # a level holds several orders: merge them by id
            orders = sorted((oid, opened, outcome, price) for _, level, outcome, price in hits for oid, opened in level)
            found = [
                _make_deal((opened, outcome, BUY, stop, limit, price, price - stop_distance,
                            price + limit_distance, timestamp))
                for _, opened, outcome, price in orders
            ]  # fmt: skip
        self.resolved_count += len(found)
        return found


class NaiveDealer(_Rule):
    """The reference: every open order is checked on every tick (O(n) per tick)."""

    __slots__ = ("_orders",)

    def __init__(self, stop: float, limit: float, point_value: float = 1.0):
        super().__init__(stop, limit, point_value)
        self._orders: list[tuple[int, float, float, float]] = []  # (timestamp, price, stop_price, limit_price)
        self.resolved_count = 0

    @property
    def open_orders(self) -> int:
        return len(self._orders)

    def oldest_open_timestamp(self) -> int | None:
        return self._orders[0][0] if self._orders else None

    def state(self) -> dict:
        return {"resolved": self.resolved_count, "open": [list(order) for order in self._orders]}

    def restore(self, state: dict) -> None:
        self._orders = [tuple(order) for order in state["open"]]
        self.resolved_count = state["resolved"]

    def on_tick(self, timestamp: int, offer: float) -> list[Deal]:
        resolved: list[Deal] = []
        still_open = []
        for order in self._orders:
            if order[2] >= offer:
                resolved.append(
                    Deal(order[0], LOSS, BUY, self.stop, self.limit, order[1], order[2], order[3], timestamp)
                )
            elif order[3] <= offer:
                resolved.append(
                    Deal(order[0], PROFIT, BUY, self.stop, self.limit, order[1], order[2], order[3], timestamp)
                )
            else:
                still_open.append(order)
        still_open.append((timestamp, offer, offer - self._stop_distance, offer + self._limit_distance))
        self._orders = still_open
        self.resolved_count += len(resolved)
        return resolved
