"""JSON for values that come from numpy, dataclasses and sets: one encoder for the
run config and stats the sink stores and for every ``--json`` output."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

__all__ = ["json_default", "dumps"]


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` hook: numpy scalars and arrays as Python values,
    dataclasses as dicts, sets and tuples as lists, anything else as its ``str``.

    numpy is not imported for this: a value can be a numpy one only once numpy is loaded
    (``framestore ls --json`` loads none)."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.generic):
        return value.item()
    if np is not None and isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def dumps(value: Any, *, compact: bool = True) -> str:
    """``value`` as JSON text (compact, or indented for people)."""
    if compact:
        return json.dumps(value, separators=(",", ":"), default=json_default)
    return json.dumps(value, indent=2, default=json_default)
