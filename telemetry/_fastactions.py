"""``encode_action`` bound to a space, with fast paths for the common steps (one call
per recorded step: the producer's per-step Python)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium.spaces as gs
import numpy as np

from .spaces import _dumps, encode_action

__all__ = ["action_encoder"]


def action_encoder(space: gs.Space | None) -> Callable[[Any], str | None]:
    """``encode_action`` bound to ``space``, with fast paths for the common steps: an
    int in a ``Discrete`` space, and an array of the space's dtype and shape in a
    ``Box`` with finite bounds (a few float32 values). Same text, same errors; anything
    else takes ``encode_action``.
    """
    if isinstance(space, gs.Discrete):
        lo, hi = int(space.start), int(space.start) + int(space.n)

        def discrete(action: Any) -> str | None:
            kind = type(action)
            if kind is int or (kind is not bool and isinstance(action, np.integer)):
                value = int(action)
                if lo <= value < hi:
                    return str(value)  # the JSON of an int
            return encode_action(action, space)

        return discrete
    if (
        isinstance(space, gs.Box)
        and bool(np.all(np.isfinite(space.low)))
        and bool(np.all(np.isfinite(space.high)))
    ):
        low, high, dtype, shape = space.low, space.high, space.dtype, space.shape

        def box(action: Any) -> str | None:
            # NaN and infinities fail the (finite) bounds: they take the careful path.
            if (
                type(action) is np.ndarray
                and action.dtype == dtype
                and action.shape == shape
                and (action >= low).all()
                and (action <= high).all()
            ):
                return _dumps(action.tolist())
            return encode_action(action, space)

        return box
    return lambda action: encode_action(action, space)
