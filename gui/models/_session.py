"""``PlaySession``: an environment played step by step on a session thread of its own,
optionally recorded (straight to a ``Recorder`` or into a telemetry-lite ring), with the
recorder opened, closed and saved on an I/O thread.

Three threads, each owning its part:

* the **UI thread** (the caller of every public method) owns the recording state, one
  ``Recording`` value, and the recorder and ring it hands out. It tells the session
  thread what to do with commands and learns what the other threads did from notes,
  which it applies itself (``poll_events``/``take_results``): no other thread changes
  the state.
* the **session thread** (``gui-session``, started by ``start``) owns the environment
  and the episode being played: it steps at the frame rate, feeds the recorder's
  producer side (the hub and writer take it from there) and hands each ``StepResult``
  to the UI thread as it is, frame included: nothing is copied.
* the **I/O thread** (``gui-io``) opens and closes recorders and saves lite rings, so
  neither of the others ever waits for the disk or a storage process.

Without ``start`` no session thread runs and ``step``/``reset`` play on the caller's
thread (tests, scripts): the same code, commands executed at once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import gymnasium as gym
import numpy as np

from framestore import (
    FrameStore,
    InvalidInput,
    LiteRecorder,
    Recorder,
    RecorderMetrics,
    prepare_recording,
)
from framestore.envs import make_env
from framestore.settings import resolve

from ._game import Game, GameProcess, LocalGame
from ._keys import KeyMapper

__all__ = ["PlaySession", "Recording", "SessionEvent", "StepResult"]

#: Step results the session thread keeps for the UI thread before it waits for it to
#: take them (a UI thread that stalls holds the game instead of piling up frames).
MAX_PENDING = 32


class Recording(Enum):
    """Where recording stands; changed on the UI thread only."""

    OFF = "off"
    STARTING = "starting"  # direct: the recorder is being opened on the I/O thread
    ON = "on"  # recorded from the next reset on
    DECIDING = "deciding"  # lite: an episode waits in the ring for Save or Discard


@dataclass(frozen=True)
class StepResult:
    """What one step (or reset) of the session produced."""

    frame: Any  # numpy array from env.render(), as the environment made it
    action: Any  # None for a reset
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    step: int  # index within the episode (0 = reset)
    seed: int | None  # the episode's reset seed
    recorded: bool
    episode_id: int | None = None  # the store's id of the recorded episode (direct)


@dataclass(frozen=True)
class SessionEvent:
    """Something the session's other threads finished (drained with ``poll_events``)."""

    kind: str  # "recording" | "stopped" | "saved" | "error" | "info"
    text: str = ""
    episode_id: int | None = None
    error: BaseException | None = field(default=None, compare=False)


# ---------------------------------------------------------------- UI -> session thread
@dataclass(frozen=True)
class _Attach:
    """Record into ``target`` from the next reset."""

    target: Recorder | LiteRecorder
    lite: bool


@dataclass
class _Detach:
    """End the recorded episode (``status``) and record into ``then`` (or nothing);
    ``done`` is set once the session thread let go of its target."""

    status: str
    then: LiteRecorder | None = None
    done: threading.Event = field(default_factory=threading.Event)
    interrupted: bool = False  # out: an episode was still open


@dataclass(frozen=True)
class _Reset:
    seed: int | None = None


@dataclass(frozen=True)
class _Pause:
    paused: bool


@dataclass(frozen=True)
class _Limit:
    """Stop after ``actions`` more actions (recorded ones only, with ``recorded``); the
    last is truncated, as ``record --max-steps`` truncates an episode."""

    actions: int
    recorded: bool


_STOP = object()


# ---------------------------------------------------------------- other threads -> UI
@dataclass(frozen=True)
class _Note:
    kind: str  # opened | open_failed | closed | close_failed | saved | save_failed |
    # decide | record_failed | lite_failed | writer_failed
    value: Any = None


