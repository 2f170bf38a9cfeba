"""The producer's side of named frame streams (issue 20): a step's ``frames={name:
frame}`` checked before anything is queued, each frame in its chunk layout, and which
ones equal the step's render frame (stored once; docs/FORMAT.md, "Several streams")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .._format import RENDER_STREAM
from .._format.streams import MAX_STREAMS, check_stream_name, stored_shape
from ..catalog import format_shape
from ..disk.codecs import check_frame
from ..errors import InvalidFrame, InvalidInput

__all__ = ["StreamInput", "split_frames"]


@dataclass(frozen=True, slots=True)
class StreamInput:
    """One step's frame of a stream other than render, checked.

    ``frame`` is in its chunk layout (``stored_shape``: a view when it can be);
    ``shape`` the frame's own shape as its pointer row stores it; ``shared``: it equals
    the step's render frame, whose stored copy it then points at."""

    name: str
    frame: np.ndarray
    shape: str
    shared: bool
    dtype: str = "uint8"  # another dtype: ``frame`` holds the array's bytes


def _stream_frame(name: str, frame: object, render: np.ndarray | None) -> StreamInput:
    if not isinstance(frame, np.ndarray):
        raise InvalidFrame(
            f"stream {name!r}: frame must be a numpy.ndarray, got {type(frame).__name__}"
        )
    if frame.ndim < 2:
        raise InvalidFrame(
            f"stream {name!r}: frame must have 2 or more dimensions, got shape {frame.shape}"
        )
    try:
        stored = frame.reshape(stored_shape(frame.shape))
        check_frame(stored)
    except InvalidFrame as e:
        raise InvalidFrame(f"stream {name!r}: {e}") from None
    shared = (
        render is not None
        and render.shape == frame.shape
        and render.dtype == frame.dtype
        and (render is frame or np.array_equal(render, frame))
    )
    return StreamInput(name, stored, format_shape(frame.shape), shared)


def split_frames(
    frame: object, frames: object
) -> tuple[np.ndarray | None, tuple[StreamInput, ...]]:
    """``record_step(frames=...)``: the render frame (``frames["render"]``) and the
    other streams' frames, checked (names, types, shapes); entries that are ``None``
    are left out. Raises ``InvalidInput`` (``InvalidFrame``) before anything is queued."""
    if not isinstance(frames, Mapping):
        raise InvalidInput(
            f"frames must be a dict of stream name to frame, got {type(frames).__name__}"
        )
    if frame is not None:
        raise InvalidInput("give the frame or frames={...}, not both (the frame is 'render')")
    if len(frames) > MAX_STREAMS:
        raise InvalidInput(f"{len(frames)} streams in one step; at most {MAX_STREAMS}")
    for name in frames:
        check_stream_name(name)
    render = frames.get(RENDER_STREAM)
    if render is not None:
        check_frame(render)
    others = tuple(
        _stream_frame(name, f, render)
        for name, f in frames.items()
        if name != RENDER_STREAM and f is not None
    )
    return render, others
