"""``framestore record``: the headless main job. Plays an environment with a seeded
policy and records every step."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from framestore import FrameStore
from framestore.envs import make_env
from framestore.errors import InvalidInput
from framestore.wrappers import RecordFrames

POLICIES = ("random",)

#: ``on_episode`` is called with one of these when an episode's last step is recorded.
EpisodeDone = dict[str, Any]


class RecordingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped ``record``: everything recorded was flushed and the open
    episode marked interrupted. ``summary`` is what was saved (``record``'s return value,
    with ``interrupted: True``). A ``KeyboardInterrupt``, so callers that stop on one
    still do."""

    def __init__(self, summary: dict[str, Any]):
        super().__init__("interrupted")
        self.summary = summary


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM behaves like Ctrl-C: flush what was recorded, mark the episode interrupted."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def record(
    store_path: str,
    env_id: str,
    *,
    episodes: int = 1,
    max_steps: int | None = None,
    seed: int = 0,
    policy: str = "random",
    preset: str | None = None,
    codec: str | None = None,
    durability: str | None = None,
    on_step: Callable[[int], None] | None = None,
    on_episode: Callable[[EpisodeDone], None] | None = None,
) -> dict[str, Any]:
    """Record ``episodes`` episodes of ``env_id`` into the store at ``store_path``.

    Episode i is reset with seed ``seed + i``; the random policy's action space is seeded
    with ``seed``, so a run is reproducible from what is stored. ``max_steps`` truncates
    an episode after that many actions: it then holds ``max_steps + 1`` step rows (row 0
    is the frame after the reset). ``on_episode`` is called with ``{"id", "seed",
    "steps", "total_reward", "status"}`` as each episode ends.

    Returns a summary (``bytes_out``: the run's compressed frames; ``bytes_on_disk``:
    the whole store afterwards, as ``framestore info`` counts it). On KeyboardInterrupt
    the recording is flushed, the open episode marked interrupted, and
    ``RecordingInterrupted`` (a ``KeyboardInterrupt``) raised with the summary.
    """
    if policy not in POLICIES:
        raise InvalidInput(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if episodes < 1:
        raise InvalidInput("--episodes must be at least 1")
    if max_steps is not None and max_steps < 1:
        raise InvalidInput("--max-steps must be at least 1")
    overrides: dict[str, Any] = {}
    if codec is not None:
        overrides["codec"] = codec
    if durability is not None:
        overrides["durability"] = durability
    env = make_env(env_id, max_episode_steps=max_steps)
    t0 = time.perf_counter()
    try:
        with FrameStore.open(store_path, durability=durability or "balanced") as store:
            wrapped = RecordFrames(
                env,
                store,
                env_id=env_id,
                preset=preset,
                overrides=overrides,
                config={"policy": policy, "seed": seed, "max_steps": max_steps},
            )
            rec = wrapped.recorder
            ids: list[int] = []
            interrupted = False
            try:
                _play(wrapped, env, episodes, seed, ids, on_step, on_episode)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                wrapped.close()  # flushes; an open episode is marked interrupted
            summary = _summary(store, rec, env_id, time.perf_counter() - t0)
    finally:
        env.close()
    # measured as `framestore info` measures it: once the store is closed (SQLite has
    # folded its WAL back into the database)
    with FrameStore.open(store_path, readonly=True) as closed:
        summary["bytes_on_disk"] = closed.disk_usage().total
    if interrupted:
        raise RecordingInterrupted({**summary, "interrupted": True})
    return summary


def _play(wrapped, env, episodes: int, seed: int, ids: list[int], on_step, on_episode) -> None:
    """Run the seeded random policy; episode i is reset with seed ``seed + i``."""
    env.action_space.seed(seed)
    for i in range(episodes):
        wrapped.reset(seed=seed + i)
        ids.append(wrapped.recorder.current_episode)
        done, steps, total = False, 1, 0.0
        while not done:
            _, reward, term, trunc, _ = wrapped.step(env.action_space.sample())
            done = term or trunc
            steps, total = steps + 1, total + float(reward)
            if on_step is not None:
                on_step(1)
        if on_episode is not None:
            # "complete" is what the recorder marks an episode that ended by itself
            done_ep = {"id": ids[-1], "seed": seed + i, "steps": steps, "total_reward": total}
            on_episode({**done_ep, "status": "complete"})


def _summary(store: FrameStore, rec, env_id: str, seconds: float) -> dict:
    m = rec.metrics()
    # the run's episodes as saved: an interrupt can land after an episode began and
    # before its id reached ``ids``
    eps = store.episodes(run_id=rec.run_id)
    return {
        "store": str(store.root),
        "run_id": rec.run_id,
        "env_id": env_id,
        "episodes": [
            {
                "id": e.id,
                "seed": e.seed,
                "steps": e.steps,
                "frames": e.frames,
                "status": e.status,
                "total_reward": e.total_reward,
            }
            for e in eps
        ],
        "steps": sum(e.steps for e in eps),
        "frames": sum(e.frames for e in eps),
        "frames_dropped": m.frames.frames_dropped,
        "bytes_in": m.frames.bytes_in,
        "bytes_out": m.frames.bytes_out,
        "compression_ratio": round(m.frames.compression_ratio, 2),
        "seconds": round(seconds, 3),
    }
