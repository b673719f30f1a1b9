"""One description of the machine a benchmark ran on, for every script's report."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _first_field(path: str, key: str) -> str | None:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), None)


def describe_machine() -> str:
    """Cores, CPU model, memory, OS and Python, e.g. `2 cores (Intel Xeon), 24 GiB RAM, Linux 6.1; Python 3.11.7`."""
    cpu = _first_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()
    mem_kb = _first_field("/proc/meminfo", "MemTotal")
    memory = f", {int(mem_kb.split()[0]) / 2**20:.0f} GiB RAM" if mem_kb else ""
    return (
        f"{os.cpu_count()} cores ({cpu}){memory}, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}"
    )
