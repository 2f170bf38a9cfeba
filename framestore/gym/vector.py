"""RecordVectorFrames: record every sub-environment of a ``gymnasium.vector`` environment
into one store, through one recorder and one writer.

Shaped like Gymnasium's vector ``RecordVideo``: it needs ``render_mode="rgb_array"``
(``env.render()`` gives one frame per sub-environment), reads the autoreset mode from
``env.metadata`` and records in ``reset``/``step``. Each sub-environment's episodes are
separate episodes of one run; every vector step is ONE ``Recorder.record_steps`` batch.
A step or reset whose batch is refused (or whose environment raised) records nothing of
that step: the open episodes end as interrupted, new ones leave no trace, and recording
resumes at the next ``reset()``.

Autoreset modes (https://farama.org/Vector-Autoreset-Mode):

- next-step (the default): the step after a termination resets that sub-environment and
  ignores its action. That step is recorded as step 0 of the sub-environment's next
  episode (its reset frame, no action), never as a step of the ended one.
- same-step: the terminating step already returns the next episode's reset observation,
  so ``render()`` shows the reset frame. The ended episode's last row keeps its action,
  reward, flags and ``final_info`` but has no frame (the terminal frame is gone before
  the step returns); the next episode starts with its reset frame as step 0.
- disabled: episodes end on termination; ``reset(options={"reset_mask": ...})`` starts
  the next ones.

An episode started by an autoreset (or a reset without a seed) has no seed of its own:
it records its sub-environment index and the episode it continues, so ``verify
--replay`` can play the chain from the last seeded reset.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces as gs
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv
from gymnasium.vector.utils import iterate
from gymnasium.vector.vector_env import VectorWrapper

from ..envs import env_spec_of
from ..errors import InvalidInput
from ..settings import resolve
from ..write.recorder import Recorder
from ._fresh import caller_alone_holds_all

__all__ = ["RecordVectorFrames", "sub_env_infos", "vector_overrides"]

# Keys of same-step autoreset infos that describe the ended episode, not the new one.
_FINAL_KEYS = ("final_obs", "final_info", "_final_obs", "_final_info")


def sub_env_infos(infos: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Gymnasium's vector ``info`` (arrays with ``_key`` masks, nested dicts alike) as
    one plain dict per sub-environment. Observation copies (``final_obs``) are left
    out: observations are not step metadata."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in infos.items():
        if key.startswith("_") and key[1:] in infos:
            continue  # a mask
        if key == "final_obs":
            continue
        mask = infos.get("_" + key)
        if isinstance(value, dict):
            parts = sub_env_infos(value, n)
        elif isinstance(value, np.ndarray) and value.shape[:1] == (n,):
            parts = value.tolist() if value.dtype != object else list(value)
        else:
            continue  # not a per-sub-environment value
        for i in range(n):
            if mask is None or mask[i]:
                out[i][key] = parts[i]
    return out


def vector_overrides(
    env_id: str, num_envs: int, *, preset: str | None, overrides: dict[str, Any] | None
) -> dict[str, Any]:
    """Settings for N interleaved episodes: the preset's queue and sink bounds scaled by
    N (queue bytes keep their bound: memory does not grow), unless given."""
    given = dict(overrides or {})
    s = resolve(env_id, preset=preset, overrides=given).settings
    scaled = {
        "queue_frames": s.queue_frames * num_envs,
        "sink_queue": max(s.sink_queue, 4 * s.chunk_frames * num_envs),
        "hub_buffer": max(s.hub_buffer, s.hub_buffer * num_envs // 4),
    }
    return {**{k: v for k, v in scaled.items() if k not in given}, **given}


def _vector_kind(env: VectorEnv) -> str:
    base = env.unwrapped
    if isinstance(base, SyncVectorEnv):
        return "sync"
    if isinstance(base, AsyncVectorEnv):
        return "async"
    return type(base).__name__


class RecordVectorFrames(VectorWrapper):
    """Record every sub-environment's episodes (frames, actions, rewards, flags, info).

    Args:
        env: a vector environment made with ``render_mode="rgb_array"``, e.g.
            ``gym.make_vec("CartPole-v1", num_envs=8, vectorization_mode="sync",
            render_mode="rgb_array")``.
        store: an open ``FrameStore``; the wrapper starts one recorder (one run) on it.
        env_id: stored with the run; defaults to the environment's spec id.
        preset, overrides, config: passed to ``store.recorder`` (queue and sink bounds
            are scaled by the number of sub-environments unless ``overrides`` set them).
        recorder: record into an existing recorder instead (it is not closed here).
        observations: also record each sub-environment's observations, as
            ``RecordFrames(observations=True)`` does (image entries as the frame stream
            ``observation`` or ``observation.<key>``, one equal to the rendered frame
            stored once; small other arrays in the step row). Same-step autoreset: an
            ended episode's last row gets its ``final_obs``. The single observation
            space is checked here.
    """

    def __init__(
        self,
        env: VectorEnv,
        store,
        *,
        env_id: str | None = None,
        preset: str | None = None,
        overrides: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        recorder: Recorder | None = None,
        observations: bool = False,
    ):
        super().__init__(env)
        self.observations = bool(observations)
        if self.observations:
            # A sample has the space's shapes, dtypes and keys: what cannot be recorded
            # is refused now, in one line, before the first step.
            from ..write._observations import split_observation

            split_observation(env.single_observation_space.sample())
        if env.render_mode != "rgb_array":
            raise ValueError(
                f"RecordVectorFrames needs render_mode='rgb_array', the environment has "
                f"render_mode={env.render_mode!r}. Make it with gymnasium.make_vec(ENV_ID, "
                "num_envs=N, vectorization_mode='sync', render_mode='rgb_array')."
            )
        self.autoreset_mode = AutoresetMode(
            env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        )
        sub_spec = self._sub_spec(env)
        eid = env_id or (sub_spec.id if sub_spec is not None else None)
        if not eid:
            raise InvalidInput("env_id is required for environments without a spec")
        vector = {
            "num_envs": self.num_envs,
            "mode": _vector_kind(env),
            "autoreset_mode": self.autoreset_mode.value,
        }
        self._owns_recorder = recorder is None
        self.recorder = recorder or store.recorder(
            eid,
            action_space=env.single_action_space,
            preset=preset,
            overrides=vector_overrides(eid, self.num_envs, preset=preset, overrides=overrides),
            config=config,
            render_fps=env.metadata.get("render_fps"),
            env_spec=env_spec_of(sub_spec, vector=vector),
        )
        self._discrete = isinstance(env.single_action_space, gs.Discrete)
        self._episodes: list[int | None] = [None] * self.num_envs  # open, per sub-env
        self._last: list[int | None] = [None] * self.num_envs  # last ended, per sub-env
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._stopped = False  # an error ended the recording until the next reset()

    @staticmethod
    def _sub_spec(env: VectorEnv):
        try:
            specs = env.get_attr("spec")
        except (AttributeError, NotImplementedError):
            return None
        return specs[0] if specs else None

    # ----------------------------------------------------------------- helpers
    def _frames(self) -> tuple[Sequence[np.ndarray], bool]:
        """One frame per sub-environment, and whether they may be handed over to the
        store (``record_steps(owned=True)``: fresh arrays nobody else holds)."""
        frames = self.env.render()
        if not isinstance(frames, list | tuple) or len(frames) != self.num_envs:
            raise InvalidInput(
                f"{type(self.env.unwrapped).__name__}.render() must give one frame per "
                f"sub-environment ({self.num_envs}), got {type(frames).__name__}"
            )
        owned = caller_alone_holds_all(frames)  # asked alone: a reference on the stack counts
        return frames, owned

    def _observations(self, obs: Any) -> list[Any] | None:
        """Each sub-environment's observation of a batched one (None: not recorded)."""
        if not self.observations:
            return None
        return list(iterate(self.env.observation_space, obs))

    def _actions(self, actions: Any, skip: np.ndarray | None) -> Any:
        """Per-sub-environment actions (a Discrete batch stays one array); ``None``
        where ``skip`` is set (reset rows)."""
        if self._discrete and isinstance(actions, np.ndarray) and skip is None:
            return actions
        per = list(iterate(self.env.action_space, actions))
        if skip is not None:
            per = [None if s else a for a, s in zip(per, skip, strict=True)]
        return per

    @property
    def current_episodes(self) -> tuple[int | None, ...]:
        """The episode each sub-environment is recording now (None: between an episode's
        end and the autoreset that starts the next)."""
        return tuple(self._episodes)

    def _open(self, i: int, seed: int | None, options: dict[str, Any] | None) -> int:
        continues = self._last[i] if seed is None else None
        # deferred: the episode reaches the store with its reset row, or not at all
        eid = self.recorder.open_episode(
            seed, sub_env=i, continues=continues, reset_options=options or None, defer=True
        )
        self._episodes[i] = eid
        return eid

    def _stop_recording(self) -> None:
        """After an error between stepping and recording (the environment failed, or
        the recorder refused a batch): the open episodes miss a row now, so each ends
        as interrupted (one that never got a row leaves no trace) and recording
        resumes at the next ``reset()``. Errors while closing are left to the one
        being raised."""
        for i, eid in enumerate(self._episodes):
            if eid is not None:
                with contextlib.suppress(Exception):  # the caller gets the first error
                    self.recorder.close_episode(eid, "interrupted")
                self._last[i] = None  # no chain continues across a gap
                self._episodes[i] = None
        self._autoreset[:] = False
        self._stopped = True

    def _close(self, i: int, status: str = "complete") -> None:
        eid = self._episodes[i]
        if eid is not None:
            self.recorder.close_episode(eid, status)
            self._last[i] = eid
            self._episodes[i] = None

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, int | np.integer):
            return [int(seed) + i for i in range(self.num_envs)]
        return [None if s is None else int(s) for s in seed]

    # ----------------------------------------------------------------- recording
    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ):
        options = dict(options) if options else {}
        mask = options.pop("reset_mask", None)
        call_options = dict(options)
        if mask is not None:
            call_options["reset_mask"] = mask
        which = np.ones(self.num_envs, dtype=bool) if mask is None else np.asarray(mask, bool)
        if self._stopped and not which.all():
            raise InvalidInput(
                "recording stopped after an error: reset every sub-environment (no mask)"
            )
        try:
            obs, infos = self.env.reset(seed=seed, options=call_options or None)
            seeds = self._seeds(seed)
            frames, owned = self._frames()
            per_info = sub_env_infos(infos, self.num_envs)
            ids, rows = [], []
            for i in np.flatnonzero(which):
                self._close(int(i), "interrupted")
                ids.append(self._open(int(i), seeds[i], options))
                rows.append(int(i))
            per_obs = self._observations(obs)
            self.recorder.record_steps(
                ids,
                [frames[i] for i in rows],
                infos=[per_info[i] for i in rows],
                observations=None if per_obs is None else [per_obs[i] for i in rows],
                owned=owned,
            )
        except BaseException:
            self._stop_recording()
            raise
        self._autoreset[which] = False
        self._stopped = False
        return obs, infos

    def _check_recording(self) -> None:
        """Before stepping: every sub-environment has an open episode (or, next-step
        autoreset, is about to start one)."""
        if self._stopped:
            raise InvalidInput("recording stopped after an error: call reset() first")
        if any(e is None and not r for e, r in zip(self._episodes, self._autoreset, strict=True)):
            raise InvalidInput("step() before reset(): call reset() first")

    def step(self, actions):
        self._check_recording()
        try:
            obs, rewards, terminated, truncated, infos = self.env.step(actions)
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                self._record_same_step(obs, actions, rewards, terminated, truncated, infos)
            else:
                self._record_next_step(obs, actions, rewards, terminated, truncated, infos)
        except BaseException:
            self._stop_recording()
            raise
        return obs, rewards, terminated, truncated, infos

    def _record_next_step(self, obs, actions, rewards, terminated, truncated, infos) -> None:
        """Next-step (and disabled) autoreset: one batch per step; a sub-environment
        reset by this step starts its next episode with its reset frame."""
        resets = self._autoreset.copy() if self._autoreset.any() else None
        if resets is not None:
            for i in np.flatnonzero(resets):
                self._open(int(i), None, None)
        ids = self._episodes
        frames, owned = self._frames()
        self.recorder.record_steps(
            list(ids),
            frames,
            self._actions(actions, resets),
            rewards,
            terminated,
            truncated,
            sub_env_infos(infos, self.num_envs),
            observations=self._observations(obs),
            owned=owned,
        )
        done = np.logical_or(terminated, truncated)
        for i in np.flatnonzero(done):
            self._close(int(i))
        self._autoreset = (
            done if self.autoreset_mode == AutoresetMode.NEXT_STEP else self._autoreset
        )

    def _record_same_step(self, obs, actions, rewards, terminated, truncated, infos) -> None:
        """Same-step autoreset, one batch: every sub-environment's row (a terminating
        one has no frame: the sub-environment has already reset; its observation is
        ``final_obs``), then the next episodes' reset rows."""
        ids = list(self._episodes)
        n = self.num_envs
        done = np.logical_or(terminated, truncated)
        rendered, owned = self._frames()
        frames = list(rendered)
        per_info = sub_env_infos(infos, n)
        final = sub_env_infos(infos.get("final_info", {}), n)
        row_frames: list[np.ndarray | None] = [
            None if d else f for f, d in zip(frames, done, strict=True)
        ]
        row_infos = [final[i] if done[i] else per_info[i] for i in range(n)]
        row_actions = list(self._actions(actions, None))
        per_obs = self._observations(obs)
        row_obs = None
        if per_obs is not None:
            final_obs = infos.get("final_obs")
            row_obs = [final_obs[i] if done[i] else per_obs[i] for i in range(n)]
        rewards, terminated, truncated = list(rewards), list(terminated), list(truncated)
        ended = [int(i) for i in np.flatnonzero(done)]
        last = {i: ids[i] for i in ended}
        for i in ended:  # the next episodes, chained to the ones ending in this batch
            self._last[i] = last[i]
            new = self._open(i, None, None)
            ids.append(new)
            row_frames.append(frames[i])
            row_infos.append({k: v for k, v in per_info[i].items() if k not in _FINAL_KEYS})
            row_actions.append(None)
            if row_obs is not None and per_obs is not None:
                row_obs.append(per_obs[i])
            rewards.append(0.0)
            terminated.append(False)
            truncated.append(False)
        try:
            self.recorder.record_steps(
                ids, row_frames, row_actions, rewards, terminated, truncated, row_infos,
                observations=row_obs, owned=owned,
            )  # fmt: skip
        except BaseException:
            for eid in last.values():  # their last row was refused
                with contextlib.suppress(Exception):
                    self.recorder.close_episode(eid, "interrupted")
            raise
        for i in ended:
            self.recorder.close_episode(last[i], "complete")

    def close(self) -> None:
        """Flush the recording (open episodes end as interrupted), then close the env."""
        try:
            if self._owns_recorder:
                self.recorder.close()
            else:
                for i in range(self.num_envs):
                    self._close(i, "interrupted")
                self.recorder.flush()
        finally:
            super().close()
