"""Shared by the streamer tests: the dealer rule re-derived by brute force, and CLI helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ml_demo_dagster.core.staging import deals_rows, parse_key, price_rows, read_deals, read_prices

# The console script's module form: the same `main` the `ml-demo` script runs.
CLI = [sys.executable, "-m", "ml_demo_dagster.cli"]


def brute_force_deals(ticks, stop, limit, point_value=1.0):
    """The seed's rule, derived afresh: for each tick's order, scan forward to its resolution.

    Returns (deal_row, resolved_index) for every order that resolves, in the order the
    streamer resolves them: by resolving tick, then by opening tick. `ticks` are
    (timestamp, offer) pairs.
    """
    found = []
    for i, (ts, offer) in enumerate(ticks):
        stop_price = offer - stop * point_value
        limit_price = offer + limit * point_value
        for j in range(i + 1, len(ticks)):
            later = ticks[j][1]
            outcome = "loss" if stop_price >= later else "profit" if limit_price <= later else None
            if outcome:
                found.append(((ts, outcome, "buy", stop, limit, offer, stop_price, limit_price), j))
                break
    found.sort(key=lambda pair: pair[1])  # stable: opening order within a resolving tick
    return found


def run_cli(*args, env=None, timeout=120):
    """Run `ml-demo ARGS` in a subprocess; returns the CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*CLI, *args], env=full_env, capture_output=True, text=True, timeout=timeout)


def batches_in(staging_dir: Path) -> dict[str, dict[str, Path]]:
    """Batch id -> {"deals": path, "price": path} for the files under a local staging/ folder."""
    out: dict[str, dict[str, Path]] = {}
    for path in sorted(staging_dir.iterdir()) if staging_dir.exists() else []:
        key = parse_key(f"staging/{path.name}")
        assert key is not None, f"unexpected file in staging/: {path.name}"
        out.setdefault(key.batch_id, {})[key.kind] = path
    return out


def read_batch(files: dict[str, Path]) -> tuple[list[tuple], list[tuple]]:
    """(deal rows, price rows) of one batch, parsed under the staging contract."""
    deals = deals_rows(read_deals(files["deals"].read_bytes(), str(files["deals"])))
    prices = price_rows(read_prices(files["price"].read_bytes(), str(files["price"])))
    return deals, prices


def no_temporary_files(root: Path) -> bool:
    """True when no dot-file (a local store's temporary write) is left under root."""
    return not [p for p in root.rglob(".*") if p.is_file()]
