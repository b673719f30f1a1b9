"""Small helpers that turn tables and records into Dagster metadata a person can read."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from ml_demo_dagster.core.evaluation import Report
from ml_demo_dagster.core.intervals import Interval


def md_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A markdown table (the UI renders it) of the first rows of a list of records."""
    if not rows:
        return "_(no rows)_"
    columns = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.{digits}g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def preview(table, n: int = 5) -> dg.MetadataValue:
    """The first rows of a pyarrow table, as markdown."""
    return dg.MetadataValue.md(md_table(table.slice(0, n).to_pylist()))


def value(v: Any) -> Any:
    """A metadata value for plain Python values (None is Dagster's null, not a text)."""
    if v is None:
        return dg.MetadataValue.null()
    if isinstance(v, (dict, list)):
        return dg.MetadataValue.json(v)
    return v


def score(v: float | None) -> Any:
    """A rate or score without an interval (a base rate), to the same 4 decimals; None is null."""
    return value(_round(v))


def row_count(n: int) -> dict[str, int]:
    """Dagster's row-count metadata for one partition's table (the UI shows it as 'Row count')."""
    return {"dagster/row_count": int(n), "dagster/partition_row_count": int(n)}


def interval(name: str, iv: Interval) -> dict[str, Any]:
    """A score and its interval as three numbers (`name`, `name_ci_low`, `name_ci_high`): the UI
    plots each over the materializations, so the band is visible over time. None is null."""
    return interval_values(name, iv.value, iv.low, iv.high)


def interval_values(name: str, v: float | None, low: float | None, high: float | None) -> dict[str, Any]:
    return {name: value(_round(v)), f"{name}_ci_low": value(_round(low)), f"{name}_ci_high": value(_round(high))}


def _round(v: float | None, digits: int = 4) -> float | None:
    """Scores are shown to 4 decimals: their intervals are wider than that by far."""
    return None if v is None else round(float(v), digits)


_TYPES = {float: "float", int: "int", str: "string", bool: "bool"}


def table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, type], descriptions: Mapping[str, str] = {}):
    """A Dagster table with a schema (typed columns, nulls kept as null)."""
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(name, _TYPES[kind], description=descriptions.get(name)) for name, kind in columns.items()
        ]
    )
    records = [dg.TableRecord({name: _cell(r.get(name), kind) for name, kind in columns.items()}) for r in rows]
    return dg.MetadataValue.table(records, schema=schema)


def _cell(v: Any, kind: type) -> Any:
    if v is None:
        return None
    if kind is float:
        v = float(v)
        return _round(v) if math.isfinite(v) else None
    return kind(v)


def scores_table(reports: Mapping[str, Report]) -> dg.MetadataValue:
    """Every score of a model per split, with its interval: what a reader should look at first."""
    rows = []
    for split, rep in reports.items():
        for score, iv in rep.scores.items():
            rows.append(
                {
                    "split": split,
                    "score": score,
                    "value": iv.value,
                    "ci_low": iv.low,
                    "ci_high": iv.high,
                    "rows": rep.rows,
                    "blocks": iv.blocks,
                    "block_seconds": round(iv.block_seconds, 1),
                }
            )
    return table(
        rows,
        {"split": str, "score": str, "value": float, "ci_low": float, "ci_high": float, "rows": int, "blocks": int,
         "block_seconds": float},
        {"ci_low": "lower end of the interval (block bootstrap over time); null: too few blocks to claim one",
         "blocks": "independent time blocks the interval rests on (each at least the longest deal)"},
    )  # fmt: skip