class PlaySession:
    """An environment played step by step, optionally recorded.

    Recording goes straight to a ``Recorder`` (one run per session), or with ``lite``
    into an in-memory ``LiteRecorder`` ring that is written only when you ``save()``
    (``discard()`` forgets it). A recorded episode always starts at a reset, so it can be
    replayed from its seed and actions. Episode ``i`` of the session is reset with seed
    ``seed + i``. ``writer`` picks where the recorder's writer and sink run
    (``"thread"`` or ``"process"``; ``None``: the host profile's choice).

    ``start(notify)`` plays on the session thread at ``fps``; ``notify()`` is called
    from it whenever results or events wait, and the UI thread then takes them with
    ``take_results()`` and ``poll_events()``. A writer or sink failure stops recording
    cleanly and an ``error`` event says why; the game plays on.
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
        env_process: bool = True,
    ):
        self.env_id = env_id
        self.store = store
        self.base_seed = int(seed)
        self.preset = preset
        self.writer = writer
        self.env = env_factory(env_id)
        self.keymap = KeyMapper.for_env(self.env)
        self.render_fps = float(self.env.metadata.get("render_fps") or 30)
        # the game steps in a process of its own (env_process) or on the session thread;
        # self.env gives the action space, key map and metadata
        self._game: Game = (
            GameProcess(env_id, env_factory, self.env) if env_process else LocalGame(self.env)
        )
        if store is not None and not store.readonly:
            # Here, where starting a game pauses anyway: the first recording's start then
            # imports nothing on the I/O thread, which shares the GIL with the UI.
            try:
                prepare_recording(env_id, preset=preset, writer=writer)
            except InvalidInput:
                pass  # a bad preset or writer: opening the recorder says so
        # UI thread
        self.state = Recording.OFF
        self._after_decision = Recording.OFF  # the state Save or Discard returns to
        self._lite_mode = bool(lite)
        self._recorder: Recorder | None = None  # direct recording's, once open
        self._opening: Future | None = None
        self._ring: LiteRecorder | None = None  # attached, or waiting for a decision
        self._notes: queue.SimpleQueue[_Note] = queue.SimpleQueue()
        self._events: list[SessionEvent] = []
        self._io = ThreadPoolExecutor(1, thread_name_prefix="gui-io")
        self._save_recorder: Recorder | None = None  # I/O thread: lite saves go here
        self._closed = False
        self.last: StepResult | None = None  # the latest result the UI thread took
        # session thread (the caller's, until start())
        self.policy: Callable[[PlaySession], Any] | None = None
        self.keys: Callable[[], Iterable[str]] = frozenset
        self.episode = -1  # the session's episode counter
        self.episode_seed: int | None = None
        self.step_index = 0
        self.needs_reset = True
        self.frames_seen = 0
        self._target: Recorder | LiteRecorder | None = None
        self._target_lite = False
        self._episode_open = False
        self._same_seed = False  # the next reset repeats an episode that took no action
        self._holding = False  # lite: an episode ended; wait for Save or Discard
        self._paused = False
        self._limit: _Limit | None = None
        self._interval = 1.0 / self.render_fps
        # between the two
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._notify: Callable[[], None] | None = None
        self._pending: list[StepResult] = []
        self._cond = threading.Condition()
        self._woken = False

    # ------------------------------------------------------------------ state (UI)
    @property
    def recording(self) -> bool:
        """Recording is on (or resumes after the lite decision)."""
        s = self.state
        return s in (Recording.STARTING, Recording.ON) or (
            s is Recording.DECIDING and self._after_decision is Recording.ON
        )

    @property
    def lite(self) -> bool:
        return self._lite_mode

    @property
    def armed(self) -> bool:
        """Recording is on and ready (direct mode: the recorder is open)."""
        return self.state is Recording.ON

    @property
    def starting(self) -> bool:
        """The recorder is being opened (with ``writer="process"``: its storage process
        is starting). The game plays on, unrecorded, meanwhile."""
        return self.state is Recording.STARTING

    @property
    def awaiting_decision(self) -> bool:
        """A lite episode waits for Save or Discard (the game holds meanwhile)."""
        return self.state is Recording.DECIDING

    @property
    def recorder(self) -> Recorder | None:
        """The open recorder of direct recording (``None`` until it is open)."""
        return self._recorder

    @property
    def lite_steps(self) -> int:
        return self._ring.steps if self._ring is not None else 0

    @property
    def episode_id(self) -> int | None:
        """The store's id of the episode being recorded (``None``: not recorded, or a
        telemetry-lite episode, which gets its id when saved)."""
        if self.state is not Recording.ON or self.last is None:
            return None
        return self.last.episode_id

    def hud_lines(self) -> list[str]:
        """The session's lines of the HUD: recording state and where the game is, with
        the store's episode id (the session's own episode counter means nothing there)."""
        lines = []
        if self.recording:
            mode = "lite ring" if self._lite_mode else "direct"
            if self._recorder is not None and self._recorder.settings.writer == "process":
                mode += ", storage process"
            lines.append(f"● REC ({mode}){'  starting...' if self.starting else ''}")
            if self._lite_mode:
                lines.append(f"lite ring: {self.lite_steps} steps")
        eid = self.episode_id
        if eid is not None:
            where = f"episode {eid}"
        elif self.recording and self._lite_mode:
            where = "episode (gets its id when saved)"
        else:
            where = "not recorded"
        last = self.last
        seed, step = (last.seed, last.step) if last is not None else (None, 0)
        lines.append(f"{where} · seed {'-' if seed is None else seed} · step {step}")
        return lines

    def metrics(self) -> RecorderMetrics | None:
        """The open recorder's numbers for the HUD (``None`` when not recording directly)."""
        rec = self._recorder
        return None if rec is None else rec.metrics()

    def poll_events(self) -> list[SessionEvent]:
        """What the other threads finished since the last call, oldest first (their
        outcomes are applied to the state here, on the UI thread)."""
        self._apply_notes()
        out, self._events = self._events, []
        return out

    def take_results(self) -> list[StepResult]:
        """The steps the session thread played since the last call, oldest first."""
        with self._cond:
            out, self._pending = self._pending, []
            self._woken = False
            self._cond.notify_all()
        if out:
            self.last = out[-1]
        return out

    # ------------------------------------------------------------------ notes (UI)
    def _note(self, kind: str, value: Any = None) -> None:
        """From any thread: an outcome for the UI thread to apply."""
        self._notes.put(_Note(kind, value))
        self._wake()

    def _event(self, kind: str, text: str, error: BaseException | None = None, **kw) -> None:
        if error is not None:
            error = error.with_traceback(None)  # no frames (and environments) kept alive
        self._events.append(SessionEvent(kind, text, error=error, **kw))

    def _apply_notes(self) -> None:
        while True:
            try:
                note = self._notes.get_nowait()
            except queue.Empty:
                return
            self._apply(note)

    def _apply(self, note: _Note) -> None:
        kind, value = note.kind, note.value
        if kind == "opened":
            if self.state is Recording.STARTING and not self._closed:
                self._recorder = value
                self.state = Recording.ON
                self._send(_Attach(value, lite=False))
                self._event("recording", f"recording {self.env_id}")
            else:  # turned off (or closed) while it opened
                self._io.submit(self._close_quietly, value)
        elif kind == "open_failed":
            if self.state is Recording.STARTING:
                self.state = Recording.OFF
            self._event("error", f"cannot record: {value}", value)
        elif kind in ("record_failed", "writer_failed"):
            if self._recorder is not None and self.state is Recording.ON:
                self._stop_direct(quiet=True)
                self._event("error", f"recording stopped: {value}", value)
        elif kind == "decide":
            if self.state is Recording.ON and self._lite_mode:
                self.state, self._after_decision = Recording.DECIDING, Recording.ON
        elif kind == "closed":
            self._event("stopped", "recording saved")
        elif kind == "saved":
            self._event("saved", f"saved episode {value}", episode_id=value)
        elif kind == "game_failed":
            self._event("error", f"the game stopped: {value}", value)
        elif kind == "lite_failed":
            self._event("error", f"lite recording: {value}", value)
        elif kind in ("close_failed", "save_failed"):
            what = "closing the recorder" if kind == "close_failed" else "saving failed"
            self._event("error", f"{what}: {value}", value)

    # ------------------------------------------------------------------ recording (UI)
    def set_recording(self, on: bool) -> None:
        """Turn recording on (the next reset starts a recorded episode; direct recording
        first opens its recorder on the I/O thread) or off (the recorded episode ends as
        interrupted; a lite ring with steps waits for Save or Discard)."""
        self._apply_notes()
        s = self.state
        if on:
            if s is Recording.DECIDING:
                self._after_decision = Recording.ON
            elif s is Recording.OFF:
                if self.store is None:
                    raise ValueError("no store to record into")
                if self._lite_mode:
                    self._ring = self._new_ring()
                    self.state = Recording.ON
                    self._send(_Attach(self._ring, lite=True))
                else:
                    self.state = Recording.STARTING
                    self._opening = self._io.submit(self._open_job)
        elif s is Recording.DECIDING:
            self._after_decision = Recording.OFF
        elif s is Recording.STARTING:
            self.state = Recording.OFF  # the recorder is closed once it has opened
        elif s is Recording.ON:
            if self._lite_mode:
                self._stop_lite()
            else:
                self._stop_direct()

    def set_lite(self, on: bool) -> None:
        """Switch between direct and telemetry-lite recording (starts a new episode)."""
        on = bool(on)
        if on == self._lite_mode:
            return
        was = self.recording
        if was:
            self.set_recording(False)
            if self.awaiting_decision:
                self.discard()
        self._lite_mode = on
        if was:
            self.set_recording(True)

    def _new_ring(self) -> LiteRecorder:
        kw: dict[str, Any] = {}
        try:  # the ring's bounds come from the preset (host-scaled), like the writer's
            s = resolve(self.env_id, preset=self.preset).settings
            kw = dict(max_steps=s.lite_steps, max_bytes=s.lite_bytes)
        except InvalidInput:  # unknown preset, bad presets file: LiteRecorder's defaults
            pass
        return LiteRecorder(action_space=self.env.action_space, **kw)

    def _recorder_kwargs(self) -> dict[str, Any]:
        return dict(
            action_space=self.env.action_space,
            preset=self.preset,
            overrides={"writer": self.writer} if self.writer else None,
            config={"source": "gui", "seed": self.base_seed, "lite": self._lite_mode},
            on_error=self._on_background_error,
            render_fps=self.render_fps,
        )

    def _open_job(self) -> Recorder | None:
        """I/O thread: open the recorder (takes the writer lock, reads SQLite, maybe
        starts a storage process)."""
        try:
            rec = self.store.recorder(self.env_id, **self._recorder_kwargs())
        except BaseException as e:  # noqa: BLE001 - reported to the UI
            self._note("open_failed", e)
            return None
        self._note("opened", rec)
        return rec

    def _on_background_error(self, exc: BaseException) -> None:
        """The writer's or sink's thread: recording must stop (the UI thread does it)."""
        self._note("writer_failed", exc)

    def _stop_direct(self, quiet: bool = False) -> Future:
        """Detach the recorder from the session thread, then close it on the I/O thread
        (in order before any recorder opened later)."""
        rec, self._recorder = self._recorder, None
        self.state = Recording.OFF
        detach = _Detach("interrupted")
        self._send(detach)

        def job() -> None:
            detach.done.wait()
            self._close_quietly(rec) if quiet else self._close_job(rec)

        return self._io.submit(job)

    def _close_job(self, rec: Recorder) -> None:
        try:
            rec.close()
        except BaseException as e:  # noqa: BLE001 - reported to the UI
            self._note("close_failed", e)
        else:
            self._note("closed")

    @staticmethod
    def _close_quietly(rec: Recorder | None) -> None:
        if rec is not None:
            try:
                rec.close()
            except BaseException:  # noqa: BLE001 - its first error was already reported
                pass

    def _stop_lite(self) -> None:
        detach = _Detach("interrupted")
        self._send(detach)
        if self._ring is not None and self._ring.steps:
            self.state, self._after_decision = Recording.DECIDING, Recording.OFF
        else:
            ring, self._ring = self._ring, None
            self.state = Recording.OFF
            self._io.submit(lambda: (detach.done.wait(), ring and ring.close()))

    def stop_recorder(self) -> Future:
        """End recording; direct recording's recorder closes on the I/O thread
        (everything recorded so far becomes durable). Returns that job's future."""
        self._apply_notes()
        if self.state is Recording.ON and not self._lite_mode:
            return self._stop_direct()
        self.set_recording(False)
        return self._io.submit(lambda: None)

    # ------------------------------------------------------------------ lite (UI)
    def save(self) -> Future | None:
        """Write the lite ring as an episode (on the I/O thread) and start a new episode.
        Returns the job's future (``None`` if there is nothing to save)."""
        self._apply_notes()
        ring = self._ring
        if ring is None or self.state not in (Recording.ON, Recording.DECIDING):
            return None
        swap = self._swap_ring()
        status = lambda: "interrupted" if swap.interrupted else None  # noqa: E731

        def job() -> int:
            swap.done.wait()
            try:
                if self._save_recorder is None:
                    self._save_recorder = self.store.recorder(
                        self.env_id, **self._recorder_kwargs()
                    )
                eid = ring.save(self._save_recorder, status=status())
                self._save_recorder.flush()
                self._note("saved", eid)
                return eid
            except BaseException as e:  # noqa: BLE001 - reported to the UI
                self._note("save_failed", e)
                raise
            finally:
                ring.close()

        return self._io.submit(job)

    def discard(self) -> None:
        """Forget the lite ring and start a new episode."""
        self._apply_notes()
        ring = self._ring
        if ring is None:
            return
        swap = self._swap_ring()
        self._io.submit(lambda: (swap.done.wait(), ring.discard(), ring.close()))

    def _swap_ring(self) -> _Detach:
        """Take the ring from the session thread, giving it a fresh one if recording goes
        on; the state leaves DECIDING."""
        after = Recording.ON if self.state is Recording.ON else self._after_decision
        self._ring = self._new_ring() if after is Recording.ON else None
        self.state = after
        swap = _Detach("interrupted", then=self._ring)
        self._send(swap)
        return swap

    # ------------------------------------------------------------------ control (UI)
    def _send(self, command: object) -> StepResult | None:
        if self._thread is not None:
            self._commands.put(command)
            return None
        return self._execute(command)

    def start(self, notify: Callable[[], None] | None = None, *, fps: float | None = None) -> None:
        """Play on the session thread at ``fps`` (default: the environment's render fps);
        ``notify()`` is called from it when results or events wait for the UI thread."""
        if self._thread is not None:
            return
        self._interval = 1.0 / (fps or self.render_fps)
        self._notify = notify
        self._thread = threading.Thread(target=self._loop, name="gui-session", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def set_paused(self, paused: bool) -> None:
        self._send(_Pause(bool(paused)))

    def request_reset(self, seed: int | None = None) -> None:
        """Reset at the session thread's next step (a recorded episode ends interrupted)."""
        self._send(_Reset(seed))

    def limit_actions(self, actions: int, *, recorded: bool = False) -> None:
        """Play ``actions`` more actions (only recorded ones count, with ``recorded``),
        then hold; the last one is truncated, so a recorded episode ends complete."""
        self._send(_Limit(int(actions), recorded))

    # ------------------------------------------------------------------ session thread
    def _wake(self) -> None:
        notify = self._notify
        if notify is None:
            return
        with self._cond:
            if self._woken:
                return
            self._woken = True
        notify()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while self._run_commands(max(0.0, next_at - time.monotonic())):
            now = time.monotonic()
            if now < next_at:
                continue
            if self._paused or self._holding or (self._limit and self._limit.actions <= 0):
                next_at = now + 0.05  # commands still arrive at once
                continue
            try:
                res = self._advance(self.keys())
            except Exception as e:  # noqa: BLE001 - the environment failed: say so, hold
                self._holding = True
                self._note("game_failed", e)
                continue
            next_at = max(next_at + self._interval, now)
            if res is not None:
                self._deliver(res)

    def _run_commands(self, timeout: float) -> bool:
        """Execute the UI thread's commands, waiting up to ``timeout`` for the first;
        False once told to stop."""
        try:
            command = self._commands.get(timeout=timeout) if timeout > 0 else None
            while True:
                if command is _STOP:
                    return False
                res = None if command is None else self._execute(command)
                if res is not None:
                    self._deliver(res)
                command = self._commands.get_nowait()
        except queue.Empty:
            return True

    def _deliver(self, res: StepResult) -> None:
        with self._cond:
            while len(self._pending) >= MAX_PENDING and self._commands.empty():
                self._cond.wait(0.1)  # the UI thread is behind: hold the game
            self._pending.append(res)
        self._wake()

    def _execute(self, command: object) -> StepResult | None:
        """The session thread (or the caller's, without one) carries out a command;
        returns the result of a reset."""
        if isinstance(command, _Attach):
            self._target, self._target_lite = command.target, command.lite
            self._same_seed = self.step_index == 0 and self.episode >= 0
            self.needs_reset = True
        elif isinstance(command, _Detach):
            command.interrupted = self._episode_open
            self._end_recorded_episode(command.status)
            self._target, self._target_lite = command.then, command.then is not None
            if self._holding or command.then is not None:
                self.needs_reset = True
            self._holding = False
            command.done.set()
        elif isinstance(command, _Reset):
            self._end_recorded_episode("interrupted")
            self._holding = False
            return self._reset(command.seed)
        elif isinstance(command, _Pause):
            self._paused = command.paused
        elif isinstance(command, _Limit):
            self._limit = command
        return None

    def _end_recorded_episode(self, status: str) -> None:
        if not self._episode_open:
            return
        self._episode_open = False
        target = self._target
        try:
            target.end_episode() if self._target_lite else target.end_episode(status=status)
        except Exception as e:  # noqa: BLE001 - WriterFailed...: recording stops
            self._target = None
            self._note("lite_failed" if self._target_lite else "record_failed", e)

    def _record(self, frame, action, reward, terminated, truncated, info) -> bool:
        target = self._target
        if not self._episode_open or target is None:
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
            if self._target_lite:
                self._note("lite_failed", e)
            else:
                self._target, self._episode_open = None, False
                self._note("record_failed", e)
            return False

    def _result(
        self, frame, action, reward, terminated, truncated, info, recorded, eid=None
    ) -> StepResult:
        res = StepResult(
            frame,
            action,
            float(reward),
            bool(terminated),
            bool(truncated),
            info,
            self.step_index,
            self.episode_seed,
            recorded,
            eid,
        )
        self.frames_seen += 1
        return res

    def _reset(self, seed: int | None = None) -> StepResult:
        if seed is None and self._same_seed:
            seed = self.episode_seed  # the last episode took no action: it starts again
        else:
            self.episode += 1
        self._same_seed = False
        self.episode_seed = self.base_seed + self.episode if seed is None else int(seed)
        frame, info = self._game.reset(self.episode_seed)
        if self.episode == 0:
            self.env.action_space.seed(self.base_seed)
        self.step_index = 0
        self.needs_reset = False
        if self._target is not None:
            self._target.begin_episode(seed=self.episode_seed)
            self._episode_open = True
        recorded = self._record(frame, None, 0.0, False, False, info)
        return self._result(frame, None, 0.0, False, False, info, recorded, self._recorded_id())

    def _advance(self, keys: Iterable[str], action: Any = None) -> StepResult | None:
        """One step of the loop: the reset an episode needs, or one action."""
        if self.needs_reset:
            self._end_recorded_episode("interrupted")
            return self._reset()
        if action is None and self.policy is not None:
            action = self.policy(self)
        if action is None:
            action = self.keymap.action(keys)
            if action is None:
                return None  # turn-based game, no key: no step
        if isinstance(action, np.generic | np.ndarray) and action.ndim == 0:
            action = action.item()  # numpy scalar (space.sample()) -> Python int/float
        frame, reward, terminated, truncated, info = self._game.step(action)
        self.step_index += 1
        limit = self._limit
        counts = limit is not None and (self._episode_open or not limit.recorded)
        if counts and limit.actions <= 1 and not terminated:
            truncated = True  # the last action asked for: a time limit, as record's
        recorded = self._record(frame, action, reward, terminated, truncated, info)
        eid = self._recorded_id()  # before the episode may end below
        if counts:
            self._limit = _Limit(limit.actions - 1, limit.recorded)
        if terminated or truncated:
            if self._target_lite and self._episode_open:
                self._end_recorded_episode("complete")
                self._holding = True
                self._note("decide")
            else:
                self._end_recorded_episode("complete")
            self.needs_reset = True
        return self._result(frame, action, reward, terminated, truncated, info, recorded, eid)

    def _recorded_id(self) -> int | None:
        """The store's id of the episode being recorded directly (``None`` otherwise)."""
        if not self._episode_open or self._target_lite or self._target is None:
            return None
        return self._target.current_episode

    # ------------------------------------------------------------------ without a thread
    def step(self, keys: Iterable[str] = (), *, action: Any = None) -> StepResult | None:
        """One step on the caller's thread (no session thread running) with the action
        for ``keys`` (or ``action``). Returns ``None`` when no step happened (turn-based
        game with no key, a lite episode awaiting Save/Discard)."""
        if self._thread is not None:
            raise RuntimeError("the session thread plays: use take_results()")
        self._apply_notes()
        if self._holding:
            return None
        self.last = self._advance(keys, action)
        return self.last

    def reset(self, seed: int | None = None) -> StepResult | None:
        """End the current episode (interrupted if it was recorded) and reset; a recorded
        episode starts here (row 0 is the reset). With the session thread running, the
        reset happens there and its result arrives with ``take_results``."""
        self._apply_notes()
        if self.state is Recording.DECIDING:
            self.discard()
        res = self._send(_Reset(seed))
        if res is not None:
            self.last = res
        return res

    def sample_action(self):
        """A seeded random action (the scripted policy of screenshot mode and tests)."""
        return self.env.action_space.sample()

    # ------------------------------------------------------------------ lifecycle (UI)
    def close_async(self) -> Future:
        """Stop playing and recording without waiting: the session thread ends (its
        recorded episode interrupted), then the recorder, the ring and the environment
        close on the I/O thread. Returns a future that completes when all is closed."""
        if self._closed:
            done: Future = Future()
            done.set_result(None)
            return done
        self._apply_notes()
        self._closed = True
        rec, ring, opening = self._recorder, self._ring, self._opening
        self._recorder = self._ring = None
        self.state = Recording.OFF
        thread, self._thread = self._thread, None
        if thread is not None:
            self._commands.put(_STOP)
            with self._cond:
                self._cond.notify_all()

        def job() -> None:
            if thread is not None:
                thread.join()
            self._end_recorded_episode("interrupted")
            self._target = None
            opened = opening.result() if opening is not None else None
            for r in {id(x): x for x in (rec, opened, self._save_recorder) if x}.values():
                self._close_job(r) if r is rec else self._close_quietly(r)
            if ring is not None:
                ring.discard()
                ring.close()
            self._game.close()
            self.env.close()
            # nothing of the environment outlives the session (a live ALE instance at
            # exit makes nanobind print its "leaked" report)
            self._game = self.env = None

        fut = self._io.submit(job)
        self._io.shutdown(wait=False)
        return fut

    def close(self, timeout: float | None = None) -> None:
        """Stop recording (closing the recorder: everything recorded becomes durable),
        the session thread, the environment and the I/O thread. Blocks: call it at
        shutdown or from a worker."""
        fut = self.close_async()
        try:
            fut.result(timeout=timeout)
        except Exception:  # noqa: BLE001 - already reported as an event
            pass
        self._io.shutdown(wait=True)


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
