"""What a store hands back: runs, episodes, steps and frame summaries as plain values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EPISODE_STATUSES",
    "DiskUsage",
    "EpisodeInfo",
    "FrameLocation",
    "FrameSummary",
    "RunInfo",
    "StepInfo",
    "StepTrack",
    "StreamInfo",
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
    #: Its frame streams' names, ``render`` first (a store of 0.3.0 or older: render only).
    streams: tuple[str, ...] = ("render",)


@dataclass(frozen=True)
class StreamInfo:
    """One frame stream of an episode (docs/FORMAT.md, "Several streams").

    ``index``: the CHUNK stream index (0: ``render``); ``shape``: its first frame's
    (None for render: its frames' shapes are in the steps); ``shared_with``: the stream
    (0) whose frames its steps point at when equal, when its first frame was (None:
    not then); ``frames``: its steps with a stored frame."""

    name: str
    index: int
    dtype: str
    shape: tuple[int, ...] | None
    shared_with: int | None
    frames: int


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
class StepTrack:
    """Per-step summary of a range of an episode, one entry per committed step row, in
    step order (``FrameStore.step_track``): what a timeline draws, without frames, info
    or frame pointers. ``rewards`` are ``None`` where unknown (rows rebuilt by
    ``recover``); ``actions`` are decoded as in ``read_steps`` (``None`` at the reset)."""

    steps: tuple[int, ...]
    rewards: tuple[float | None, ...]
    actions: tuple[Any, ...]
    terminated: tuple[bool, ...]
    truncated: tuple[bool, ...]
    has_frame: tuple[bool, ...]  # False: the frame was dropped (or lost)
    recovered: tuple[bool, ...]  # rebuilt from a segment by ``recover``

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class FrameSummary:
    """See ``FrameStore.frame_summary``. ``shapes`` are ``"HxWxC"`` strings."""

    steps: int  # rows committed for the episode (its last step + 1)
    stop: int  # the requested stop, clipped to ``steps``
    shapes: tuple[str, ...]
    frames: int  # stored frames in the range


@dataclass(frozen=True)
class DiskUsage:
    """What a store takes on disk, in bytes: the one definition ``record``, ``info`` and
    ``gc`` report (``FrameStore.disk_usage``).

    Segment files split into ``live`` (chunk records of live episodes), ``overhead``
    (each file's header, and its seal once sealed: never reclaimable, a rewritten segment
    has them too) and ``dead`` (everything else: chunks of deleted episodes, obsolete
    files, chunks no step points at). ``gc`` reclaims ``dead`` bytes of the segments it
    rewrites or deletes.
    """

    segments: int
    live: int
    overhead: int
    database: int
    wal: int
    shm: int

    @property
    def dead(self) -> int:
        return max(0, self.segments - self.live - self.overhead)

    @property
    def total(self) -> int:
        """Segments and the database files: what the store directory takes."""
        return self.segments + self.database + self.wal + self.shm


#: Which episodes a reader of several stores takes: all (None), the same ids of every
#: store, or ``{location: ids}`` (a location left out: all of that store).
Episodes = Iterable[int] | Mapping[str, Iterable[int]] | None


def episodes_wanted(episodes: Episodes, location: str) -> set[int] | None:
    """The ids ``episodes`` picks in the store at ``location`` (None: every episode)."""
    if episodes is None:
        return None
    if isinstance(episodes, Mapping):
        ids = episodes.get(location)
        return None if ids is None else {int(i) for i in ids}
    return {int(i) for i in episodes}
