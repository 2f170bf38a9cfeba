"""A step's values for the replay viewer's side panel: readable text to look at, exact
values to hover over and to copy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from framestore import StepInfo
from telemetry.jsonsafe import dumps
from tools.text import format_number

__all__ = ["StepField", "step_fields", "step_json", "step_panel_text"]


@dataclass(frozen=True)
class StepField:
    """One line of the panel: ``name``, the value as shown, and the exact value."""

    name: str
    shown: str
    exact: str


def _readable(value: Any, limit: int) -> str:
    """JSON-like text with floats rounded for reading (inside lists and dicts too), cut
    at ``limit`` characters."""
    text = _text(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(value: Any) -> str:
    if isinstance(value, np.generic | np.ndarray):
        value = value.tolist()
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, int | str):
        return json.dumps(value)
    return json.dumps(str(value))


def _exact(value: Any) -> str:
    return dumps(value)


def step_fields(info: StepInfo, *, limit: int = 400) -> list[StepField]:
    """The panel's lines for one step: step, action, reward, flags, info."""
    reward = "unknown" if info.reward is None else format_number(info.reward)
    return [
        StepField("step", str(info.step), str(info.step)),
        StepField(
            "action",
            "-" if info.action is None else _readable(info.action, limit),
            _exact(info.action),
        ),
        StepField("reward", reward, repr(info.reward)),
        StepField("terminated", str(info.terminated), str(info.terminated)),
        StepField("truncated", str(info.truncated), str(info.truncated)),
        StepField("info", _readable(info.info, limit), _exact(info.info)),
    ]


def step_panel_text(info: StepInfo, *, limit: int = 400) -> str:
    """The panel's text: one ``name value`` line per field, and the info dict one key
    per line below its name (so each value reads whole in a narrow panel, wrapped)."""
    lines = [f"{f.name:<11} {f.shown}" for f in step_fields(info, limit=limit)[:-1]]
    if isinstance(info.info, dict) and info.info:
        lines.append("info")
        lines += [f"  {k}: {_readable(v, limit)}" for k, v in info.info.items()]
    else:
        lines.append(f"{'info':<11} {_readable(info.info, limit)}")
    return "\n".join(lines)


def step_json(info: StepInfo) -> str:
    """The step's values, exact, as one JSON object (what "Copy" puts on the clipboard)."""
    return dumps(
        {
            "episode": info.episode_id,
            "step": info.step,
            "action": info.action,
            "reward": info.reward,
            "terminated": info.terminated,
            "truncated": info.truncated,
            "info": info.info,
        }
    )
