"""``framestore verify --replay``: play each episode again in the environment that made
it and compare every stored frame with the environment's, bit for bit.

An episode is replayable when its run stored how to make the environment (``env_spec``:
Gymnasium's spec with id, kwargs, time limit and wrappers; a run without one is made
from its env id with the registered defaults), and when it has a seed, or continues an
earlier episode of the same (sub-)environment that is replayable itself: an autoreset,
or a reset without a seed, carries the environment's random state over, so the chain
is played from its last seeded reset. Every step row after the reset needs its action.

Read-only: the store is opened read-only; environments are made in this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from framestore import EpisodeInfo, FrameStore, InvalidInput
from framestore.catalog import RECOVERED_ENV_ID
from framestore.envs import make_env, make_env_from_spec
from framestore.write.recorder import UNSTORED_OPTIONS

from ._store import StoreArg, opened

__all__ = ["EpisodeReplay", "ReplayReport", "replay"]

Progress = Callable[[int, int], None]  # (episodes done, episodes total)


@dataclass
class EpisodeReplay:
    """What replaying one episode found. ``status``: ``match``, ``differs`` or
    ``not replayable`` (then ``reason`` says why)."""

    episode: int
    status: str
    steps: int = 0
    frames_compared: int = 0
    first_difference: int | None = None  # the first step whose frame differs
    reason: str | None = None
    chain: list[int] = field(default_factory=list)  # episodes played, the seeded one first

    def __str__(self) -> str:
        if self.status == "match":
            return f"episode {self.episode}: match ({self.frames_compared} frames)"
        if self.status == "differs":
            return f"episode {self.episode}: DIFFERS from step {self.first_difference}"
        return f"episode {self.episode}: not replayable ({self.reason})"


@dataclass
class ReplayReport:
    episodes: list[EpisodeReplay] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No replayable episode differs."""
        return all(e.status != "differs" for e in self.episodes)

    def count(self, status: str) -> int:
        return sum(e.status == status for e in self.episodes)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


class NotReplayable(Exception):
    """Why an episode cannot be played again (reported, never raised to the caller)."""


# --------------------------------------------------------------------------- chains
def _chain(store: FrameStore, ep: EpisodeInfo) -> list[EpisodeInfo]:
    """The episodes to play for ``ep``, its last seeded ancestor first."""
    chain = [ep]
    seen = {ep.id}
    while chain[0].seed is None:
        prev_id = chain[0].continues_episode
        if prev_id is None:
            raise NotReplayable(
                "no seed" if len(chain) == 1 else f"episode {chain[0].id} it continues has no seed"
            )
        if prev_id in seen:
            raise NotReplayable(f"episode chain loops at {prev_id}")
        prev = store.catalog.episodes.get(prev_id)
        if prev is None or prev.status == "deleted":
            raise NotReplayable(f"episode {prev_id} it continues is not in the store")
        chain.insert(0, prev)
        seen.add(prev_id)
    return chain


def _make(store: FrameStore, ep: EpisodeInfo) -> gym.Env:
    if ep.env_id == RECOVERED_ENV_ID:
        raise NotReplayable("unknown env id (rows recovered from segments)")
    run = store.run(ep.run_id)
    try:
        if run.env_spec is not None:
            return make_env_from_spec(run.env_spec)
        return make_env(ep.env_id)  # recorded before env specs were stored
    except InvalidInput as e:
        raise NotReplayable(str(e)) from None


def _options(ep: EpisodeInfo) -> dict[str, Any] | None:
    opts = ep.reset_options
    if opts and UNSTORED_OPTIONS in opts:
        raise NotReplayable(f"its reset options were not stored ({opts[UNSTORED_OPTIONS]})")
    return opts


