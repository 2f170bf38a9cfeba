"""Encoding a batch of rows at once (``Recorder.record_steps``): the actions and rewards
of N steps checked in one pass where they form an array, else one by one."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces as gs

from ._fastactions import action_encoder
from .errors import InvalidInput
from .spaces import _not_in, check_reward

__all__ = ["check_rewards", "encode_actions"]


def encode_actions(actions: Any, space: gs.Space | None, n: int) -> list[str | None]:
    """Encode a batch of ``n`` actions (one per row of ``Recorder.record_steps``).

    Args:
        actions: ``None`` (no actions: reset rows), a sequence of ``n`` actions (each may
            be ``None``), or an array whose first axis is the batch.
        space: The action space of ONE environment (not the vector's batched space).
        n: The batch size.

    Returns:
        ``n`` JSON texts (or ``None``), as :func:`encode_action` gives them. A Discrete
        space with an integer array is checked and encoded at once.

    Raises:
        InvalidInput: Wrong length, or an action not in ``space``.
    """
    if actions is None:
        return [None] * n
    if (
        isinstance(space, gs.Discrete)
        and isinstance(actions, np.ndarray)
        and actions.dtype.kind in "iu"
        and actions.shape == (n,)
    ):
        lo = int(space.start)
        bad = np.flatnonzero((actions < lo) | (actions >= lo + int(space.n)))
        if bad.size:
            raise _not_in(actions[bad[0]], space, f"action[{int(bad[0])}]")
        return [str(v) for v in actions.tolist()]
    try:
        count = len(actions)
    except TypeError:
        raise InvalidInput(
            f"actions must be a sequence of {n}, not {type(actions).__name__}"
        ) from None
    if count != n:
        raise InvalidInput(f"got {count} actions for {n} rows")
    encode = action_encoder(space)  # the per-step fast paths, same text and errors
    return [encode(a) for a in actions]


def check_rewards(rewards: Any, n: int) -> list[float]:
    """:func:`check_reward` for a batch of ``n`` rewards (``None``: all zero), checked at
    once when they form a numeric array."""
    if rewards is None:
        return [0.0] * n
    arr = rewards if isinstance(rewards, np.ndarray) else None
    if arr is None and isinstance(rewards, list | tuple):
        try:
            arr = np.asarray(rewards)
        except (TypeError, ValueError):
            arr = None
    if arr is not None and arr.dtype.kind in "biuf" and arr.ndim == 1:
        if arr.shape != (n,):
            raise InvalidInput(f"got {arr.shape[0]} rewards for {n} rows")
        values = arr.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise InvalidInput(f"reward must be finite, got {values[~np.isfinite(values)][0]}")
        return values.tolist()
    try:
        count = len(rewards)
    except TypeError:
        raise InvalidInput(
            f"rewards must be a sequence of {n}, not {type(rewards).__name__}"
        ) from None
    if count != n:
        raise InvalidInput(f"got {count} rewards for {n} rows")
    return [check_reward(r) for r in rewards]
