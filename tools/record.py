"""``framestore record``: the headless main job. Plays an environment with a seeded
policy and records every step."""

from __future__ import annotations

import ctypes
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from framestore import FrameStore, RecordVectorFrames
from framestore.catalog import MAX_SQLITE_INT
from framestore.envs import VECTOR_MODES, make_env, make_vec_env
from framestore.errors import InvalidInput
from framestore.gym.play import PolicySpec, load_policy, play_episode, play_vector
from framestore.gym.wrappers import RecordFrames

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
    """SIGTERM behaves like Ctrl-C: flush what was recorded, mark the episode interrupted.

    Only the first SIGINT/SIGTERM interrupts. Later ones (a second Ctrl-C, a supervisor
    repeating SIGTERM) arrive while the recording is flushed and closed: the handler does
    nothing for them. On the way out both signals are ignored (``SIG_IGN``) for the rest of
    the process, because the interpreter's shutdown resets Python-level handlers to the
    default and a late signal would turn exit 130 into death by signal (-2/-15).

    Why not ``SIG_IGN`` in the handler itself: a signal that already reached the C level
    (both often do at once on a loaded machine) would then find its handler gone when
    Python runs it, and CPython raises ``OSError: Signal 15 ignored due to race condition``
    at whatever line runs next (seen in ``RecordFrames.close``, a traceback instead of exit
    130). The switch at the end tells the kernel first (``_ignore_from_now_on``)."""
    signals = (signal.SIGINT, signal.SIGTERM)
    received: list[int] = []

    def handler(signum, frame):
        if received:
            return  # the first one is being handled: flush and close go on
        received.append(signum)
        raise KeyboardInterrupt

    try:
        old = {sig: signal.signal(sig, handler) for sig in signals}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        if received:
            _ignore_from_now_on(signals)
        else:
            for sig, previous in old.items():
                signal.signal(sig, previous)


def _ignore_from_now_on(signals: tuple[signal.Signals, ...]) -> None:
    """``SIG_IGN`` for ``signals`` without CPython's race.

    A signal may be caught at the C level by any thread (numpy's BLAS threads included), at
    any moment; one caught just before ``signal.signal(sig, SIG_IGN)`` is run by Python
    after it, finds ``SIG_IGN`` and is reported as a race. So the kernel is told to ignore
    the signals first (libc ``signal``: nothing new is caught from then on), and only then
    ``signal.signal`` runs what was caught, with our handler still in place (it does
    nothing for a second signal), before it records ``SIG_IGN`` on Python's side too.
    Python's side matters: at shutdown CPython resets a Python handler, not ``SIG_IGN``,
    to the default."""
    try:
        libc_signal = ctypes.CDLL(None).signal
        libc_signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
        libc_signal.restype = ctypes.c_void_p
        for sig in signals:
            libc_signal(int(sig), int(signal.SIG_IGN))
    except (AttributeError, OSError, TypeError):  # no libc signal() (Windows: CDLL(None))
        pass
    for sig in signals:
        signal.signal(sig, signal.SIG_IGN)


def record(
    store_path: str,
    env_id: str,
    *,
    episodes: int = 1,
    max_steps: int | None = None,
    seed: int = 0,
    policy: str | PolicySpec = "random",
    preset: str | None = None,
    codec: str | None = None,
    durability: str | None = None,
    envs: int = 1,
    vector_mode: str = "sync",
    writer: str | None = None,
    on_step: Callable[[int], None] | None = None,
    on_episode: Callable[[EpisodeDone], None] | None = None,
    observations: bool = False,
) -> dict[str, Any]:
    """Record ``episodes`` episodes of ``env_id`` into the store at ``store_path``.

    ``policy`` is ``"random"`` or names the user's policy (``"pkg.module:callable"``, a
    callable ``obs -> action`` or an object with ``reset(seed)`` and ``act(obs)``; see
    ``framestore.gym.play``); it is checked before the environment starts and its name is
    stored with the run (``runs.config["policy"]``). Episode i is reset with seed
    ``seed + i`` and the policy with ``reset(seed + i)`` (the random policy seeds its
    action space with it), as ``framestore.ray.record_parallel`` does, so a run is
    reproducible from what is stored. ``max_steps`` truncates
    an episode after that many actions: it then holds ``max_steps + 1`` step rows (row 0
    is the frame after the reset). ``on_episode`` is called with ``{"id", "seed",
    "steps", "total_reward", "status"}`` as each episode ends.

    With ``envs`` > 1 a ``gymnasium.vector`` environment of that many copies
    (``vector_mode`` sync or async) is recorded through ``RecordVectorFrames``: sub-env i
    is reset with seed ``seed + i`` and later episodes start by autoreset; recording
    stops once ``episodes`` episodes have ended (the others end as interrupted).

    ``writer`` (``thread`` or ``process``) overrides where the frame writer and the
    SQLite sink run (default: the host profile's choice).

    ``observations``: also record each step's observation (``RecordFrames(...,
    observations=True)``: image observations as the frame stream ``observation``, one
    equal to the rendered frame stored once); with ``envs`` > 1 each sub-environment's
    (``RecordVectorFrames(..., observations=True)``).

    Returns a summary (``bytes_out``: the run's compressed frames; ``bytes_on_disk``:
    the whole store afterwards, as ``framestore info`` counts it; ``seeds_recorded_before``:
    the seeds this run used that episodes of ``env_id`` in the store were reset with
    already, i.e. episodes recorded again identically). On KeyboardInterrupt
    the recording is flushed, the open episode marked interrupted, and
    ``RecordingInterrupted`` (a ``KeyboardInterrupt``) raised with the summary.
    """
    _check_args(episodes, max_steps, envs, vector_mode, seed)
    spec = load_policy(policy)  # a bad name is refused before the environment starts
    overrides: dict[str, Any] = {}
    if codec is not None:
        overrides["codec"] = codec
    if durability is not None:
        overrides["durability"] = durability
    if writer is not None:
        overrides["writer"] = writer
    config: dict[str, Any] = {"policy": spec.name, "seed": seed, "max_steps": max_steps}
    if envs > 1:
        env = make_vec_env(env_id, envs, mode=vector_mode, max_episode_steps=max_steps)
        config.update(envs=envs, vector_mode=vector_mode)
    else:
        env = make_env(env_id, max_episode_steps=max_steps)
    t0 = time.perf_counter()
    try:
        with FrameStore.open(store_path, durability=durability or "balanced") as store:
            seen = _seeds_recorded_before(store, env_id, seed, max(episodes, envs))
            wrapper = RecordVectorFrames if envs > 1 else RecordFrames
            extra = {"observations": True} if observations else {}
            wrapped = wrapper(
                env, store, env_id=env_id, preset=preset, overrides=overrides, config=config,
                **extra,
            )  # fmt: skip
            rec = wrapped.recorder
            interrupted = False
            try:
                policy = spec.build(env.action_space)
                if envs > 1:
                    _play_vector(wrapped, policy, episodes, seed, on_step, on_episode)
                else:
                    _play(wrapped, policy, episodes, seed, on_step, on_episode)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                wrapped.close()  # flushes; open episodes are marked interrupted
            summary = _summary(store, rec, env_id, time.perf_counter() - t0)
            summary["seeds_recorded_before"] = seen
    finally:
        env.close()
    # measured as `framestore info` measures it: once the store is closed (SQLite has
    # folded its WAL back into the database)
    with FrameStore.open(store_path, readonly=True) as closed:
        summary["bytes_on_disk"] = closed.disk_usage().total
    if interrupted:
        raise RecordingInterrupted({**summary, "interrupted": True})
    return summary


