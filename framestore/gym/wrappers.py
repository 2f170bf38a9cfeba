"""RecordFrames: a Gymnasium wrapper that records every step into a FrameStore.

Shaped like ``gymnasium.wrappers.RecordVideo``: it needs ``render_mode="rgb_array"``,
records in ``reset``/``step`` and flushes in ``close``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

from ..envs import env_spec_of
from ..errors import InvalidInput
from ._fresh import only_caller_holds


class RecordFrames(gym.Wrapper):
    """Record episodes (frames, actions, rewards, flags, info) into a ``FrameStore``.

    Step row 0 of an episode is the reset (no action; its frame is ``env.render()``
    right after ``reset``); row k >= 1 follows the k-th action. The run stores the
    environment's spec and each episode its seed (or, reset without a seed, the episode
    it continues) and reset options, so ``framestore verify --replay`` can play it again.

    Args:
        env: an environment made with ``render_mode="rgb_array"``.
        store: an open ``FrameStore``; the wrapper starts a recorder (a run) on it.
        episode_trigger: ``f(episode_index) -> bool``; which episodes are recorded
            (default: all).
        step_trigger: ``f(global_step) -> bool``; which steps of a recorded episode keep
            their frame (default: all). Metadata rows are recorded for every step.
        env_id: stored with the run; defaults to ``env.spec.id``.
        preset, overrides, config: passed to ``store.recorder``.
        recorder: record into an existing recorder instead (it is not closed here).
        observations: also record each step's observation (``record_step(observation=
            ...)``): image observations (uint8 Box of 2 or more dimensions, frame stacks
            such as ``(4, 84, 84)`` included) as the frame stream ``observation`` (a Dict
            space's as ``observation.<key>``; one equal to the rendered frame is stored
            once), small other arrays in the step row; read them back with
            ``FrameStore.read_observation``. The observation space is checked here.
    """

    def __init__(
        self,
        env: gym.Env,
        store,
        *,
        episode_trigger: Callable[[int], bool] | None = None,
        step_trigger: Callable[[int], bool] | None = None,
        env_id: str | None = None,
        preset: str | None = None,
        overrides: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        recorder=None,
        observations: bool = False,
    ):
        super().__init__(env)
        self.observations = bool(observations)
        if self.observations:
            # A sample has the space's shapes, dtypes and keys: what cannot be recorded
            # is refused now, in one line, before the first step.
            from ..write._observations import split_observation

            split_observation(env.observation_space.sample())
        if env.render_mode != "rgb_array":
            raise ValueError(
                f"RecordFrames needs render_mode='rgb_array', the environment has "
                f"render_mode={env.render_mode!r}. Make it with "
                f"gymnasium.make({getattr(env.spec, 'id', 'ENV_ID')!r}, render_mode='rgb_array')."
            )
        self.episode_trigger = episode_trigger
        self.step_trigger = step_trigger
        self.episode_index = -1
        self.global_step = 0
        self.recording = False
        self._previous: int | None = None  # the last episode, when it was recorded
        eid = env_id or (env.spec.id if env.spec is not None else None)
        if not eid:
            raise InvalidInput("env_id is required for environments without a spec")
        self._owns_recorder = recorder is None
        self.recorder = recorder or store.recorder(
            eid,
            action_space=env.action_space,
            preset=preset,
            overrides=overrides,
            config=config,
            render_fps=env.metadata.get("render_fps"),
            env_spec=env_spec_of(env.spec),
        )

    def _frame(self) -> tuple[Any, bool]:
        """The step's render frame, and whether it may be handed over to the store
        (``record_step(owned=True)``: a fresh array nobody else holds, never a buffer
        the environment refills)."""
        if self.step_trigger is not None and not self.step_trigger(self.global_step):
            return None, False
        frame = self.env.render()
        owned = only_caller_holds(frame)  # asked alone: a reference on the stack counts
        return frame, owned

    def _obs(self, obs: Any) -> Any:
        return obs if self.observations else None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        if self.recording and self.recorder.current_episode is not None:
            self.recorder.end_episode(status="interrupted")
        self.episode_index += 1
        self.recording = self.episode_trigger is None or bool(
            self.episode_trigger(self.episode_index)
        )
        if self.recording:
            # Without a seed the environment's random state carries on from the
            # previous episode: replay must play that one first.
            continues = self._previous if seed is None else None
            self._previous = self.recorder.begin_episode(
                seed=seed, continues=continues, reset_options=options
            )
            frame, owned = self._frame()
            self.recorder.record_step(frame, info=info, observation=self._obs(obs), owned=owned)
        else:
            self._previous = None
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.global_step += 1
        if self.recording and self.recorder.current_episode is not None:
            frame, owned = self._frame()
            self.recorder.record_step(
                frame,
                action=action,
                reward=float(reward),
                terminated=terminated,
                truncated=truncated,
                info=info,
                observation=self._obs(obs),
                owned=owned,
            )
            if terminated or truncated:
                self.recorder.end_episode()
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        try:
            if self._owns_recorder:
                self.recorder.close()
            elif self.recorder.current_episode is not None:
                self.recorder.end_episode(status="interrupted")
                self.recorder.flush()
        finally:
            super().close()
