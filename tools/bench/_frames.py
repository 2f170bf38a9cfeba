"""Frame sets: real game frames (and noise) captured once, with their step data."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_FRAMES",
    "FRAME_SHAPES",
    "GAMES",
    "NOISE_SHAPE",
    "FrameSet",
    "capture",
    "check_fits",
    "record_all",
]

GAMES = {
    "assault": "ALE/Assault-v5",
    "carracing": "CarRacing-v3",
    "noise": "ALE/Assault-v5",  # Assault-shaped random pixels, recorded with Assault's preset
}
# Defaults sized so `framestore bench --game all` takes about 2-3 minutes on 2 cores.
DEFAULT_FRAMES = {"assault": 5000, "carracing": 600, "noise": 2000}
NOISE_SHAPE = (210, 160, 3)
#: The frame each game renders (``env.render()``): what a capture of n frames holds.
FRAME_SHAPES = {"assault": (210, 160, 3), "carracing": (400, 600, 3), "noise": NOISE_SHAPE}
#: The share of the RAM available now that one game's frames may take: the pipelines
#: measured on them (and the baselines' buffers) need the rest.
MAX_RAM_SHARE = 0.5


@dataclass
class FrameSet:
    """Frames of one game plus the step data recorded with them.

    ``episodes`` holds ``(start, stop)`` index ranges into the per-step lists; row
    ``start`` of each episode is the reset (``action`` None).
    """

    game: str
    env_id: str
    frames: list[np.ndarray]
    actions: list[Any]
    rewards: list[float]
    terminated: list[bool]
    truncated: list[bool]
    infos: list[dict[str, Any]]
    episodes: list[tuple[int, int]]
    action_space: Any = None
    render_fps: float = 60.0

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def frame_bytes(self) -> int:
        return self.frames[0].nbytes if self.frames else 0

    def head(self, n: int) -> FrameSet:
        """The first ``n`` steps (episodes cut to fit)."""
        eps = [(a, min(b, n)) for a, b in self.episodes if a < n]
        return FrameSet(
            self.game,
            self.env_id,
            self.frames[:n],
            self.actions[:n],
            self.rewards[:n],
            self.terminated[:n],
            self.truncated[:n],
            self.infos[:n],
            eps,
            self.action_space,
            self.render_fps,
        )


def capture(game: str, n: int, *, seed: int = 0) -> FrameSet:
    """``n`` frames of ``game`` (``assault``, ``carracing`` or ``noise``), captured once.

    Real games are played with the random policy of ``framestore record``
    (``framestore.gym.play``): episode k is reset with ``seed + k`` and its policy with it,
    and ``env.render()`` is taken after the reset and after every step. ``noise`` is
    uniformly random pixels (the worst case for every codec) at Atari size.
    """
    if game not in GAMES:
        raise ValueError(f"unknown game {game!r}; choose one of {', '.join(GAMES)}")
    if n < 1:
        raise ValueError("frame count must be at least 1")
    check_fits(game, n)
    if game == "noise":
        return _noise(n, seed)
    from framestore.envs import make_env
    from framestore.gym.play import load_policy, play_episode

    env = make_env(GAMES[game])
    try:
        fs = FrameSet(game, GAMES[game], [], [], [], [], [], [], [], env.action_space)
        fs.render_fps = float(env.metadata.get("render_fps") or 60)
        policy = load_policy("random").build(env.action_space)
        episode = 0
        while len(fs.frames) < n:
            start = len(fs.frames)
            for step in play_episode(env, policy, seed + episode):
                reward, term, trunc = float(step.reward), step.terminated, step.truncated
                _append(fs, env.render(), step.action, reward, term, trunc, step.info)
                if len(fs.frames) >= n:
                    break
            episode += 1
            fs.episodes.append((start, len(fs.frames)))
        return fs
    finally:
        env.close()


def check_fits(game: str, n: int) -> None:
    """``InvalidInput`` when ``n`` frames of ``game`` would take more than
    ``MAX_RAM_SHARE`` of the RAM available now: a capture holds every frame, so an
    impossible ``--frames`` is refused before the first allocation, not by a
    ``MemoryError`` (or the OOM killer) part-way."""
    import psutil

    from framestore.errors import InvalidInput

    from ..text import human_bytes

    need = n * int(np.prod(FRAME_SHAPES[game]))
    budget = int(psutil.virtual_memory().available * MAX_RAM_SHARE)
    if need > budget:
        most = max(1, budget // int(np.prod(FRAME_SHAPES[game])))
        raise InvalidInput(
            f"bench: {n} {game} frames would hold {human_bytes(need)} in memory, more than "
            f"half of the {human_bytes(budget * 2)} available; use --frames {most} or fewer"
        )


def record_all(
    rec: Any, fs: FrameSet, costs: np.ndarray, *, waits: Callable[[], int] | None = None
) -> np.ndarray | None:
    """Record every episode of ``fs`` through ``rec.record_step``; ``costs[i]`` gets the
    nanoseconds the i-th call took (the producer's cost). The frames are handed over
    (``owned=True``, as ``RecordFrames`` hands over fresh ``render()`` arrays): the
    capture's frames are never changed.

    ``waits``: a counter of calls that waited for room (``Recorder.queue_waits``), read
    after each call outside its timing; then returns which calls waited (a bool array)."""
    clock = time.perf_counter_ns
    frames, actions, rewards = fs.frames, fs.actions, fs.rewards
    terms, truncs, infos = fs.terminated, fs.truncated, fs.infos
    waited = None if waits is None else np.zeros(len(costs), dtype=bool)
    before = 0 if waits is None else waits()
    for e, (a, b) in enumerate(fs.episodes):
        rec.begin_episode(seed=e)
        for i in range(a, b):
            s = clock()
            rec.record_step(
                frames[i], actions[i], rewards[i], terms[i], truncs[i], infos[i], owned=True
            )
            costs[i] = clock() - s
            if waited is not None:
                now = waits()
                waited[i] = now != before
                before = now
        rec.end_episode()
    return waited


def record_store(fs: FrameSet, path: Any) -> None:
    """A new store at ``path`` holding every episode of ``fs`` (what the read benches
    read), recorded through ``record_all``."""
    from framestore import FrameStore

    with FrameStore.open(path) as store:
        rec = store.recorder(fs.env_id, action_space=fs.action_space)
        try:
            record_all(rec, fs, np.zeros(len(fs.frames), dtype=np.int64))
        finally:
            rec.close()


def _append(fs: FrameSet, frame, action, reward, term, trunc, info) -> None:
    fs.frames.append(np.ascontiguousarray(frame))
    fs.actions.append(action)
    fs.rewards.append(reward)
    fs.terminated.append(bool(term))
    fs.truncated.append(bool(trunc))
    fs.infos.append({k: _plain(v) for k, v in info.items()})


def _plain(v: Any) -> Any:
    """numpy scalars (ALE's reset info holds a tuple of uint32 seeds) as Python values."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v


def _noise(n: int, seed: int) -> FrameSet:
    import gymnasium as gym

    rng = np.random.default_rng(seed)
    block = rng.integers(0, 256, size=(n, *NOISE_SHAPE), dtype=np.uint8)
    actions = [None] + [int(a) for a in rng.integers(0, 7, size=n - 1)]
    return FrameSet(
        "noise",
        GAMES["noise"],
        list(block),
        actions,
        [0.0] * n,
        [False] * n,
        [False] * n,
        [{"lives": 4, "episode_frame_number": 4 * i, "frame_number": 4 * i} for i in range(n)],
        [(0, n)],
        gym.spaces.Discrete(7),
    )
