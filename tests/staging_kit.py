"""Small valid batches in the staging format, and one broken copy per kind of bad batch.

Shared by the sensor, quarantine and end-to-end tests. `bad_variants` follows the issue's
list of bad kinds; each variant breaks exactly one rule of the contract and says where
(file kind, line, field) the strict reader must point.
"""

from __future__ import annotations

import numpy as np

from ml_demo_dagster.core.staging import DEAL_COLUMNS, PRICE_COLUMNS, format_rows


def batch_rows(seed: int = 0, n_ticks: int = 60, start_ms: int = 1_700_000_000_000) -> tuple[list, list]:
    """(price rows, deal rows) of a tiny valid batch: a tick about every second, a buy deal on most."""
    rng = np.random.default_rng(seed)
    ts = start_ms + np.cumsum(rng.integers(300, 1500, n_ticks))
    mid = np.round(30_000 + np.cumsum(rng.normal(0, 3, n_ticks)), 2)
    prices = [
        (
            int(t),
            round(m - 20, 2),
            round(m + 20, 2),
            29_990.5,
            1.5,
            0.01,
            30_100.0,
            29_900.0,
            "12:00:00",
            "TRADEABLE",
            0,
        )
        for t, m in zip(ts, mid, strict=True)
    ]
    deals = []
    for i, row in enumerate(prices[:-1]):
        if i % 3 == 2:
            continue
        offer = row[2]
        outcome = "profit" if rng.random() < 0.5 else "loss"
        deals.append((row[0], outcome, "buy", 20, 20, offer, round(offer - 20, 2), round(offer + 20, 2)))
    return prices, deals


def batch_bytes(seed: int = 0, n_ticks: int = 60, start_ms: int = 1_700_000_000_000) -> tuple[bytes, bytes]:
    """(deals file, price file) of a tiny valid batch."""
    prices, deals = batch_rows(seed, n_ticks, start_ms)
    return format_rows(deals), format_rows(prices)


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _set_field(line: bytes, index: int, value: bytes) -> bytes:
    fields = line.rstrip(b"\n").split(b",")
    fields[index] = value
    return b",".join(fields) + b"\n"


def bad_variants(deals: bytes, price: bytes) -> dict[str, tuple[bytes, bytes, str, int | None, str | None]]:
    """kind -> (deals, price, file kind at fault, line, field) for every bad kind of the issue."""
    d, p = _lines(deals), _lines(price)
    p_col, d_col = PRICE_COLUMNS.index, DEAL_COLUMNS.index
    swapped = p.copy()
    swapped[5], swapped[6] = p[6], p[5]
    repeated = p.copy()
    repeated[6] = _set_field(p[6], 0, p[5].split(b",")[0])
    shift = 86_400_000
    return {
        "empty deals file": (b"", price, "deals", None, None),
        "empty price file": (deals, b"", "price", None, None),
        "header row": (b",".join(c.encode() for c in DEAL_COLUMNS) + b"\n" + deals, price, "deals", 1, "timestamp"),
        "missing column": (deals, b"".join(p[:3] + [p[3].rsplit(b",", 1)[0] + b"\n"] + p[4:]), "price", 4, None),
        "extra column": (b"".join(d[:2] + [d[2].rstrip(b"\n") + b",7\n"] + d[3:]), price, "deals", 3, None),
        "non-numeric price": (deals, b"".join(p[:4] + [_set_field(p[4], 1, b"abc")] + p[5:]), "price", 5, "BID"),
        "NaN price": (deals, b"".join(p[:4] + [_set_field(p[4], 2, b"NaN")] + p[5:]), "price", 5, "OFFER"),
        "infinite price": (deals, b"".join(p[:4] + [_set_field(p[4], 1, b"Infinity")] + p[5:]), "price", 5, "BID"),
        "absurd price": (deals, b"".join(p[:4] + [_set_field(p[4], 7, b"3000000")] + p[5:]), "price", 5, "LOW"),
        "BID above OFFER": (
            deals,
            b"".join(p[:4] + [_set_field(_set_field(p[4], 1, b"30100"), 2, b"30050")] + p[5:]),
            "price",
            5,
            "BID",
        ),  # fmt: skip
        "prices out of time order": (deals, b"".join(swapped), "price", 7, "timestamp"),
        "duplicate price timestamps": (deals, b"".join(repeated), "price", 7, "timestamp"),
        "duplicate deal timestamps": (b"".join(d + [d[3]]), price, "deals", len(d) + 1, "timestamp"),
        "deals 1 ms off every tick": (
            b"".join(_set_field(x, 0, str(int(x.split(b",")[0]) + 1).encode()) for x in d),
            price,
            "deals",
            1,
            "timestamp",
        ),  # fmt: skip
        "deals a day after their prices": (
            b"".join(_set_field(x, 0, str(int(x.split(b",")[0]) + shift).encode()) for x in d),
            price,
            "deals",
            1,
            "timestamp",
        ),  # fmt: skip
        "unknown loss_or_profit": (
            b"".join(d[:2] + [_set_field(d[2], d_col("loss_or_profit"), b'"draw"')] + d[3:]),
            price,
            "deals",
            3,
            "loss_or_profit",
        ),  # fmt: skip
        "truncated last line": (deals, b"".join(p[:-1]) + b",".join(p[-1].split(b",")[:4]), "price", len(p), None),
        "timestamp with a fraction": (
            deals,
            b"".join(p[:1] + [_set_field(p[1], p_col("timestamp"), p[1].split(b",")[0] + b".0")] + p[2:]),
            "price",
            2,
            "timestamp",
        ),  # fmt: skip
    }
