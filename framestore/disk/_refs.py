"""Frame pointers handed to the producer: ``FrameRef`` and the checks of frame keys."""

from __future__ import annotations

from .._format import MAX_FRAME_KEY, MAX_STREAM_KEY
from ..errors import InvalidInput

__all__ = ["FrameRef", "check_key", "frame_nbytes"]


class FrameRef:
    """A pointer to one stored frame.

    ``put`` returns it at once; the writer fills in ``location`` ``(segment, offset,
    slot)`` when the frame's chunk is appended. A located ref is persistent: it stays
    valid after ``close()`` and reopening the store (``FrameRef.at(*location)``).
    ``dropped`` is True when the ``drop`` policy discarded the frame. ``stream``: the
    frame's stream index in its episode (0: ``render``; docs/FORMAT.md).
    """

    __slots__ = ("seq", "key", "shape", "dropped", "location", "stream")

    def __init__(
        self,
        seq: int | None,
        key: tuple[int, int],
        shape: tuple[int, ...] | None,
        dropped: bool = False,
        location: tuple[int, int, int] | None = None,
        stream: int = 0,
    ):
        self.seq = seq
        self.key = key
        self.shape = shape
        self.dropped = dropped
        self.location = location
        self.stream = stream

    @classmethod
    def at(cls, segment: int, offset: int, slot: int) -> FrameRef:
        return cls(None, (0, 0), None, location=(int(segment), int(offset), int(slot)))

    @property
    def written(self) -> bool:
        return self.location is not None

    def __repr__(self) -> str:
        state = "dropped" if self.dropped else (self.location or "pending")
        return f"FrameRef(key={self.key}, {state})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrameRef):
            return NotImplemented
        if self.location is not None or other.location is not None:
            return self.location == other.location
        return self is other

    def __hash__(self) -> int:
        return hash(self.location) if self.location is not None else id(self)


def frame_nbytes(frame: object) -> int:
    return int(getattr(frame, "nbytes", 0) or 0)


def check_key(key: object) -> tuple[int, int]:
    if type(key) is tuple and len(key) == 2:  # the common case: two ints in range
        a, b = key
        if (
            type(a) is int
            and type(b) is int
            and 0 <= a <= MAX_STREAM_KEY
            and 0 <= b <= MAX_FRAME_KEY
        ):
            return key  # type: ignore[return-value]
    try:
        a, b = key  # type: ignore[misc]
        a, b = int(a), int(b)
    except (TypeError, ValueError):
        raise InvalidInput(f"frame key must be a pair of integers, got {key!r}") from None
    if not (0 <= a <= MAX_STREAM_KEY and 0 <= b <= MAX_FRAME_KEY):
        raise InvalidInput(f"frame key {key!r} out of range (0..2**64-1, 0..2**32-1)")
    return a, b
