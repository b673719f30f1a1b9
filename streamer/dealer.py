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
orders. `NaiveDealer` scans every open order on every tick: the reference the tests and
the benchmark compare against. Both return, per tick, the orders it resolved in opening
order. Pure classes: no I/O, no clock.
"""

from __future__ import annotations

import math
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


_make_deal = Deal._make
_NOTHING: tuple = ()


class _Rule:
    """Stop and limit distances shared by both dealers."""

    def __init__(self, stop: float, limit: float, point_value: float = 1.0):
        for name, value in (("stop", stop), ("limit", limit), ("point_value", point_value)):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number (got {value})")
        self.stop, self.limit, self.point_value = stop, limit, point_value
        self._stop_distance = stop * point_value
        self._limit_distance = limit * point_value


class Dealer(_Rule):
    """The seed's rule with two heaps and lazy deletion: O(log n) per opened or resolved order."""

    def __init__(self, stop: float, limit: float, point_value: float = 1.0):
        super().__init__(stop, limit, point_value)
        # order id -> (timestamp, price, stop_price, limit_price); ids increase with time
        self._open: dict[int, tuple[int, float, float, float]] = {}
        self._next_id = 0
        self._oldest_id = 0  # no open order has a smaller id
        self._loss_heap: list[tuple[float, int]] = []  # (-stop_price, id): max-heap on stop_price
        self._profit_heap: list[tuple[float, int]] = []  # (limit_price, id): min-heap on limit_price
        self._loss_stale = 0
        self._profit_stale = 0
        self.resolved_count = 0

    @property
    def open_orders(self) -> int:
        return len(self._open)

    @property
    def heap_sizes(self) -> tuple[int, int]:
        """Entries (open + stale) in the loss heap and the profit heap."""
        return len(self._loss_heap), len(self._profit_heap)

    def oldest_open_timestamp(self) -> int | None:
        """Opening time of the oldest open order, or None when none is open."""
        open_ = self._open
        if not open_:
            return None
        oid = self._oldest_id
        while oid not in open_:
            oid += 1
        self._oldest_id = oid
        return open_[oid][0]

    def on_tick(self, timestamp: int, offer: float) -> tuple[Deal, ...] | list[Deal]:
        """Resolve open orders against `offer`, then open one; returns the resolved deals."""
        resolved = _NOTHING
        loss_heap = self._loss_heap
        profit_heap = self._profit_heap
        neg_offer = -offer
        if (loss_heap and loss_heap[0][0] <= neg_offer) or (profit_heap and profit_heap[0][0] <= offer):
            resolved = self._resolve(timestamp, offer, neg_offer)
        oid = self._next_id
        self._next_id = oid + 1
        stop_price = offer - self._stop_distance
        limit_price = offer + self._limit_distance
        self._open[oid] = (timestamp, offer, stop_price, limit_price)
        heappush(loss_heap, (-stop_price, oid))
        heappush(profit_heap, (limit_price, oid))
        return resolved

    def _resolve(self, timestamp: int, offer: float, neg_offer: float) -> list[Deal]:
        open_ = self._open
        stop, limit = self.stop, self.limit
        found: list[tuple[int, Deal]] = []
        loss_heap = self._loss_heap
        while loss_heap and loss_heap[0][0] <= neg_offer:  # stop_price >= offer
            oid = heappop(loss_heap)[1]
            order = open_.pop(oid, None)
            if order is None:
                self._loss_stale -= 1
                continue
            self._profit_stale += 1
            found.append((oid, _make_deal((order[0], LOSS, BUY, stop, limit, order[1], order[2], order[3], timestamp))))
        profit_heap = self._profit_heap
        while profit_heap and profit_heap[0][0] <= offer:  # limit_price <= offer
            oid = heappop(profit_heap)[1]
            order = open_.pop(oid, None)
            if order is None:  # already resolved as a loss, this tick or before
                self._profit_stale -= 1
                continue
            self._loss_stale += 1
            found.append((oid, _make_deal((order[0], PROFIT, BUY, stop, limit, order[1], order[2], order[3], timestamp))))
        live = len(open_)
        # Compaction is in place: on_tick holds references to the heap lists.
        if self._loss_stale > live:
            loss_heap[:] = [e for e in loss_heap if e[1] in open_]
            heapify(loss_heap)
            self._loss_stale = 0
        if self._profit_stale > live:
            profit_heap[:] = [e for e in profit_heap if e[1] in open_]
            heapify(profit_heap)
            self._profit_stale = 0
        self.resolved_count += len(found)
        if len(found) > 1:
            found.sort(key=_first)
        return [deal for _, deal in found]


def _first(pair: tuple) -> int:
    return pair[0]


class NaiveDealer(_Rule):
    """The reference: every open order is checked on every tick (O(n) per tick)."""

    def __init__(self, stop: float, limit: float, point_value: float = 1.0):
        super().__init__(stop, limit, point_value)
        self._orders: list[tuple[int, float, float, float]] = []  # (timestamp, price, stop_price, limit_price)
        self.resolved_count = 0

    @property
    def open_orders(self) -> int:
        return len(self._orders)

    def oldest_open_timestamp(self) -> int | None:
        return self._orders[0][0] if self._orders else None

    def on_tick(self, timestamp: int, offer: float) -> list[Deal]:
        resolved: list[Deal] = []
        still_open = []
        for order in self._orders:
            if order[2] >= offer:
                resolved.append(Deal(order[0], LOSS, BUY, self.stop, self.limit, order[1], order[2], order[3], timestamp))
            elif order[3] <= offer:
                resolved.append(Deal(order[0], PROFIT, BUY, self.stop, self.limit, order[1], order[2], order[3], timestamp))
            else:
                still_open.append(order)
        still_open.append((timestamp, offer, offer - self._stop_distance, offer + self._limit_distance))
        self._orders = still_open
        self.resolved_count += len(resolved)
        return resolved
