"""The frame writer's arguments (checked before anything is created) and its metrics
snapshot: what ``FrameStorageService`` takes and hands back."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInput
from ..settings._schema import DURABILITIES, POLICIES  # named with the other settings

__all__ = ["DURABILITIES", "POLICIES", "ServiceMetrics", "check_args"]


@dataclass(frozen=True)
class ServiceMetrics:
    """A snapshot of the writer's state, cheap to take from any thread."""

    queue_frames: int
    queue_bytes: int
    bound_frames: int
    bound_bytes: int
    high_water_frames: int
    high_water_bytes: int
    frames_in: int
    frames_written: int
    frames_dropped: int
    bytes_in: int
    bytes_out: int
    chunks_written: int
    segments_sealed: int
    current_segment: int | None
    blocked_seconds: float
    last_flush_ms: float
    max_flush_ms: float
    error: str | None
    #: Times the writer was woken to take chunks or records (once per chunk handed
    #: off, not per frame).
    writer_wakeups: int = 0
    #: Calls that waited for room in the queue (``block``; ``blocked_seconds`` is their
    #: total wait).
    blocked_waits: int = 0

    @property
    def compression_ratio(self) -> float:
        return self.bytes_in / self.bytes_out if self.bytes_out else 0.0


def check_args(policy: str, durability: str, **positive: int) -> None:
    """Refuse bad arguments before anything is created."""
    if policy not in POLICIES:
        raise InvalidInput(f"unknown queue policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if durability not in DURABILITIES:
        raise InvalidInput(
            f"unknown durability profile {durability!r}; choose one of {', '.join(DURABILITIES)}"
        )
    for name, value in positive.items():
        if not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    if positive["chunk_frames"] > 65535:
        raise InvalidInput("chunk_frames must be at most 65535")
