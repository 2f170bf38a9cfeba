"""``framestore record``: the headless main job. Plays an environment with a seeded
policy and records every step."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from framestore import FrameStore, RecordVectorFrames
from framestore.envs import VECTOR_MODES, make_env, make_vec_env
from framestore.errors import InvalidInput
from framestore.wrappers import RecordFrames

POLICIES = ("random",)


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
    envs: int = 1,
    vector_mode: str = "sync",
    writer: str | None = None,
) -> dict[str, Any]:
    """Record ``episodes`` episodes of ``env_id`` into the store at ``store_path``.

    Episode i is reset with seed ``seed + i``; the random policy's action space is seeded
    with ``seed``, so a run is reproducible from what is stored. Returns a summary.
    On KeyboardInterrupt the recording is flushed, the open episode marked
    interrupted, and the interrupt re-raised.

    With ``envs`` > 1 a ``gymnasium.vector`` environment of that many copies
    (``vector_mode`` sync or async) is recorded through ``RecordVectorFrames``: sub-env i
    is reset with seed ``seed + i`` and later episodes start by autoreset; recording
    stops once ``episodes`` episodes have ended (the others end as interrupted).

    ``writer`` (``thread`` or ``process``) overrides where the frame writer and the
    SQLite sink run (default: the host profile's choice).
    """
    if policy not in POLICIES:
        raise InvalidInput(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if episodes < 1:
        raise InvalidInput("--episodes must be at least 1")
    if max_steps is not None and max_steps < 1:
        raise InvalidInput("--max-steps must be at least 1")
    if envs < 1:
        raise InvalidInput("--envs must be at least 1")
    if vector_mode not in VECTOR_MODES:
        raise InvalidInput(f"--vector-mode must be one of {', '.join(VECTOR_MODES)}")
    overrides: dict[str, Any] = {}
    if codec is not None:
        overrides["codec"] = codec
    if durability is not None:
        overrides["durability"] = durability
    if writer is not None:
        overrides["writer"] = writer
    config = {"policy": policy, "seed": seed, "max_steps": max_steps}
    if envs > 1:
        return _record_vector(
            store_path, env_id, envs, vector_mode, episodes, max_steps, seed,
            preset, overrides, durability, config, on_step,
        )  # fmt: skip
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
                config=config,
            )
            rec = wrapped.recorder
            ids: list[int] = []
            try:
                _play(wrapped, env, episodes, seed, ids, on_step)
            finally:
                wrapped.close()  # flushes; an open episode is marked interrupted
            return _summary(store, rec, env_id, ids, time.perf_counter() - t0)
    finally:
        env.close()


def _record_vector(
    store_path: str,
    env_id: str,
    envs: int,
    vector_mode: str,
    episodes: int,
    max_steps: int | None,
    seed: int,
    preset: str | None,
    overrides: dict[str, Any],
    durability: str | None,
    config: dict[str, Any],
    on_step: Callable[[int], None] | None,
) -> dict[str, Any]:
    """``record`` with ``envs`` sub-environments (see ``record``)."""
    venv = make_vec_env(env_id, envs, mode=vector_mode, max_episode_steps=max_steps)
    t0 = time.perf_counter()
    try:
        with FrameStore.open(store_path, durability=durability or "balanced") as store:
            wrapped = RecordVectorFrames(
                venv,
                store,
                env_id=env_id,
                preset=preset,
                overrides=overrides,
                config={**config, "envs": envs, "vector_mode": vector_mode},
            )
            rec = wrapped.recorder
            try:
                wrapped.reset(seed=seed)
                venv.action_space.seed(seed)
                while rec.episodes_recorded < episodes:
                    wrapped.step(venv.action_space.sample())
                    if on_step is not None:
                        on_step(envs)
            finally:
                wrapped.close()  # flushes; open episodes are marked interrupted
            ids = [e.id for e in store.episodes(run_id=rec.run_id)]
            return _summary(store, rec, env_id, ids, time.perf_counter() - t0)
    finally:
        venv.close()


def _play(wrapped, env, episodes: int, seed: int, ids: list[int], on_step) -> None:
    """Run the seeded random policy; episode i is reset with seed ``seed + i``."""
    env.action_space.seed(seed)
    for i in range(episodes):
        wrapped.reset(seed=seed + i)
        ids.append(wrapped.recorder.current_episode)
        done = False
        while not done:
            _, _, term, trunc, _ = wrapped.step(env.action_space.sample())
            done = term or trunc
            if on_step is not None:
                on_step(1)


def _summary(store: FrameStore, rec, env_id: str, ids: list[int], seconds: float) -> dict:
    m = rec.metrics()
    eps = [store.episode(i) for i in ids]
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
