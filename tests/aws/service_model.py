"""Checks an API request against botocore's service model, as AWS would on receipt.

botocore's ParamValidator checks what the SDK checks before sending (required members,
types, minimum lengths and values). AWS checks more on its side: maximum lengths and
values, and each string's pattern. `problems` adds those, walking the input shape.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import botocore.session
from botocore.validate import ParamValidator

_SESSION = botocore.session.get_session()


@functools.lru_cache(maxsize=512)
def _compiled(pattern: str | None) -> re.Pattern | None:
    """A service-model pattern as a Python regex; None for the few in Java-only syntax
    (Unicode surrogate ranges, \\p{...} classes), which are not checked."""
    if pattern is None:
        return None
    try:
        return re.compile(pattern, flags=re.DOTALL)
    except re.error:
        return None


def _walk(shape, value: Any, path: str, out: list[str]) -> None:
    meta = shape.metadata
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            if isinstance(value, dict) and name in value:
                _walk(member, value[name], f"{path}.{name}", out)
    elif shape.type_name == "list":
        if "max" in meta and len(value) > meta["max"]:
            out.append(f"{path}: {len(value)} items > max {meta['max']}")
        for i, item in enumerate(value):
            _walk(shape.member, item, f"{path}[{i}]", out)
    elif shape.type_name == "map":
        for k, v in value.items():
            _walk(shape.key, k, f"{path}<key>", out)
            _walk(shape.value, v, f"{path}[{k}]", out)
    elif shape.type_name == "string":
        if "max" in meta and len(value) > meta["max"]:
            out.append(f"{path}: length {len(value)} > max {meta['max']}")
        pattern = _compiled(meta.get("pattern"))
        if pattern is not None and not pattern.fullmatch(value):
            out.append(f"{path}: {value!r} does not match {meta['pattern']!r}")
        if shape.enum and value not in shape.enum:
            out.append(f"{path}: {value!r} not one of {shape.enum}")
    elif shape.type_name in ("integer", "long", "float", "double"):
        if "max" in meta and value > meta["max"]:
            out.append(f"{path}: {value} > max {meta['max']}")


def problems(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    """Every way `params` is not a valid `operation` request of `service` (empty: valid)."""
    shape = _SESSION.get_service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    out = [report.generate_report()] if report.has_errors() else []
    _walk(shape, params, operation, out)
    return out
