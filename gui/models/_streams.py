"""What the replay viewer shows of a frame stream (no Qt): image frames as they are,
frame stacks tiled side by side, and a sentence for arrays that are not pictures."""

from __future__ import annotations

import numpy as np

__all__ = ["display_frame"]


def display_frame(frame: np.ndarray) -> tuple[np.ndarray | None, str]:
    """``(image to show, or None; why not)``. A uint8 ``HxW`` or ``HxWxC`` (C 1, 3, 4)
    frame is shown as it is (no copy); a uint8 stack of them (``(4, 84, 84)``,
    ``(4, 84, 84, 3)``) as its frames side by side; anything else (a float observation
    vector) is described, not drawn."""
    shape = "x".join(map(str, frame.shape))
    if frame.dtype != np.uint8 or frame.ndim < 2:
        return None, f"{frame.dtype} array of shape {shape}: not an image"
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4)):
        return frame, ""
    image_dims = 3 if frame.shape[-1] in (1, 3, 4) else 2
    tiles = frame.reshape(-1, *frame.shape[-image_dims:])
    if len(tiles) > 64:
        return None, f"uint8 array of shape {shape}: too many frames to tile"
    return np.concatenate(list(tiles), axis=1), ""
