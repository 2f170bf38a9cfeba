"""``PlaySession``: an environment played step by step, optionally recorded (straight to
a ``Recorder`` or into a telemetry-lite ring), with disk work on its own I/O thread."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from framestore import FrameStore, InvalidInput, LiteRecorder, Recorder, RecorderMetrics
from framestore.envs import make_env
from framestore.settings import resolve

from ._keys import KeyMapper

__all__ = ["PlaySession", "SessionEvent", "StepResult"]


@dataclass(frozen=True)
class StepResult:
    """What one call to ``PlaySession.step``/``reset`` produced."""

    frame: Any  # numpy array from env.render()
    action: Any  # None for a reset
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    step: int  # index within the episode (0 = reset)
    seed: int | None  # the episode's reset seed
    recorded: bool


@dataclass(frozen=True)
class SessionEvent:
    """Something the session's I/O thread finished (drained with ``poll_events``)."""

    kind: str  # "recording" | "stopped" | "saved" | "error" | "info"
    text: str = ""
    episode_id: int | None = None
    error: BaseException | None = field(default=None, compare=False)


class PlaySession:
    """An environment played step by step, optionally recorded.

    Recording goes straight to a ``Recorder`` (one run per session), or with ``lite``
    into an in-memory ``LiteRecorder`` ring that is written only when you ``save()``
    (``discard()`` forgets it). A recorded episode always starts at a reset, so it can be
    replayed from its seed and actions. Episode ``i`` of the session is reset with seed
    ``seed + i``.

    ``step``/``reset`` run on the caller's (UI) thread and never touch the disk: opening
    and closing the recorder and saving the lite ring run on the session's I/O thread
    (``gui-io``). Their outcomes arrive as ``SessionEvent``s from ``poll_events()``.
    A writer or sink failure stops recording cleanly: the recorder is closed on the I/O
    thread and an ``error`` event says why. ``writer`` picks where the recorder's writer
    and sink run (``"thread"`` or ``"process"``; ``None``: the host profile's choice).
    """

    def __init__(
        self,
        env_id: str,
        store: FrameStore | None = None,
        *,
        seed: int = 0,
        preset: str | None = None,
        lite: bool = False,
        env_factory: Callable[[str], gym.Env] = make_env,
        writer: str | None = None,
    ):
        self.env_id = env_id
        self.store = store
        self.base_seed = int(seed)
        self.preset = preset
        self.writer = writer  # "thread" | "process" | None: the host profile's choice
        self._lite_mode = bool(lite)
        self._env_factory = env_factory
        self.env = self._env_factory(env_id)
        self.keymap = KeyMapper.for_env(self.env)
        self.render_fps = float(self.env.metadata.get("render_fps") or 30)
        self.episode = -1  # session episode counter
        self.episode_seed: int | None = None
        self.step_index = 0
        self.needs_reset = True
        self.awaiting_decision = False  # lite: episode over, Save or Discard
        self.last: StepResult | None = None
        self._recording = False
        self._recorder: Recorder | None = None  # set on the I/O thread once open
        self._recorder_opening = False
        self._recorder_error: BaseException | None = None
        self._episode_open = False  # a recorded episode is in progress
        self._rearm = False  # the last reset happened while the recorder was opening
        self._lite: LiteRecorder | None = None
        self._events: queue.SimpleQueue[SessionEvent] = queue.SimpleQueue()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="gui-io")
        self._closed = False
        self.frames_seen = 0

    # ------------------------------------------------------------------ state
    @property
    def recording(self) -> bool:
        return self._recording

    @property
    def lite(self) -> bool:
        return self._lite_mode

    @property
    def armed(self) -> bool:
        """Recording is on and ready (direct mode: the recorder is open)."""
        if not self._recording:
            return False
        return self._lite is not None if self._lite_mode else self._recorder is not None

    @property
    def recorder(self) -> Recorder | None:
        """The open recorder of direct recording (``None`` until the I/O thread opened it)."""
        return self._recorder

    @property
    def lite_steps(self) -> int:
        return self._lite.steps if self._lite is not None else 0

    @property
    def episode_id(self) -> int | None:
        """The store's id of the episode being recorded (``None``: not recorded, or a
        telemetry-lite episode, which gets its id when saved)."""
        rec = self._recorder
        if self._lite_mode or not self._episode_open or rec is None:
            return None
        return rec.current_episode

    def hud_lines(self) -> list[str]:
        """The session's lines of the HUD: recording state and where the game is, with
        the store's episode id (the session's own episode counter means nothing there)."""
        lines = []
        if self._recording:
            mode = "lite ring" if self._lite_mode else "direct"
            if self._recorder is not None:  # where its writer runs, once it is open
                mode += ", storage process" if self._recorder.settings.writer == "process" else ""
            state = "  starting..." if self.starting else "  arming..." if self.waiting else ""
            lines.append(f"● REC ({mode}){state}")
            if self._lite_mode:
                lines.append(f"lite ring: {self.lite_steps} steps")
        eid = self.episode_id
        if eid is not None:
            where = f"episode {eid}"
        elif self._recording and self._lite_mode:
            where = "episode (gets its id when saved)"
        else:
            where = "not recorded"
        lines.append(f"{where} · seed {self.episode_seed} · step {self.step_index}")
        return lines

    def metrics(self) -> RecorderMetrics | None:
        """The open recorder's numbers for the HUD (``None`` when not recording directly)."""
        rec = self._recorder
        return None if rec is None else rec.metrics()

    def poll_events(self) -> list[SessionEvent]:
        """What the I/O thread finished since the last call, oldest first."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    # ------------------------------------------------------------------ recording control
    def set_recording(self, on: bool) -> None:
        """Turn recording on (the next step resets the environment and starts a recorded
        episode) or off (the recorded episode ends as interrupted; a lite ring waits for
        Save or Discard)."""
        on = bool(on)
        if on == self._recording:
            return
        if on:
            if self.store is None:
                raise ValueError("no store to record into")
            self._recorder_error = None
            self._recording = True
            if self._lite_mode:
                self._open_lite()
            else:
                self._open_recorder()
            self.needs_reset = True
        else:
            self._end_recorded_episode("interrupted")
            self._recording = False
            if self._lite_mode and self._lite is not None and self._lite.steps:
                self.awaiting_decision = True

    def set_lite(self, on: bool) -> None:
        """Switch between direct and telemetry-lite recording (starts a new episode)."""
        on = bool(on)
        if on == self._lite_mode:
            return
        was = self._recording
        if was:
            self.set_recording(False)
            if self.awaiting_decision:
                self.discard()
        self._lite_mode = on
        if was:
            self.set_recording(True)

    def _open_lite(self) -> None:
        if self._lite is None:
            kw: dict[str, Any] = {}
            try:  # the ring's bounds come from the preset (host-scaled), like the writer's
                s = resolve(self.env_id, preset=self.preset).settings
                kw = dict(max_steps=s.lite_steps, max_bytes=s.lite_bytes)
            except InvalidInput:  # unknown preset, bad presets file: LiteRecorder's defaults
                pass
            self._lite = LiteRecorder(action_space=self.env.action_space, **kw)

    def _recorder_kwargs(self) -> dict[str, Any]:
        return dict(
            action_space=self.env.action_space,
            preset=self.preset,
            overrides={"writer": self.writer} if self.writer else None,
            config={"source": "gui", "seed": self.base_seed, "lite": self._lite_mode},
            on_error=self._on_background_error,
            render_fps=self.render_fps,
        )

    def _make_recorder(self) -> Recorder:
        """On the I/O thread: open the recorder (takes the writer lock, reads SQLite)."""
        if self._recorder is not None:
            return self._recorder
        rec = self.store.recorder(self.env_id, **self._recorder_kwargs())
        self._recorder = rec
        return rec

    def _open_recorder(self) -> None:
        if self._recorder is not None or self._recorder_opening:
            return
        self._recorder_opening = True

        def job():
            try:
                self._make_recorder()
                self._events.put(SessionEvent("recording", f"recording {self.env_id}"))
            except BaseException as e:  # noqa: BLE001 - reported to the UI
                self._recording = False
                self._events.put(SessionEvent("error", f"cannot record: {e}", error=e))
            finally:
                self._recorder_opening = False

        self._io.submit(job)

    def _on_background_error(self, exc: BaseException) -> None:
        # writer or sink thread: only note it; the UI thread stops recording at its next step
        if self._recorder_error is None:
            self._recorder_error = exc

    def _fail_recording(self, exc: BaseException) -> None:
        """Stop recording after a writer/sink error; close the recorder off this thread."""
        rec, self._recorder = self._recorder, None
        self._recording = False
        self._episode_open = False
        self._recorder_error = None
        self._events.put(SessionEvent("error", f"recording stopped: {exc}", error=exc))
        if rec is not None:
            self._io.submit(self._close_recorder, rec, quiet=True)

    def _close_recorder(self, rec: Recorder, quiet: bool = False) -> None:
        try:
            rec.close()
            if not quiet:
                self._events.put(SessionEvent("stopped", "recording saved"))
        except BaseException as e:  # noqa: BLE001 - the first error was already reported
            if not quiet:
                self._events.put(SessionEvent("error", f"closing the recorder: {e}", error=e))

    def stop_recorder(self) -> Future:
        """End recording and close the recorder on the I/O thread (everything recorded
        so far becomes durable). Returns the job's future."""
        self.set_recording(False)
        rec, self._recorder = self._recorder, None
        if rec is None:
            return self._io.submit(lambda: None)
        return self._io.submit(self._close_recorder, rec)

    def _begin_recorded_episode(self) -> None:
        if not self._recording:
            return
        if self._lite_mode:
            self._lite.begin_episode(seed=self.episode_seed)
            self._episode_open = True
        elif self._recorder is not None:
            self._recorder.begin_episode(seed=self.episode_seed)
            self._episode_open = True

    def _end_recorded_episode(self, status: str) -> None:
        if not self._episode_open:
            return
        self._episode_open = False
        if self._lite_mode:
            if self._lite is not None:
                self._lite.end_episode()
                if self._lite.steps:
                    self.awaiting_decision = True
            return
        if self._recorder is not None:
            try:
                self._recorder.end_episode(status=status)
            except Exception as e:  # noqa: BLE001
                self._fail_recording(e)

    def _record(self, frame, action, reward, terminated, truncated, info) -> bool:
        if not self._episode_open:
            return False
        target = self._lite if self._lite_mode else self._recorder
        if target is None:
            return False
        try:
            target.record_step(
                frame,
                action=action,
                reward=float(reward),
                terminated=bool(terminated),
                truncated=bool(truncated),
                info=_jsonable(info),
            )
            return True
        except Exception as e:  # noqa: BLE001 - QueueFull, WriterFailed, bad info...
            if self._lite_mode:
                self._events.put(SessionEvent("error", f"lite recording: {e}", error=e))
                return False
            self._fail_recording(e)
            return False

    # ------------------------------------------------------------------ lite save/discard
    def save(self) -> Future | None:
        """Write the lite ring as an episode (on the I/O thread) and start a new episode.
        Returns the job's future (``None`` if there is nothing to save)."""
        if self._lite is None or (self._lite.steps == 0 and not self._episode_open):
            self.awaiting_decision = False
            return None
        status = "interrupted" if self._episode_open else None
        self._episode_open = False
        self._lite.end_episode()
        lite = self._lite
        self._lite = None  # a fresh ring for the next episode; this one is saved then closed
        self.awaiting_decision = False
        self.needs_reset = True
        if self._recording:
            self._open_lite()

        def job():
            try:
                rec = self._make_recorder()
                eid = lite.save(rec, status=status)
                rec.flush()
                self._events.put(SessionEvent("saved", f"saved episode {eid}", episode_id=eid))
                return eid
            except BaseException as e:  # noqa: BLE001 - reported to the UI
                self._events.put(SessionEvent("error", f"saving failed: {e}", error=e))
                raise
            finally:
                lite.close()

        return self._io.submit(job)

    def discard(self) -> None:
        """Forget the lite ring at once and start a new episode."""
        if self._lite is not None:
            self._lite.discard()
        self._episode_open = False
        self.awaiting_decision = False
        self.needs_reset = True

    # ------------------------------------------------------------------ stepping
    def _check_error(self) -> None:
        exc = self._recorder_error
        if exc is not None and self._recorder is not None:
            self._fail_recording(exc)

    def reset(self, seed: int | None = None) -> StepResult:
        """End the current episode (interrupted if it was recorded and not finished) and
        reset the environment; a recorded episode starts here (row 0 is the reset)."""
        self._check_error()
        self._end_recorded_episode("interrupted")
        if self.awaiting_decision:
            self.discard()
        if seed is None and self._rearm:
            seed = self.episode_seed  # the last reset only waited for the recorder: same episode
        else:
            self.episode += 1
        self._rearm = False
        self.episode_seed = self.base_seed + self.episode if seed is None else int(seed)
        _obs, info = self.env.reset(seed=self.episode_seed)
        if self.episode == 0:
            self.env.action_space.seed(self.base_seed)
        self.step_index = 0
        frame = self.env.render()
        self._begin_recorded_episode()
        # recording on but the recorder still opening: reset again once it is ready, so
        # the recorded episode starts at a reset
        self.needs_reset = self._rearm = self._recording and not self._episode_open
        recorded = self._record(frame, None, 0.0, False, False, info)
        self.frames_seen += 1
        self.last = StepResult(frame, None, 0.0, False, False, info, 0, self.episode_seed, recorded)
        return self.last

    @property
    def starting(self) -> bool:
        """Recording is on and its recorder is still being opened (on the I/O thread;
        with ``writer="process"`` its storage process is starting)."""
        return self._recording and not self._lite_mode and self._recorder is None

    @property
    def waiting(self) -> bool:
        """Stepping is held: recording is being armed, or a lite episode awaits a decision."""
        if self.awaiting_decision:
            return True
        return self._recording and not self._lite_mode and self._recorder is None

    def step(self, keys: Iterable[str] = (), *, action: Any = None) -> StepResult | None:
        """One environment step with the action for ``keys`` (or ``action``); recorded
        when recording is on. Returns ``None`` when no step happened (turn-based game with
        no key, recorder still opening, lite episode awaiting Save/Discard)."""
        self._check_error()
        if self.waiting:
            return None
        if self.needs_reset:
            return self.reset()
        if action is None:
            action = self.keymap.action(keys)
            if action is None:
                return None
        if isinstance(action, np.generic | np.ndarray) and action.ndim == 0:
            action = action.item()  # numpy scalar (space.sample()) -> Python int/float
        _obs, reward, terminated, truncated, info = self.env.step(action)
        self.step_index += 1
        frame = self.env.render()
        recorded = self._record(frame, action, reward, terminated, truncated, info)
        self.frames_seen += 1
        if terminated or truncated:
            self._end_recorded_episode("complete")
            self.needs_reset = True
        self.last = StepResult(
            frame,
            action,
            float(reward),
            bool(terminated),
            bool(truncated),
            info,
            self.step_index,
            self.episode_seed,
            recorded,
        )
        return self.last

    def sample_action(self):
        """A seeded random action (the scripted policy of screenshot mode and tests)."""
        return self.env.action_space.sample()

    # ------------------------------------------------------------------ lifecycle
    def close_async(self) -> Future:
        """Like ``close`` but returns at once; the recorder closes on the I/O thread,
        which then ends. Returns a future that completes when everything is closed."""
        if self._closed:
            done: Future = Future()
            done.set_result(None)
            return done
        self._closed = True
        if self._lite is not None and self._lite_mode:
            self._lite.discard()
        self.stop_recorder()
        lite, self._lite = self._lite, None
        fut = self._io.submit(lambda: lite.close() if lite is not None else None)
        self._io.shutdown(wait=False)
        self.env.close()
        return fut

    def close(self, timeout: float | None = None) -> None:
        """Stop recording (closing the recorder: everything recorded becomes durable),
        close the environment and the I/O thread. Blocks: call it at shutdown or from a
        worker."""
        if self._closed:
            return
        self._closed = True
        if self._lite is not None and self._lite_mode:
            self._lite.discard()
        fut = self.stop_recorder()
        self._io.shutdown(wait=True)
        try:
            fut.result(timeout=timeout)
        except Exception:
            pass
        if self._lite is not None:
            self._lite.close()
            self._lite = None
        self.env.close()


def _jsonable(info: dict[str, Any] | None) -> dict[str, Any]:
    """Step info made JSON-friendly (numpy scalars/arrays to Python)."""
    if not info:
        return {}
    out = {}
    for k, v in info.items():
        if isinstance(v, np.generic | np.ndarray):
            v = v.item() if v.ndim == 0 else v.tolist()
        out[str(k)] = v
    return out
