"""Small PNG plots where a person looks: the tuning objective, a PR curve, a series over time.

Dagster shows markdown metadata, so each plot is PNG bytes and `png_markdown` wraps them
in a base64 data URI. Figures are built with matplotlib's object API on the Agg canvas
(no pyplot state, no display, safe from any thread). No Dagster or AWS imports.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_SIZE = (6.0, 3.6)
_DPI = 100


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    sink = io.BytesIO()
    fig.savefig(sink, format="png", dpi=_DPI)
    return sink.getvalue()


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def objective_plot(
    trials: Sequence[Any],
    title: str = "Tuning: validation objective per trial",
    ylabel: str = "objective",
    minimize: bool = False,
) -> bytes:
    """Objective per trial (tuner TrialResults, or numbers with None for a failed trial), each
    with its interval as an error bar when the trial has one, and the best so far."""
    objectives = [getattr(t, "objective", t) for t in trials]
    lows = [getattr(t, "objective_low", None) for t in trials]
    highs = [getattr(t, "objective_high", None) for t in trials]
    fig = Figure(figsize=_SIZE)
    ax = fig.add_subplot()
    trials = list(range(len(objectives)))
    ok = [(i, v) for i, v in zip(trials, objectives, strict=False) if _finite(v)]
    failed = [i for i, v in zip(trials, objectives, strict=False) if not _finite(v)]
    if ok:
        bars = [(i, v, lows[i], highs[i]) for i, v in ok if _finite(lows[i]) and _finite(highs[i])]
        if bars:
            ax.errorbar(
                [i for i, *_ in bars], [v for _, v, *_ in bars],
                yerr=[[v - lo for _, v, lo, _ in bars], [hi - v for _, v, _, hi in bars]],
                fmt="none", ecolor="tab:blue", alpha=0.35, capsize=3, label="95% interval",
            )  # fmt: skip
        ax.scatter([i for i, _ in ok], [v for _, v in ok], label="trial", zorder=3)
        sign = -1.0 if minimize else 1.0
        best, xs, ys = None, [], []
        for i, v in zip(trials, objectives, strict=False):
            if _finite(v) and (best is None or sign * v > sign * best):
                best = v
            if best is not None:
                xs.append(i)
                ys.append(best)
        ax.step(xs, ys, where="post", label="best so far", color="tab:orange")
    if failed:
        edge = max if minimize else min
        low = edge((v for _, v in ok), default=0.0)
        ax.scatter(failed, [low] * len(failed), marker="x", color="tab:red", label="failed", zorder=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(ylabel + (" (lower is better)" if minimize else ""))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ok or failed:
        ax.legend(loc="best", fontsize=8)
    return _png(fig)


def pr_curve_plot(
    curve: Mapping[str, Sequence[float]],
    target_recall: float | None = None,
    base_rate: float | None = None,
    title: str = "Precision-recall (test)",
) -> bytes:
    """A precision-recall curve ({"precision", "recall"} as metrics.pr_curve gives) with the target-recall line."""
    fig = Figure(figsize=_SIZE)
    ax = fig.add_subplot()
    ax.plot(list(curve["recall"]), list(curve["precision"]), drawstyle="steps-post", label="model")
    if target_recall is not None:
        ax.axvline(target_recall, linestyle="--", color="tab:orange", label=f"target recall {target_recall:g}")
    if base_rate is not None:
        ax.axhline(base_rate, linestyle=":", color="tab:gray", label=f"base rate {base_rate:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    return _png(fig)


def series_plot(
    labels: Sequence[str],
    values: Sequence[float | None],
    title: str = "Live precision per batch",
    ylabel: str = "precision",
    reference: Sequence[float | None] | None = None,
    reference_label: str = "base rate",
    lows: Sequence[float | None] | None = None,
    highs: Sequence[float | None] | None = None,
) -> bytes:
    """A series over time (e.g. live precision per batch), with its interval as a band when
    given (`lows`, `highs`; None where no interval was claimed), and optionally a reference series."""
    fig = Figure(figsize=_SIZE)
    ax = fig.add_subplot()
    x = list(range(len(labels)))

    def clean(seq: Sequence[float | None]) -> list[float]:
        return [v if _finite(v) else math.nan for v in seq]

    if lows is not None and highs is not None:
        ax.fill_between(x, clean(lows), clean(highs), alpha=0.2, color="tab:blue", label="95% interval", step=None)
        ax.vlines(x, clean(lows), clean(highs), color="tab:blue", alpha=0.35)
    ax.plot(x, clean(values), marker="o", label=ylabel)
    if reference is not None:
        ax.plot(x, clean(reference), linestyle=":", color="tab:gray", label=reference_label)
    if reference is not None or lows is not None:
        ax.legend(loc="best", fontsize=8)
    step = max(1, len(labels) // 8)
    ax.set_xticks(x[::step], [str(s) for s in labels][::step], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _png(fig)


def png_markdown(png: bytes, alt: str = "plot") -> str:
    """Markdown that shows PNG bytes inline (a base64 data URI), for Dagster metadata."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
