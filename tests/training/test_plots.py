"""Plots are PNGs of the expected size and embed as markdown."""

from __future__ import annotations

import base64
import struct

from ml_demo_dagster.core.plots import objective_plot, png_markdown, pr_curve_plot, series_plot
from ml_demo_dagster.core.tuner import TrialResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_MAGIC)
    return struct.unpack(">II", png[16:24])


def trial(number, objective):
    return TrialResult(
        number=number,
        tuned={},
        hyperparameters={},
        state="completed" if objective else "failed",
        objective=objective,
        validation=None,
        seconds=0.1,
        started_at=0,
        finished_at=0.1,
        worker=1,
        seed=0,
    )


def test_plots_are_pngs():
    assert size(objective_plot([trial(0, 0.5), trial(1, None), trial(2, 0.7)])) == (600, 360)
    assert size(objective_plot([0.5, None, 0.6])) == (600, 360)
    assert size(objective_plot([])) == (600, 360)
    assert size(pr_curve_plot({"precision": [0.5, 1.0], "recall": [1.0, 0.0]}, 0.25, base_rate=0.5)) == (600, 360)
    assert size(series_plot(["1700000000001", "1700000000002"], [0.6, None], reference=[0.5, 0.5])) == (600, 360)


def test_png_markdown_embeds_the_bytes():
    png = objective_plot([0.5])
    md = png_markdown(png, alt="objective")
    assert md.startswith("![objective](data:image/png;base64,") and md.endswith(")")
    assert base64.b64decode(md.split(",", 1)[1][:-1]) == png
