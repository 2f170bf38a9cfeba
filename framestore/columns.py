"""Steps as flat table rows: the one column layout of the tables framestore hands out
(Ray Data's ``framestore.ray.read_store``, ``framestore export --format parquet``).

| column | type | what |
|---|---|---|
| ``store`` | string | the store's path or URL |
| ``run_id``, ``episode_id``, ``step`` | int64 | ids; step 0 is the reset |
| ``env_id`` | string | the run's environment |
| ``action`` | see below | the action that led to this step (null on the reset row) |
| ``reward`` | float64 | as recorded |
| ``terminated``, ``truncated`` | bool | |
| ``info`` | string | the step's ``info`` as JSON text |
| ``wall_time`` | float64 | Unix time the step was recorded |

``action`` takes one type for a whole table, from the action spaces of the runs in it
(``action_kind``): int64 when every run's space is ``Discrete``; a list of float64 (the
action flattened) when every one is ``Box``, ``MultiDiscrete`` or ``MultiBinary``; JSON
text otherwise (``Tuple``, ``Dict``, mixed spaces).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from telemetry.jsonsafe import dumps

from .types import StepInfo

__all__ = [
    "ACTION_INT",
    "ACTION_JSON",
    "ACTION_LIST",
    "STEP_COLUMNS",
    "action_cell",
    "action_kind",
    "arrow_fields",
    "step_row",
]

STEP_COLUMNS = (
    "store",
    "run_id",
    "episode_id",
    "step",
    "env_id",
    "action",
    "reward",
    "terminated",
    "truncated",
    "info",
    "wall_time",
)
ACTION_INT, ACTION_LIST, ACTION_JSON = "int", "list", "json"
_ARRAY_SPACES = ("Box", "MultiDiscrete", "MultiBinary")


def action_kind(specs: Iterable[Mapping[str, Any] | None]) -> str:
    """The ``action`` column's kind for runs with these action space specs (``None``:
    a run recorded without a space)."""
    kinds = set()
    for spec in specs:
        kind = (spec or {}).get("type")
        if kind == "Discrete":
            kinds.add(ACTION_INT)
        elif kind in _ARRAY_SPACES:
            kinds.add(ACTION_LIST)
        else:
            kinds.add(ACTION_JSON)
    return kinds.pop() if len(kinds) == 1 else ACTION_JSON


def action_cell(action: Any, kind: str) -> Any:
    """One action as a value of the ``action`` column of ``kind``."""
    if action is None:
        return None
    if kind == ACTION_INT:
        return int(action)
    if kind == ACTION_LIST:
        return np.asarray(action, dtype=np.float64).ravel().tolist()
    return dumps(action)


def step_row(step: StepInfo, *, store: str, run_id: int, env_id: str, kind: str) -> dict:
    """A step as a row of ``STEP_COLUMNS``."""
    return {
        "store": store,
        "run_id": run_id,
        "episode_id": step.episode_id,
        "step": step.step,
        "env_id": env_id,
        "action": action_cell(step.action, kind),
        "reward": step.reward,
        "terminated": step.terminated,
        "truncated": step.truncated,
        "info": dumps(step.info),
        "wall_time": step.wall_time,
    }


def arrow_fields(pa: Any, kind: str) -> list[Any]:
    """The pyarrow fields of ``STEP_COLUMNS`` (``pa`` is the pyarrow module)."""
    action = {ACTION_INT: pa.int64(), ACTION_LIST: pa.list_(pa.float64())}.get(kind, pa.string())
    types = {
        "store": pa.string(),
        "run_id": pa.int64(),
        "episode_id": pa.int64(),
        "step": pa.int64(),
        "env_id": pa.string(),
        "action": action,
        "reward": pa.float64(),
        "terminated": pa.bool_(),
        "truncated": pa.bool_(),
        "info": pa.string(),
        "wall_time": pa.float64(),
    }
    return [pa.field(name, types[name]) for name in STEP_COLUMNS]
