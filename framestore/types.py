"""What a store hands back: runs, episodes, steps and frame summaries as plain values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "EPISODE_STATUSES",
    "EpisodeInfo",
    "FrameLocation",
    "FrameSummary",
    "RunInfo",
    "StepInfo",
]

#: ``(segment, offset, slot)``: the segment id, the file offset of the CHUNK record and
#: the frame's index in that chunk (docs/FORMAT.md, "frame pointer").
FrameLocation = tuple[int, int, int]

EPISODE_STATUSES = ("recording", "complete", "interrupted", "trimmed", "deleted")


@dataclass(frozen=True)
class RunInfo:
    id: int
    env_id: str
    created: float | None
    ended: float | None
    preset: str | None
    host_profile: str | None
    durability: str | None
    config: dict[str, Any]
    stats: dict[str, Any]
    env_spec: dict[str, Any] | None = None  # how to make the environment again (replay)


@dataclass(frozen=True)
class EpisodeInfo:
    id: int
    run_id: int
    env_id: str
    index: int
    seed: int | None
    started: float | None
    ended: float | None
    steps: int  # rows in the steps table (T+1 for T actions)
    total_reward: float
    terminated: bool
    truncated: bool
    status: str
    frames_dropped: int
    frames: int  # rows with a stored frame
    sub_env: int | None = None  # the vector sub-environment that played it
    continues_episode: int | None = None  # the episode it follows without a seed of its own
    reset_options: dict[str, Any] | None = None  # ``options`` passed to ``reset``
    stream_key: int | None = None  # its chunks' stream key (the id unless merged)


@dataclass(frozen=True)
class StepInfo:
    episode_id: int
    step: int
    action: Any
    reward: float | None
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    wall_time: float | None
    frame: FrameLocation | None  # None when dropped
    frame_shape: tuple[int, ...] | None


@dataclass(frozen=True)
class FrameSummary:
    """See ``FrameStore.frame_summary``. ``shapes`` are ``"HxWxC"`` strings."""

    steps: int  # rows committed for the episode (its last step + 1)
    stop: int  # the requested stop, clipped to ``steps``
    shapes: tuple[str, ...]
    frames: int  # stored frames in the range
