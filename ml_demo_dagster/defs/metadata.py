"""Small helpers that turn tables and records into Dagster metadata a person can read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg


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
    """A metadata value for plain Python values (None shown as 'n/a')."""
    if v is None:
        return dg.MetadataValue.text("n/a")
    if isinstance(v, (dict, list)):
        return dg.MetadataValue.json(v)
    return v
