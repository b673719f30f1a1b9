"""Writing a benchmark's results into BENCHMARKS.md: one `## Title` section per script,
replaced in place when the script runs again (other sections are left as they are)."""

from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def write_section(heading: str, text: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the section that starts with `heading` (e.g. "## Endpoint"), or append it."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{heading}\n\n{text.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: section + "\n", old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + section
    path.write_text(new.rstrip("\n") + "\n")
