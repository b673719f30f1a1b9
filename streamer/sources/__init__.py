"""Market sources behind one interface, chosen by name: `make_source("sim" | "replay" | "ig", ...)`.

`sim` simulates, `replay` plays staging price files, `ig` follows IG's live feed (REST
login + Lightstreamer subscription, DESIGN §2). Each is imported only when asked for: the
live source loads the Lightstreamer client, the others need none of it.
"""

from __future__ import annotations

from ml_demo_dagster.config import ProjectConfig
from streamer.sources.base import MarketSource, SourceError, Tick, paced

SOURCE_NAMES = ("sim", "replay", "ig")


def make_source(name: str, config: ProjectConfig, **options) -> MarketSource:
    """Build the named source. sim: seed, start_ms; replay: files; sim and replay: speed; all: stop."""
    if name == "sim":
        from streamer.sources.sim import SimSource

        _only(name, options, {"seed", "start_ms", "speed", "stop"})
        return SimSource(config, **options)
    if name == "replay":
        from streamer.sources.replay import ReplaySource

        _only(name, options, {"files", "speed", "stop"})
        return ReplaySource(options.pop("files", None) or [], **options)
    if name == "ig":
        from streamer.sources.ig import IGSource

        _only(name, options, {"stop"})  # live: no pacing, no seed, no files
        return IGSource(config, **options)  # logs in: bad credentials fail here, in one line
    raise SourceError(f"unknown source {name!r}; choose one of: {', '.join(SOURCE_NAMES)}")


def _only(name: str, options: dict, allowed: set[str]) -> None:
    unknown = sorted(k for k, v in options.items() if k not in allowed and v is not None)
    if unknown:
        raise SourceError(f"source {name!r} does not take {', '.join(unknown)}")
    for key in [k for k, v in options.items() if v is None]:
        del options[key]


__all__ = ["MarketSource", "SourceError", "Tick", "paced", "make_source", "SOURCE_NAMES"]
