"""The simulated market: a seeded synthetic Bitcoin CFD, so everything runs without IG.

It imitates what IG's stream sends for CS.D.BITCOIN.CFD.IP closely enough for the dealer,
the exporter and the feature job to meet realistic data: ticks at irregular times
(exponential gaps, mean `sim.tick_interval_seconds`, strictly increasing ms timestamps),
a mid that moves by a random step each tick (sd `sim.volatility`), a constant spread
(`market.spread`), prices rounded to 2 decimals like IG quotes, and the daily fields:
MID_OPEN (mid at the UTC day's first tick), HIGH/LOW of the day so far, CHANGE = mid -
MID_OPEN, CHANGE_PCT, UPDATE_TIME "HH:MM:SS" (UTC), MARKET_STATE "TRADEABLE", MARKET_DELAY 0.

Two regimes, one setting apart:
- `sim.momentum = 0`: a pure random walk. Whether a deal hits its stop or its limit first
  is independent of every price before it, so there is nothing to learn: an honest model
  scores ROC AUC 0.5 on unseen data, and the gate should deploy nothing.
- `sim.momentum > 0` (the default): trends. Each step also carries a drift that persists:
  an AR(1) process in market time whose correlation decays by e every
  `sim.momentum_seconds`, with a stationary standard deviation of `momentum` x
  `volatility` per tick. A trend that has lasted a few minutes tends to go on, so the
  600 s of history in a deal's features say something about which barrier it hits
  first: a linear model can learn it, and beats chance on markets it has never seen.

The same seed and start time give the same ticks, tick for tick; with momentum 0 they are
exactly the random walk of earlier releases (the drift has its own random stream).
Random numbers are drawn in fixed-size numpy blocks (fast, and still deterministic). So the
source can resume after a crash (base.MarketSource.resume: the ticks before are made again
and dropped), and a run without --seed resuming a spooled stream takes that stream's seed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import numpy as np

from ml_demo_dagster.config import ProjectConfig
from streamer.sources.base import MarketSource, SourceError, Tick

_BLOCK = 4096
_DAY_MS = 86_400_000


class SimSource(MarketSource):
    """Endless synthetic ticks; deterministic for a given (seed, start_ms)."""

    name = "sim"
    resumable = True

    def __init__(
        self,
        config: ProjectConfig,
        *,
        seed: int | None = None,
        start_ms: int | None = None,
        speed: float | None = None,
        stop: threading.Event | None = None,
    ):
        super().__init__(speed=speed, stop=stop)
        if seed is not None and not 0 <= seed < 2**63:
            raise SourceError(f"--seed must be between 0 and 2**63-1 (got {seed})")
        # An unseeded run still has a seed, reported so that the run can be repeated.
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.start_ms = int(start_ms) if start_ms is not None else int(time.time()) * 1000
        self._chosen = {"seed": seed is not None, "start_ms": start_ms is not None}
        self._settings = {"sim": config.sim.model_dump(), "spread": config.market.spread}
        self.start_price = config.sim.start_price
        self.mean_gap_ms = config.sim.tick_interval_seconds * 1000.0
        self.volatility = config.sim.volatility
        self.momentum = config.sim.momentum
        self.momentum_ms = config.sim.momentum_seconds * 1000.0
        self.spread = config.market.spread
        if self.start_price - self.spread / 2 <= 0:
            raise SourceError(f"sim.start_price ({self.start_price}) must exceed half the spread ({self.spread / 2})")

    def identity(self) -> dict:
        return {"source": self.name, "seed": self.seed, "start_ms": self.start_ms, **self._settings}

    def adopt(self, identity: dict) -> None:
        for key in ("seed", "start_ms"):
            if not self._chosen[key] and isinstance(identity.get(key), int):
                setattr(self, key, identity[key])

    def describe(self) -> str:
        regime = f"momentum {self.momentum:g}" if self.momentum else "random walk"
        return f"sim (seed {self.seed}, {regime})" + (f" at {self.speed:g}x" if self.speed else "")

    def _drifts(self, gaps: list[int], level: float, rng: np.random.Generator) -> tuple[list[float], float]:
        """The trend's value at each of these ticks (AR(1) in market time), and its last value."""
        sd = self.momentum * self.volatility
        decay = np.exp(-np.asarray(gaps, dtype=np.float64) / self.momentum_ms)
        shocks = rng.standard_normal(len(gaps)) * sd * np.sqrt(1.0 - decay * decay)
        out = []
        for a, e in zip(decay.tolist(), shocks.tolist(), strict=True):
            level = a * level + e
            out.append(level)
        return out, level

    def _ticks(self) -> Iterator[Tick]:
        rng = np.random.default_rng(self.seed)
        # The trend draws from its own stream, so momentum 0 leaves the random walk as it was.
        trend_rng = np.random.default_rng([self.seed, 1])
        trend = trend_rng.standard_normal() * self.momentum * self.volatility if self.momentum else 0.0
        half = self.spread / 2.0
        floor = half + 0.01  # the mid reflects here, so BID stays positive
        mid = float(self.start_price)
        ts = self.start_ms
        day = mid_open = high = low = None
        first = True
        while True:
            gaps = np.maximum(np.rint(rng.exponential(self.mean_gap_ms, _BLOCK)), 1).astype(np.int64).tolist()
            steps = rng.normal(0.0, self.volatility, _BLOCK).tolist()
            if self.momentum:
                drifts, trend = self._drifts(gaps, trend, trend_rng)
                steps = [s + d for s, d in zip(steps, drifts, strict=True)]
            for gap, step in zip(gaps, steps, strict=True):
                if first:
                    first = False  # the first tick is at start_ms, at the start price
                else:
                    ts += gap
                    mid += step
                    if mid < floor:
                        mid = 2 * floor - mid
                bid = round(mid - half, 2)
                offer = round(mid + half, 2)
                quoted_mid = round((bid + offer) / 2.0, 2)
                if ts // _DAY_MS != day:
                    day = ts // _DAY_MS
                    mid_open = high = low = quoted_mid
                elif quoted_mid > high:
                    high = quoted_mid
                elif quoted_mid < low:
                    low = quoted_mid
                change = round(quoted_mid - mid_open, 2) + 0.0  # + 0.0 turns -0.0 into 0.0
                change_pct = round(change / mid_open * 100.0, 2) + 0.0
                seconds = (ts // 1000) % 86_400
                update_time = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
                yield Tick(ts, bid, offer, mid_open, change, change_pct, high, low, update_time, "TRADEABLE", 0)
