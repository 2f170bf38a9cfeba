"""Events that flow from the producer through the hub to subscribers.

They are plain frozen dataclasses: cheap to build on the producer thread, safe to share
between subscriber threads. Values are already validated and encoded (``action`` and
``info`` as JSON text) by the time an event exists, so a subscriber never sees bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: int
    env_id: str
    created: float
    preset: str | None = None
    host_profile: str | None = None
    durability: str = "balanced"
    config: dict[str, Any] = field(default_factory=dict)
    env_spec: dict[str, Any] | None = None  # how to make the environment again (replay)


@dataclass(frozen=True, slots=True)
class RunEnded:
    run_id: int
    ended: float
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EpisodeStarted:
    episode_id: int
    run_id: int
    index: int
    seed: int | None
    started: float
    sub_env: int | None = None  # the vector sub-environment playing it
    continues_episode: int | None = None  # the episode it follows without a seed of its own
    reset_options: str | None = None  # JSON text of the options passed to reset


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """An episode's first frame of a stream other than its render frames (a ``streams``
    row): ``index`` is the stream's index in the episode (``>= 1``), ``shape`` its first
    frame's (``"84x84"``), ``shared_with`` the stream whose frame a step of it reuses
    when both are equal (``0``), or None."""

    episode_id: int
    index: int
    name: str
    dtype: str
    shape: str | None
    shared_with: int | None = None


@dataclass(frozen=True, slots=True)
class StreamFrame:
    """One step's frame of a stream other than render (a ``step_frames`` row): ``frame``
    is an opaque pointer resolved by the sink's hook (the render frame's own pointer
    when the two frames are equal and stored once)."""

    stream: int
    frame: object
    shape: str


@dataclass(frozen=True, slots=True)
class StreamFrames:
    """Written frames of one stream other than render of one episode (``step_frames``
    rows; one chunk's worth): ``frames`` are their locations ``(segment, offset, slot)``,
    ``shapes`` each frame's own shape (``"4x84x84"``)."""

    episode_id: int
    stream: int
    steps: tuple[int, ...]
    frames: tuple[tuple[int, int, int], ...]
    shapes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Step:
    """One row of ``steps``. ``frame`` is an opaque pointer resolved by the sink's hook;
    ``streams``: the step's frames of other streams (their pointers resolved likewise)."""

    episode_id: int
    step: int
    action: str | None  # JSON text from telemetry.spaces.encode_action, None for the reset row
    reward: float
    terminated: bool
    truncated: bool
    info: str  # JSON text, already checked against the size limit
    wall_time: float
    frame: object | None = None
    frame_shape: str | None = None  # "210x160x3"; None when no frame
    streams: tuple[StreamFrame, ...] = ()
    observation: bytes | None = None  # non-image observation entries, typed binary


@dataclass(frozen=True, slots=True)
class StepBatch:
    """Rows of one or more episodes recorded together (``Recorder.record_steps``): one
    event per batch, one tuple entry per row. Values are validated and encoded as in
    ``Step``; ``frames`` are opaque pointers resolved by the sink's hook."""

    episode_ids: tuple[int, ...]
    steps: tuple[int, ...]
    actions: tuple[str | None, ...]
    rewards: tuple[float, ...]
    terminated: tuple[bool, ...]
    truncated: tuple[bool, ...]
    infos: tuple[str, ...]
    wall_time: float
    frames: tuple[object | None, ...]
    frame_shapes: tuple[str | None, ...]
    # Each row's own time, when the rows were recorded one by one (a storage process
    # batches the single steps it receives); None: every row has ``wall_time``.
    wall_times: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True, slots=True)
class EpisodeEnded:
    episode_id: int
    ended: float
    status: str  # complete | interrupted | trimmed
    steps: int
    total_reward: float
    terminated: bool
    truncated: bool
    frames_dropped: int = 0
    # Commit at once (a single episode ending). False while other episodes of the run
    # are still open (vector recording): a commit cuts every open chunk short, so the
    # row then commits with the next batch, at most ``commit_interval`` later.
    commit_now: bool = True


@dataclass(slots=True)
class Barrier:
    """Asks the sink to commit everything before it; ``done`` is set once committed."""

    done: Any  # threading.Event
    error: BaseException | None = None


Event = (
    RunStarted
    | RunEnded
    | EpisodeStarted
    | StreamStarted
    | StreamFrames
    | Step
    | StepBatch
    | EpisodeEnded
    | Barrier
)
