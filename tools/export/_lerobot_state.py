"""``observation.state`` of a LeRobot export: a step's non-image observation as one
float32 vector, LeRobot's convention for a robot's (or an environment's) state.

A step's observation (``FrameStore.read_observation``: an array, or a Dict space's dict
of them) has image entries (uint8 with 2 or more dimensions: exported as
``observation.images.<stream>`` when they are images) and numeric entries. The numeric
entries, in sorted key order (nested dicts flattened to ``a.b``), each flattened in C
order, make the vector; every value is cast to float32 (integers, bools and float64
values included: float64 beyond float32's precision is rounded). ``names`` lists each
element: ``observation[i]`` for a plain array, ``<key>[i]`` for a dict entry, the bare
name for a scalar.

The layout comes from the first exported step of each episode; every episode must have
the same one (or none: an episode without observations has no ``observation.state``,
and a dataset has one set of features), and every row of an episode its episode's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from framestore import FrameStore
from framestore.errors import InvalidInput

from ._select import Span

__all__ = ["STATE_KEY", "StateLayout", "dataset_state", "state_vector"]

STATE_KEY = "observation.state"
_PLAIN = "observation"  # the name of a plain array observation's elements


@dataclass(frozen=True)
class StateLayout:
    """The numeric entries of the observations (name, shape) in vector order."""

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def size(self) -> int:
        return sum(int(np.prod(shape, dtype=np.int64)) for _name, shape in self.entries)

    @property
    def names(self) -> list[str]:
        out = []
        for name, shape in self.entries:
            if shape == ():
                out.append(name)
            else:
                out += [f"{name}[{i}]" for i in range(int(np.prod(shape, dtype=np.int64)))]
        return out

    def describe(self) -> str:
        return ", ".join(f"{n} {'x'.join(map(str, s)) or 'scalar'}" for n, s in self.entries)


def _numeric(obs: Any, name: str, out: list[tuple[str, np.ndarray]]) -> None:
    if isinstance(obs, Mapping):
        for key in sorted(obs):
            _numeric(obs[key], f"{name}.{key}" if name else str(key), out)
        return
    arr = np.asarray(obs)
    if not (arr.dtype == np.uint8 and arr.ndim >= 2):  # images are image streams
        out.append((name or _PLAIN, arr))


def _entries(obs: Any) -> list[tuple[str, np.ndarray]]:
    out: list[tuple[str, np.ndarray]] = []
    if obs is not None:
        _numeric(obs, "", out)
    return out


def _layout_of(obs: Any) -> StateLayout | None:
    entries = _entries(obs)
    return StateLayout(tuple((n, a.shape) for n, a in entries)) if entries else None


def dataset_state(store: FrameStore, spans: list[Span]) -> StateLayout | None:
    """The state layout of the chosen episodes (from each one's first exported step),
    or ``InvalidInput`` when they differ; None when they have no numeric observations."""
    first: StateLayout | None = None
    for i, span in enumerate(spans):
        obs = next(store.iter_observations(span.id, span.start, span.start + 1), (0, None))[1]
        layout = _layout_of(obs)
        if i == 0:
            first = layout
        elif layout != first:
            raise InvalidInput(
                f"episode {spans[0].id} has {_has(first)} where episode {span.id} has "
                f"{_has(layout)}; a LeRobot dataset has one {STATE_KEY} feature (or none): "
                "export them separately"
            )
    return first


def _has(layout: StateLayout | None) -> str:
    return f"observations ({layout.describe()})" if layout else "no numeric observations"


def state_vector(obs: Any, layout: StateLayout, where: str) -> list[float]:
    """The ``observation.state`` value of one row (float32 values, as Python floats for
    Arrow), or ``InvalidInput`` when the step's observation does not fit ``layout``."""
    entries = _entries(obs)
    if tuple((n, a.shape) for n, a in entries) != layout.entries:
        got = StateLayout(tuple((n, a.shape) for n, a in entries)).describe() or "none"
        raise InvalidInput(
            f"{where}: observations ({got}) where the episode's first step has "
            f"({layout.describe()}); a LeRobot {STATE_KEY} has one layout"
        )
    flat = np.concatenate([a.astype(np.float32).ravel() for _n, a in entries])
    return flat.tolist()