# --------------------------------------------------------------------------- playing
def _play_episode(
    store: FrameStore, env: gym.Env, ep: EpisodeInfo, result: EpisodeReplay | None, first: bool
) -> None:
    """Reset and step ``env`` through ``ep``'s rows; compare frames into ``result``
    (None: only play, an earlier episode of a chain)."""
    options = _options(ep)
    env.reset(seed=ep.seed if first else None, options=options)
    for row in store.read_steps(ep.id):
        if row.step > 0:
            if row.action is None:
                raise NotReplayable(f"step {row.step} has no action (a recovered row)")
            try:
                env.step(row.action)
            except Exception as e:  # noqa: BLE001 - the user's environment: report it
                raise NotReplayable(f"the environment failed at step {row.step}: {e}") from None
        if result is None:
            continue
        result.steps += 1
        if row.frame is None or result.first_difference is not None:
            continue
        want = store.read_at(row.frame, ep.id, row.step, copy=False)
        got = env.render()
        result.frames_compared += 1
        if not (isinstance(got, np.ndarray) and np.array_equal(got, want)):
            result.first_difference = row.step
    if result is not None:
        result.status = "differs" if result.first_difference is not None else "match"


def _replay_chain(
    store: FrameStore, env: gym.Env, chain: list[EpisodeInfo], targets: dict[int, EpisodeReplay]
) -> None:
    """Play a chain once, comparing the frames of the episodes in ``targets``. The first
    reset is seeded, which makes ``env`` start afresh whatever it played before."""
    for i, ep in enumerate(chain):
        _play_episode(store, env, ep, targets.get(ep.id), first=i == 0)


def _replay_group(
    store: FrameStore,
    envs: dict[int, gym.Env | NotReplayable],
    chain: list[EpisodeInfo],
    targets: dict[int, EpisodeReplay],
) -> None:
    """Replay one chain in its run's environment (made once per run)."""
    run_id = chain[0].run_id
    try:
        if run_id not in envs:
            try:
                envs[run_id] = _make(store, chain[0])
            except NotReplayable as e:
                envs[run_id] = e
        env = envs[run_id]
        if isinstance(env, NotReplayable):
            raise env
        _replay_chain(store, env, chain, targets)
    except NotReplayable as e:
        for r in targets.values():
            if r.status == "not replayable":  # not played to its end
                r.reason = str(e)


def _groups(
    store: FrameStore, episodes: list[EpisodeInfo], report: ReplayReport
) -> list[tuple[list[EpisodeInfo], dict[int, EpisodeReplay]]]:
    """Chains to play, each once for all the requested episodes on it (the longest
    chain covers the shorter ones ending on it)."""
    by_root: dict[int, tuple[list[EpisodeInfo], dict[int, EpisodeReplay]]] = {}
    for ep in episodes:
        result = EpisodeReplay(ep.id, "not replayable")
        report.episodes.append(result)
        try:
            chain = _chain(store, ep)
        except NotReplayable as e:
            result.reason = str(e)
            continue
        result.chain = [c.id for c in chain]
        longest, targets = by_root.get(chain[0].id, (chain, {}))
        if len(chain) > len(longest):
            longest = chain
        targets[ep.id] = result
        by_root[chain[0].id] = (longest, targets)
    return list(by_root.values())


def replay(
    store: StoreArg, episodes: Iterable[int] | None = None, *, progress: Progress | None = None
) -> ReplayReport:
    """Replay episodes (all live ones by default) and compare every stored frame.

    Raises ``EpisodeNotFound`` for an unknown id; everything else an episode lacks is
    reported on it as ``not replayable`` with the reason.
    """
    t0 = time.perf_counter()
    report = ReplayReport()
    with opened(store, readonly=True) as st:
        wanted = st.episodes() if episodes is None else [st.episode(int(e)) for e in episodes]
        groups = _groups(st, wanted, report)
        done = sum(1 for e in report.episodes if e.status == "not replayable")
        envs: dict[int, gym.Env | NotReplayable] = {}  # one per run: making one is slow
        try:
            for chain, targets in groups:
                _replay_group(st, envs, chain, targets)
                done += len(targets)
                if progress is not None:
                    progress(done, len(report.episodes))
        finally:
            for env in envs.values():
                if isinstance(env, gym.Env):
                    env.close()
    report.episodes.sort(key=lambda r: r.episode)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
