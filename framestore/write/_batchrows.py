"""The producer's bookkeeping for ``Recorder``: one open episode's counters, and a batch
of rows for ``record_steps`` checked and encoded in one pass before anything is queued."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from telemetry import StepBatch, check_rewards, encode_actions, encode_info

from .._format.steps import StepMeta
from ..catalog import format_shape
from ..disk._refs import FrameRef
from ..disk.codecs import check_frame
from ..errors import InvalidFrame, InvalidInput
from ._observations import split_observation, with_observation
from ._streams import StreamInput, split_frames

__all__ = ["BatchRows", "EpisodeState", "check_episode_args"]


@dataclass
class EpisodeState:
    """What the recorder counts for an open episode."""

    step: int = 0  # the next step index
    total_reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    dropped: int = 0
    start: Any = None  # its EpisodeStarted, until its first rows are accepted (deferred)
    streams: dict[str, int] = field(default_factory=dict)  # name -> index (render: 0)
    stream_dtypes: dict[str, str] = field(default_factory=dict)  # name -> its dtype

    def advance(self, reward: float, terminated: bool, truncated: bool, rows: int) -> None:
        self.step += rows
        self.total_reward += reward
        self.terminated, self.truncated = terminated, truncated


def _optional_int(value: object, name: str, minimum: int | None = None) -> None:
    if value is None:
        return
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise InvalidInput(f"{name} must be an integer or None, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidInput(f"{name} must be at least {minimum}, got {value!r}")


def check_episode_args(seed: object, sub_env: object, continues: object) -> None:
    """Refuse a seed, sub-environment index or continued episode that is not an int."""
    _optional_int(seed, "seed")
    _optional_int(sub_env, "sub_env", 0)
    _optional_int(continues, "continues", 1)


def _frames(frames: object, n: int) -> list[np.ndarray | None]:
    """N frames from an ``(N, H, W[, C])`` array or a sequence (each frame is checked by
    ``put_many``, before anything is queued)."""
    if frames is None:
        return [None] * n
    if isinstance(frames, np.ndarray):
        if frames.ndim not in (3, 4) or frames.shape[0] != n:
            raise InvalidFrame(
                f"frames must be an (N, H, W[, C]) array with N={n}, got {tuple(frames.shape)}"
            )
        if n:
            check_frame(frames[0])  # dtype and shape are the block's
        return list(frames)
    try:
        out = list(frames)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidFrame(
            f"frames must be an array or a sequence, not {type(frames).__name__}"
        ) from None
    if len(out) != n:
        raise InvalidInput(f"got {len(out)} frames for {n} rows")
    return out


def _flags(values: object, n: int, name: str) -> list[bool]:
    if values is None:
        return [False] * n
    try:
        out = [bool(v) for v in values]  # type: ignore[union-attr]
    except TypeError:
        raise InvalidInput(f"{name} must be a sequence of {n} flags") from None
    if len(out) != n:
        raise InvalidInput(f"got {len(out)} {name} flags for {n} rows")
    return out


def _infos(infos: object, n: int) -> list[str]:
    if infos is None:
        return ["{}"] * n
    out = [encode_info(i) for i in infos]  # type: ignore[union-attr]
    if len(out) != n:
        raise InvalidInput(f"got {len(out)} infos for {n} rows")
    return out


def _streams(
    frames: object, observations: object, n: int
) -> tuple[object, list[tuple[StreamInput, ...]], list[bytes | None]]:
    """Each row's named streams (a ``{stream: frame}`` entry of ``frames``, as
    ``record_step(frames=...)`` takes it) and observation (``observations``: N of them,
    ``None`` entries allowed): the render frames left for ``_frames``, each row's other
    streams and its typed observation binary. Checked before anything is queued."""
    extras: list[tuple[StreamInput, ...]] = [()] * n
    inlines: list[bytes | None] = [None] * n
    named = (
        frames is not None
        and not isinstance(frames, np.ndarray)
        # (an array row is no Mapping: the abc check only for the others)
        and any([type(f) is not np.ndarray and isinstance(f, Mapping) for f in frames])  # type: ignore[union-attr]
    )
    if named:
        renders: list[object] = list(frames)  # type: ignore[call-overload]
        if len(renders) != n:
            raise InvalidInput(f"got {len(renders)} frames for {n} rows")
        for i, f in enumerate(renders):
            if isinstance(f, Mapping):
                renders[i], extras[i] = split_frames(None, f)
        frames = renders
    if observations is not None:
        if isinstance(observations, Mapping | np.ndarray):
            raise InvalidInput(
                "observations must be a sequence of one observation per row "
                f"(gymnasium.vector.utils.iterate splits a batch), got {type(observations).__name__}"
            )
        try:
            obs = list(observations)  # type: ignore[call-overload]
        except TypeError:
            raise InvalidInput(
                f"observations must be a sequence, not {type(observations).__name__}"
            ) from None
        if len(obs) != n:
            raise InvalidInput(f"got {len(obs)} observations for {n} rows")
        render_of = (
            list(frames) if frames is not None else [None] * n  # type: ignore[call-overload]
        )
        for i, o in enumerate(obs):
            if o is not None:
                parts = split_observation(o)
                render = render_of[i] if isinstance(render_of[i], np.ndarray) else None
                extras[i] = with_observation(extras[i], parts, render)
                inlines[i] = parts.inline
    return frames, extras, inlines


@dataclass(frozen=True)
class BatchRows:
    """N rows, validated and encoded (nothing queued yet)."""

    episode_ids: list[int]
    frames: list[np.ndarray | None]
    actions: list[str | None]
    rewards: list[float]
    terminated: list[bool]
    truncated: list[bool]
    infos: list[str]
    # each row's frames of other streams than render, and its typed observation binary
    extras: list[tuple[StreamInput, ...]] = field(default_factory=list)
    inlines: list[bytes | None] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        episode_ids: Sequence[int],
        frames: object,
        actions: object,
        rewards: object,
        terminated: object,
        truncated: object,
        infos: object,
        space: Any,
        observations: object = None,
    ) -> BatchRows:
        """Check and encode everything; raises ``InvalidInput`` before anything is kept."""
        try:
            ids = [int(e) for e in episode_ids]
        except (TypeError, ValueError):
            raise InvalidInput("episode_ids must be a sequence of episode ids") from None
        n = len(ids)
        frames, extras, inlines = _streams(frames, observations, n)
        return cls(
            episode_ids=ids,
            frames=_frames(frames, n),
            actions=encode_actions(actions, space, n),
            rewards=check_rewards(rewards, n),
            terminated=_flags(terminated, n, "terminated"),
            truncated=_flags(truncated, n, "truncated"),
            infos=_infos(infos, n),
            extras=extras,
            inlines=inlines,
        )

    def step_numbers(self, states: list[EpisodeState]) -> list[int]:
        """Each row's step index (an episode may have several rows in one batch)."""
        taken: dict[int, int] = {}
        steps = []
        for eid, st in zip(self.episode_ids, states, strict=True):
            k = taken.get(eid, st.step)
            steps.append(k)
            taken[eid] = k + 1
        return steps

    def metas(self, steps: list[int], wall_time: float) -> list[StepMeta]:
        """Each row's metadata for the segments (the values its row will hold)."""
        return [
            StepMeta(e, st, a, r, te, tr, i, wall_time, None if f is None else format_shape(f.shape))
            for e, st, a, r, te, tr, i, f in zip(
                self.episode_ids, steps, self.actions, self.rewards, self.terminated,
                self.truncated, self.infos, self.frames, strict=True,
            )
        ]  # fmt: skip

    def event(self, steps: list[int], refs: list[FrameRef | None], wall_time: float) -> StepBatch:
        """The one hub event of the batch."""
        names = [
            None if ref is None or ref.shape is None else format_shape(ref.shape) for ref in refs
        ]
        return StepBatch(
            episode_ids=tuple(self.episode_ids),
            steps=tuple(steps),
            actions=tuple(self.actions),
            rewards=tuple(self.rewards),
            terminated=tuple(self.terminated),
            truncated=tuple(self.truncated),
            infos=tuple(self.infos),
            wall_time=wall_time,
            frames=tuple(refs),
            frame_shapes=tuple(names),
        )