def _check_args(
    episodes: int, max_steps: int | None, envs: int, vector_mode: str, seed: int
) -> None:
    if episodes < 1:
        raise InvalidInput("--episodes must be at least 1")
    if max_steps is not None and max_steps < 1:
        raise InvalidInput("--max-steps must be at least 1")
    if envs < 1:
        raise InvalidInput("--envs must be at least 1")
    if vector_mode not in VECTOR_MODES:
        raise InvalidInput(f"--vector-mode must be one of {', '.join(VECTOR_MODES)}")
    seeds = max(episodes, envs)  # episode (or sub-env) i is reset with seed + i
    if not 0 <= seed <= MAX_SQLITE_INT - (seeds - 1):
        # The store keeps seeds as 64-bit integers: refused here, before the store is
        # opened, not after the frames are written.
        raise InvalidInput(
            f"--seed must be from 0 to {MAX_SQLITE_INT - (seeds - 1)} for {seeds} "
            f"episode(s) or environments (seeds are 64-bit integers, the i-th uses seed + i), "
            f"got {seed}"
        )


def _play(wrapped, policy, episodes: int, seed: int, on_step, on_episode) -> None:
    """Play ``episodes`` episodes with ``policy``; episode i is reset with ``seed + i``."""
    for i in range(episodes):
        eid, steps, total = None, 0, 0.0
        for step in play_episode(wrapped, policy, seed + i):
            if eid is None:
                eid = wrapped.recorder.current_episode
            steps, total = steps + 1, total + float(step.reward)
            if step.action is not None and on_step is not None:
                on_step(1)
        if on_episode is not None:
            # "complete" is what the recorder marks an episode that ended by itself
            done_ep = {"id": eid, "seed": seed + i, "steps": steps, "total_reward": total}
            on_episode({**done_ep, "status": "complete"})


def _play_vector(wrapped, policy, episodes: int, seed: int, on_step, on_episode) -> None:
    """Play every sub-environment with ``policy`` (sub-env i reset with ``seed + i``,
    later episodes by autoreset) until ``episodes`` episodes ended."""
    n = wrapped.num_envs
    play = play_vector(wrapped, policy, seed)
    next(play)  # the reset
    seeds: list[int | None] = [seed + i for i in range(n)]
    steps, totals = [1] * n, [0.0] * n
    rec = wrapped.recorder
    while rec.episodes_recorded < episodes:
        ids = wrapped.current_episodes
        step = next(play)
        rewards, terms, truncs = step.reward, step.terminated, step.truncated
        if on_step is not None:
            on_step(n)
        for i in range(n):
            if ids[i] is None:  # the autoreset step of a sub-env that just ended
                steps[i], totals[i] = 1, 0.0
                continue
            steps[i] += 1
            totals[i] += float(rewards[i])
            if (terms[i] or truncs[i]) and on_episode is not None:
                on_episode(
                    {"id": ids[i], "seed": seeds[i], "steps": steps[i],
                     "total_reward": totals[i], "status": "complete"}
                )  # fmt: skip
            if terms[i] or truncs[i]:
                seeds[i] = None  # the next episode of this sub-env starts by autoreset


def _seeds_recorded_before(store: FrameStore, env_id: str, seed: int, count: int) -> list[int]:
    """Seeds of ``seed .. seed + count - 1`` that episodes of ``env_id`` in the store
    were reset with already: the seeded random policy plays such an episode again
    step for step (the summary says so, not to append identical data silently)."""
    wanted = range(seed, seed + count)
    return sorted({e.seed for e in store.episodes() if e.env_id == env_id and e.seed in wanted})


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
