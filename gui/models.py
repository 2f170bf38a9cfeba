"""The GUI's logic in pure Python: no Qt here, so all of it is testable without a display.

* ``PlaybackClock``: replay position, fps, speed, loop, reverse, follow-live.
* ``EpisodeListModel``: the episode table's rows, sorting, filtering and diffs.
* ``HudModel``: what the recording HUD shows, warnings included.
* ``KeyMapper`` / ``KeyState``: human keyboard control per environment family.
* ``PlaySession``: an environment plus an optional recording (direct or telemetry-lite).

Widgets (``gui/_*.py``) take these models in their constructors, subscribe to their
``Signal`` attributes and write back only through their setters.
"""

from __future__ import annotations

import errno
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Signal",
    "PlaybackClock",
    "EpisodeRow",
    "EpisodeListModel",
    "HudWarning",
    "HudState",
    "HudModel",
    "KeyState",
    "KeyMapper",
    "StepResult",
    "SessionEvent",
    "PlaySession",
    "human_bytes",
]


class Signal:
    """A minimal callback list: ``connect(cb)`` returns a function that disconnects."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., None]] = []

    def connect(self, callback: Callable[..., None]) -> Callable[[], None]:
        self._callbacks.append(callback)
        return lambda: self.disconnect(callback)

    def disconnect(self, callback: Callable[..., None]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        for cb in list(self._callbacks):
            cb(*args)


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# =============================================================================== clock
SPEED_MIN = 0.25
SPEED_MAX = 8.0
SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


class PlaybackClock:
    """Where a replay is and how it moves.

    ``tick(dt)`` advances by elapsed wall time (``dt * fps * speed`` frames, the
    fractional rest carried to the next tick), so playback speed does not depend on how
    often the caller ticks. At the end: ``loop`` wraps around; a ``live`` episode (still
    being recorded) waits for more frames; otherwise playback pauses. ``reverse`` plays
    backwards with the same rules at frame 0.

    Follow-live: while ``follow_live`` is on and the index sits on the last frame, a
    growing ``length`` (see ``set_length``) moves the index to the new last frame.

    Signals: ``index_changed(index)``; ``state_changed()`` for everything else.
    """

    def __init__(
        self,
        fps: float = 30.0,
        length: int = 0,
        *,
        speed: float = 1.0,
        loop: bool = False,
        reverse: bool = False,
        live: bool = False,
        follow_live: bool = True,
    ):
        self.index_changed = Signal()
        self.state_changed = Signal()
        self._fps = self._check_fps(fps)
        self._speed = self._check_speed(speed)
        self._length = max(0, int(length))
        self._index = 0
        self._loop = bool(loop)
        self._reverse = bool(reverse)
        self._live = bool(live)
        self._follow = bool(follow_live)
        self._playing = False
        self._phase = 0.0

    @staticmethod
    def _check_fps(fps: float) -> float:
        fps = float(fps)
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        return fps

    @staticmethod
    def _check_speed(speed: float) -> float:
        speed = float(speed)
        if not math.isfinite(speed):
            raise ValueError(f"speed must be finite, got {speed!r}")
        return min(SPEED_MAX, max(SPEED_MIN, speed))

    # ------------------------------------------------------------------ properties
    @property
    def fps(self) -> float:
        return self._fps

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def loop(self) -> bool:
        return self._loop

    @property
    def reverse(self) -> bool:
        return self._reverse

    @property
    def live(self) -> bool:
        return self._live

    @property
    def follow_live(self) -> bool:
        return self._follow

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def length(self) -> int:
        return self._length

    @property
    def index(self) -> int:
        return self._index

    @property
    def last(self) -> int:
        return max(0, self._length - 1)

    @property
    def at_end(self) -> bool:
        return self._index >= self.last

    # ------------------------------------------------------------------ setters
    def set_fps(self, fps: float) -> None:
        self._fps = self._check_fps(fps)
        self.state_changed.emit()

    def set_speed(self, speed: float) -> None:
        """Set the speed, clamped to 0.25x..8x."""
        self._speed = self._check_speed(speed)
        self.state_changed.emit()

    def faster(self) -> None:
        bigger = [s for s in SPEEDS if s > self._speed]
        self.set_speed(bigger[0] if bigger else SPEED_MAX)

    def slower(self) -> None:
        smaller = [s for s in SPEEDS if s < self._speed]
        self.set_speed(smaller[-1] if smaller else SPEED_MIN)

    def set_loop(self, loop: bool) -> None:
        self._loop = bool(loop)
        self.state_changed.emit()

    def set_reverse(self, reverse: bool) -> None:
        self._reverse = bool(reverse)
        self._phase = 0.0
        self.state_changed.emit()

    def set_follow_live(self, follow: bool) -> None:
        self._follow = bool(follow)
        if self._follow and self._live:
            self._set_index(self.last)
        self.state_changed.emit()

    def set_length(self, length: int, *, live: bool | None = None) -> None:
        """The number of frames (it grows while an episode is recorded). ``live`` says
        whether more may come."""
        length = max(0, int(length))
        was_at_end = self._index >= self.last
        grew = length > self._length
        self._length = length
        if live is not None:
            self._live = bool(live)
        if self._index > self.last:
            self._set_index(self.last)
        elif grew and self._follow and was_at_end and self._live:
            self._set_index(self.last)
        self.state_changed.emit()

    def play(self) -> None:
        """Start playing; at the end (forward) or the start (reverse) of a finished
        episode, start over."""
        if self._length == 0:
            return
        if not self._loop and not self._live:
            if not self._reverse and self._index >= self.last:
                self._set_index(0)
            elif self._reverse and self._index <= 0:
                self._set_index(self.last)
        self._playing = True
        self._phase = 0.0
        self.state_changed.emit()

    def pause(self) -> None:
        if self._playing:
            self._playing = False
            self._phase = 0.0
            self.state_changed.emit()

    def toggle(self) -> None:
        if self._playing:
            self.pause()
        else:
            self.play()

    def seek(self, index: int) -> None:
        """Jump to a frame (clamped to the episode)."""
        self._phase = 0.0
        self._set_index(min(max(0, int(index)), self.last))

    def step(self, n: int = 1) -> None:
        """Pause and move ``n`` frames (negative: back); wraps when looping."""
        self.pause()
        if self._length == 0:
            return
        target = self._index + int(n)
        if self._loop:
            target %= self._length
        self.seek(target)

    def step_forward(self) -> None:
        self.step(1)

    def step_back(self) -> None:
        self.step(-1)

    # ------------------------------------------------------------------ time
    def tick(self, dt: float) -> int:
        """Advance by ``dt`` seconds of wall time; returns the frames moved (signed)."""
        if not self._playing or self._length == 0 or dt <= 0:
            return 0
        self._phase += dt * self._fps * self._speed
        n = int(self._phase)
        if n == 0:
            return 0
        self._phase -= n
        start = self._index
        direction = -1 if self._reverse else 1
        target = start + direction * n
        if target > self.last:
            if self._live:
                target = self.last  # wait for the recorder
            elif self._loop:
                target %= self._length
            else:
                target = self.last
                self._playing = False
                self._phase = 0.0
                self.state_changed.emit()
        elif target < 0:
            if self._loop:
                target %= self._length
            else:
                target = 0
                self._playing = False
                self._phase = 0.0
                self.state_changed.emit()
        self._set_index(target)
        return target - start

    def _set_index(self, index: int) -> None:
        if index != self._index:
            self._index = index
            self.index_changed.emit(index)


# =============================================================================== episode list
@dataclass(frozen=True)
class EpisodeRow:
    """One row of the episode table."""

    id: int
    run: int
    env: str
    index: int
    seed: int | None
    steps: int
    total_reward: float
    status: str
    size: int | None  # bytes of segment records holding its frames


COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "Episode"),
    ("run", "Run"),
    ("env", "Environment"),
    ("index", "#"),
    ("seed", "Seed"),
    ("steps", "Steps"),
    ("total_reward", "Reward"),
    ("status", "Status"),
    ("size", "Size"),
)


class EpisodeListModel:
    """Rows of the episode table, kept in episode-id order.

    ``refresh(store)`` = ``apply(fetch(store))``. ``fetch`` reads the store (run it off
    the UI thread); ``apply`` updates the rows in place and emits only what changed, so
    a view keeps its selection and scroll position:

    * ``rows_about_to_be_removed(first, last)`` / ``rows_removed(first, last)``
    * ``rows_about_to_be_inserted(first, last)`` / ``rows_inserted(first, last)``
    * ``rows_changed(first, last)``

    Sorting and filtering are pure functions of a row (``sort_key``, ``matches``), used
    by ``view()`` here and by the Qt proxy model.
    """

    columns = COLUMNS

    def __init__(self) -> None:
        self.rows: list[EpisodeRow] = []
        self.rows_about_to_be_removed = Signal()
        self.rows_removed = Signal()
        self.rows_about_to_be_inserted = Signal()
        self.rows_inserted = Signal()
        self.rows_changed = Signal()
        self._size_cache: dict[int, tuple[tuple, int]] = {}
        self._cache_lock = threading.Lock()

    # ------------------------------------------------------------------ reading
    def fetch(self, store) -> list[EpisodeRow]:
        """Read the store's episodes (SQLite and segment headers: not on the UI thread).

        Sizes of episodes that did not change since the last fetch come from a cache."""
        rows = []
        for e in store.episodes():
            stamp = (e.steps, e.frames, e.status)
            with self._cache_lock:
                hit = self._size_cache.get(e.id)
            if hit is not None and hit[0] == stamp:
                size = hit[1]
            else:
                try:
                    size = store.episode_bytes(e.id)
                except Exception:  # a segment vanished under gc: show no size, not an error
                    size = None
                if size is not None:
                    with self._cache_lock:
                        self._size_cache[e.id] = (stamp, size)
            rows.append(
                EpisodeRow(
                    id=e.id,
                    run=e.run_id,
                    env=e.env_id,
                    index=e.index,
                    seed=e.seed,
                    steps=e.steps,
                    total_reward=float(e.total_reward),
                    status=e.status,
                    size=size,
                )
            )
        return rows

    def refresh(self, store) -> None:
        self.apply(self.fetch(store))

    def apply(self, new_rows: Sequence[EpisodeRow]) -> None:
        """Make ``rows`` equal ``new_rows`` (sorted by id), emitting minimal changes."""
        new_rows = sorted(new_rows, key=lambda r: r.id)
        new_ids = {r.id for r in new_rows}
        # removals, from the bottom so indexes stay valid
        for i in range(len(self.rows) - 1, -1, -1):
            if self.rows[i].id not in new_ids:
                self.rows_about_to_be_removed.emit(i, i)
                del self.rows[i]
                self.rows_removed.emit(i, i)
        # the remaining ids are a subsequence of new_rows: walk both
        i = 0
        for new in new_rows:
            if i < len(self.rows) and self.rows[i].id == new.id:
                if self.rows[i] != new:
                    self.rows[i] = new
                    self.rows_changed.emit(i, i)
            else:
                self.rows_about_to_be_inserted.emit(i, i)
                self.rows.insert(i, new)
                self.rows_inserted.emit(i, i)
            i += 1

    # ------------------------------------------------------------------ table access
    def row_count(self) -> int:
        return len(self.rows)

    def column_count(self) -> int:
        return len(self.columns)

    def header(self, column: int) -> str:
        return self.columns[column][1]

    def row_index(self, episode_id: int) -> int | None:
        for i, r in enumerate(self.rows):
            if r.id == episode_id:
                return i
        return None

    def value(self, row: EpisodeRow, column: int) -> Any:
        return getattr(row, self.columns[column][0])

    def display(self, row: EpisodeRow, column: int) -> str:
        key = self.columns[column][0]
        v = getattr(row, key)
        if v is None:
            return "-"
        if key == "total_reward":
            return f"{v:g}"
        if key == "size":
            return human_bytes(v)
        return str(v)

    @staticmethod
    def sort_key(row: EpisodeRow, column: int) -> tuple:
        """Orders None first, then by value; ties by episode id."""
        v = getattr(row, COLUMNS[column][0])
        return (v is not None, v if v is not None else 0, row.id)

    @staticmethod
    def matches(row: EpisodeRow, text: str) -> bool:
        """Every whitespace-separated term must match: ``field:value`` (e.g.
        ``status:rec``, ``env:pong``, ``run:2``) tests one field by prefix, a bare term
        is a substring of the environment, status, id, run or seed."""
        for term in text.lower().split():
            key, sep, want = term.partition(":")
            if sep:
                names = {k for k, _ in COLUMNS} | {"episode", "reward"}
                key = {"episode": "id", "reward": "total_reward"}.get(key, key)
                if key not in names:
                    return False
                v = getattr(row, key)
                if not str("" if v is None else v).lower().startswith(want):
                    return False
            else:
                hay = (row.env, row.status, str(row.id), str(row.run), str(row.seed))
                if not any(term in h.lower() for h in hay):
                    return False
        return True

    def view(
        self, *, column: int = 0, descending: bool = False, text: str = ""
    ) -> list[EpisodeRow]:
        """The rows as a table would show them: filtered by ``text``, sorted by ``column``."""
        rows = [r for r in self.rows if self.matches(r, text)]
        return sorted(rows, key=lambda r: self.sort_key(r, column), reverse=descending)


# =============================================================================== HUD
@dataclass(frozen=True)
class HudWarning:
    code: str  # LOG932 (queue), LOG934 (slow flush), DISK_FULL, WRITER_ERROR, FRAMES_DROPPED
    text: str
    severity: str = "warning"  # or "error"


@dataclass(frozen=True)
class HudState:
    recording: bool = False
    fps: float = 0.0
    target_fps: float | None = None
    frame_ms: float = 0.0
    frame_ms_max: float = 0.0
    queue_frames: int = 0
    queue_bound: int = 0
    queue_high_water: int = 0
    frames_written: int = 0
    frames_dropped: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    compression_ratio: float = 0.0
    durability: str | None = None
    preset: str | None = None
    steps_recorded: int = 0
    warnings: tuple[HudWarning, ...] = ()


def _is_disk_full(exc: BaseException | None, text: str) -> bool:
    if exc is not None:
        if type(exc).__name__ == "DiskFull":
            return True
        seen = set()
        e: BaseException | None = exc
        while e is not None and id(e) not in seen:
            seen.add(id(e))
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                return True
            e = e.__cause__ or e.__context__
    return "no space left" in text.lower()


class HudModel:
    """Recording numbers and warnings for the HUD.

    Feed it ``frame_presented()`` once per displayed frame (achieved fps and frame time
    come from these timestamps) and ``update(metrics)`` with ``Recorder.metrics()``
    (``None`` when not recording). Warnings:

    * ``LOG932``: the frame queue is at or above 80% of its bound;
    * ``LOG934``: a flush of the frame writer took more than 250 ms (shown for a while);
    * ``DISK_FULL`` / ``WRITER_ERROR``: recording failed (from ``set_error`` or metrics);
    * ``FRAMES_DROPPED``: the ``drop`` policy dropped frames.

    Signal: ``changed(state)``.
    """

    def __init__(
        self,
        *,
        window: int = 120,
        queue_warn_fraction: float = 0.8,
        slow_flush_ms: float = 250.0,
        hold_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.changed = Signal()
        self._times: deque[float] = deque(maxlen=max(2, window))
        self._queue_warn = queue_warn_fraction
        self._slow_flush_ms = slow_flush_ms
        self._hold = hold_seconds
        self._clock = clock
        self._seen_max_flush = 0.0
        self._slow_flush_until = -math.inf
        self._slow_flush_ms_seen = 0.0
        self._error: tuple[BaseException | None, str] | None = None
        self.target_fps: float | None = None
        self.state = HudState()

    def frame_presented(self, t: float | None = None) -> None:
        self._times.append(self._clock() if t is None else t)

    def reset_frame_times(self) -> None:
        self._times.clear()

    def set_error(self, error: BaseException | str | None) -> None:
        """Record (or clear with ``None``) the error that stopped the recording."""
        if error is None:
            self._error = None
        elif isinstance(error, BaseException):
            self._error = (error, str(error) or type(error).__name__)
        else:
            self._error = (None, str(error))

    def frame_stats(self) -> tuple[float, float, float]:
        """(achieved fps, mean frame time ms, max frame time ms) over the window."""
        t = self._times
        if len(t) < 2:
            return 0.0, 0.0, 0.0
        span = t[-1] - t[0]
        gaps = [b - a for a, b in zip(list(t)[:-1], list(t)[1:], strict=True)]
        fps = (len(t) - 1) / span if span > 0 else 0.0
        return fps, 1000.0 * span / (len(t) - 1), 1000.0 * max(gaps)

    def update(self, metrics=None) -> HudState:
        """Recompute the state from ``Recorder.metrics()`` (or ``None``) and emit it."""
        fps, ms, ms_max = self.frame_stats()
        warnings: list[HudWarning] = []
        now = self._clock()
        kw: dict[str, Any] = {}
        if metrics is not None:
            f = metrics.frames
            kw = dict(
                queue_frames=f.queue_frames,
                queue_bound=getattr(f, "bound_frames", 0),
                queue_high_water=f.high_water_frames,
                frames_written=f.frames_written,
                frames_dropped=f.frames_dropped,
                bytes_in=f.bytes_in,
                bytes_out=f.bytes_out,
                compression_ratio=f.compression_ratio,
                durability=metrics.durability,
                preset=metrics.preset,
                steps_recorded=metrics.steps_recorded,
            )
            fractions = []
            if getattr(f, "bound_frames", 0):
                fractions.append(f.queue_frames / f.bound_frames)
            if getattr(f, "bound_bytes", 0):
                fractions.append(getattr(f, "queue_bytes", 0) / f.bound_bytes)
            if fractions and max(fractions) >= self._queue_warn:
                warnings.append(
                    HudWarning(
                        "LOG932",
                        f"frame queue at {100 * max(fractions):.0f}% of its bound "
                        f"({f.queue_frames}/{getattr(f, 'bound_frames', 0)} frames): "
                        "the writer is falling behind",
                    )
                )
            last = float(getattr(f, "last_flush_ms", 0.0) or 0.0)
            worst = float(getattr(f, "max_flush_ms", 0.0) or 0.0)
            if worst > self._seen_max_flush:
                if worst > self._slow_flush_ms:
                    self._slow_flush_until = now + self._hold
                    self._slow_flush_ms_seen = worst
                self._seen_max_flush = worst
            if last > self._slow_flush_ms:
                self._slow_flush_until = now + self._hold
                self._slow_flush_ms_seen = max(last, self._slow_flush_ms_seen)
            if now < self._slow_flush_until:
                warnings.append(
                    HudWarning(
                        "LOG934",
                        f"slow flush of the frame writer: {self._slow_flush_ms_seen:.0f} ms "
                        f"(over {self._slow_flush_ms:.0f} ms); the disk is slow",
                    )
                )
            if f.frames_dropped:
                warnings.append(
                    HudWarning(
                        "FRAMES_DROPPED", f"{f.frames_dropped} frame(s) dropped (drop policy)"
                    )
                )
            if f.error and self._error is None:
                self._error = (None, f.error)
            sink_error = getattr(metrics.sink, "error", None)
            if sink_error and self._error is None:
                self._error = (None, str(sink_error))
        if self._error is not None:
            exc, text = self._error
            if _is_disk_full(exc, text):
                warnings.append(HudWarning("DISK_FULL", f"disk full: {text}", "error"))
            else:
                warnings.append(HudWarning("WRITER_ERROR", f"recording failed: {text}", "error"))
        self.state = HudState(
            recording=metrics is not None,
            fps=fps,
            target_fps=self.target_fps,
            frame_ms=ms,
            frame_ms_max=ms_max,
            warnings=tuple(warnings),
            **kw,
        )
        self.changed.emit(self.state)
        return self.state

    def lines(self) -> list[str]:
        """The HUD as text rows."""
        s = self.state
        target = f" / {s.target_fps:g}" if s.target_fps else ""
        out = [f"fps {s.fps:5.1f}{target}   frame {s.frame_ms:5.1f} ms (max {s.frame_ms_max:.1f})"]
        if s.recording:
            out += [
                f"queue {s.queue_frames}/{s.queue_bound}   high-water {s.queue_high_water}",
                f"written {s.frames_written}   dropped {s.frames_dropped}   steps {s.steps_recorded}",
                f"on disk {human_bytes(s.bytes_out)}   ratio {s.compression_ratio:.1f}x",
                f"durability {s.durability or '-'}   preset {s.preset or '-'}",
            ]
        else:
            out.append("not recording")
        return out


# =============================================================================== keys
LEFT, RIGHT, UP, DOWN, SPACE = "Left", "Right", "Up", "Down", "Space"
_GLYPH = {LEFT: "←", RIGHT: "→", UP: "↑", DOWN: "↓", SPACE: "Space"}


class KeyState:
    """Keys held now plus keys tapped since the last ``consume()``, so a tap shorter
    than one step is not lost."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._tapped: set[str] = set()

    def press(self, key: str) -> None:
        self._held.add(key)
        self._tapped.add(key)

    def release(self, key: str) -> None:
        self._held.discard(key)

    def clear(self) -> None:
        self._held.clear()
        self._tapped.clear()

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def consume(self) -> frozenset[str]:
        keys = frozenset(self._held | self._tapped)
        self._tapped.clear()
        return keys


class KeyMapper:
    """Maps the set of pressed keys to an action. Use ``KeyMapper.for_env(env)``.

    ``action(keys)`` returns ``None`` when no step should happen (turn-based games with
    no key pressed); ``realtime`` mappers always return an action (a no-op when idle).
    """

    family = "none"
    realtime = False

    def action(self, keys: Iterable[str]) -> Any:
        return None

    def bindings(self) -> list[tuple[str, str]]:
        """(keys, effect) pairs for display."""
        return []

    def bindings_text(self) -> str:
        rows = self.bindings()
        if not rows:
            return "no keyboard control for this environment"
        return "\n".join(f"{k:<12} {v}" for k, v in rows)

    @staticmethod
    def for_env(env) -> KeyMapper:
        """The mapper for an environment (Atari, CarRacing, toy-text, classic control)."""
        import numpy as np

        unwrapped = getattr(env, "unwrapped", env)
        env_id = getattr(getattr(env, "spec", None), "id", "") or ""
        name = env_id.split("/")[-1].split("-")[0]
        meanings = getattr(unwrapped, "get_action_meanings", None)
        if callable(meanings) and env_id.startswith("ALE/"):
            return AtariKeyMapper(meanings())
        if name == "CarRacing":
            return CarRacingKeyMapper(continuous=getattr(unwrapped, "continuous", True))
        if name in _DISCRETE_TABLES:
            table, noop = _DISCRETE_TABLES[name]
            return DiscreteKeyMapper(table, noop=noop)
        space = env.action_space
        n = getattr(space, "n", None)
        if n is not None and int(n) <= 10:
            return DiscreteKeyMapper({str(i): (i, f"action {i}") for i in range(int(n))})
        shape = getattr(space, "shape", None)
        if shape and len(shape) == 1 and hasattr(space, "low"):
            return BoxKeyMapper(np.asarray(space.low), np.asarray(space.high))
        return KeyMapper()


class AtariKeyMapper(KeyMapper):
    """Arrows and Space (FIRE) for ALE games, from ``get_action_meanings()``; combinations
    follow ALE's names (``UPRIGHTFIRE``). A combination the game lacks falls back to the
    closest one it has (dropping the vertical part first, then horizontal, then FIRE)."""

    family = "atari"
    realtime = True

    def __init__(self, meanings: Sequence[str]):
        self.meanings = list(meanings)
        self._index = {m: i for i, m in enumerate(self.meanings)}
        self.noop = self._index.get("NOOP", 0)

    def action_name(self, keys: Iterable[str]) -> str:
        k = set(keys)
        v = None if (UP in k) == (DOWN in k) else ("UP" if UP in k else "DOWN")
        h = None if (LEFT in k) == (RIGHT in k) else ("LEFT" if LEFT in k else "RIGHT")
        f = "FIRE" if SPACE in k else None
        for cv, ch, cf in (
            (v, h, f),
            (None, h, f),
            (v, None, f),
            (v, h, None),
            (None, None, f),
            (None, h, None),
            (v, None, None),
        ):
            name = "".join(p for p in (cv, ch, cf) if p) or "NOOP"
            if name in self._index:
                return name
        return self.meanings[self.noop]

    def action(self, keys: Iterable[str]) -> int:
        return self._index[self.action_name(keys)]

    def bindings(self) -> list[tuple[str, str]]:
        out = []
        for m in self.meanings:
            if m == "NOOP":
                continue
            keys = []
            rest = m
            for part, key in (("UP", UP), ("DOWN", DOWN), ("RIGHT", RIGHT), ("LEFT", LEFT)):
                if rest.startswith(part):
                    keys.append(_GLYPH[key])
                    rest = rest[len(part) :]
            if rest == "FIRE":
                keys.append(_GLYPH[SPACE])
            elif rest:
                continue
            out.append(("+".join(keys), m))
        return out


class CarRacingKeyMapper(KeyMapper):
    """CarRacing: ←/→ steer, ↑ gas, ↓ brake (a float32 ``[steer, gas, brake]`` action);
    the discrete variant uses its five actions."""

    family = "car_racing"
    realtime = True

    def __init__(self, *, continuous: bool = True, brake: float = 0.8):
        self.continuous = continuous
        self.brake = brake

    def action(self, keys: Iterable[str]):
        import numpy as np

        k = set(keys)
        steer = (1.0 if RIGHT in k else 0.0) - (1.0 if LEFT in k else 0.0)
        if self.continuous:
            return np.array(
                [steer, 1.0 if UP in k else 0.0, self.brake if DOWN in k else 0.0],
                dtype=np.float32,
            )
        # discrete: 0 nothing, 1 right, 2 left, 3 gas, 4 brake
        if DOWN in k:
            return 4
        if steer > 0:
            return 1
        if steer < 0:
            return 2
        return 3 if UP in k else 0

    def bindings(self) -> list[tuple[str, str]]:
        return [("←/→", "steer"), ("↑", "gas"), ("↓", "brake")]


class DiscreteKeyMapper(KeyMapper):
    """A table ``key -> (action, description)``. Without ``noop`` a step happens only
    while a key is pressed (turn-based); with one the game runs in real time."""

    family = "discrete"

    def __init__(self, table: dict[str, tuple[int, str]], *, noop: int | None = None):
        self.table = dict(table)
        self.noop = noop
        self.realtime = noop is not None

    def action(self, keys: Iterable[str]) -> int | None:
        k = set(keys)
        for key, (a, _desc) in self.table.items():  # table order = priority
            if key in k:
                return a
        return self.noop

    def bindings(self) -> list[tuple[str, str]]:
        return [(_GLYPH.get(k, k), d) for k, (_a, d) in self.table.items()]


class BoxKeyMapper(KeyMapper):
    """A 1-D Box (Pendulum, MountainCarContinuous): ← low, → high on the first
    dimension, zero otherwise."""

    family = "box"
    realtime = True

    def __init__(self, low, high):
        import numpy as np

        self.low = np.asarray(low, dtype=np.float32)
        self.high = np.asarray(high, dtype=np.float32)

    def action(self, keys: Iterable[str]):
        import numpy as np

        k = set(keys)
        a = np.clip(np.zeros_like(self.low), self.low, self.high)
        if LEFT in k and RIGHT not in k:
            a[0] = self.low[0]
        elif RIGHT in k and LEFT not in k:
            a[0] = self.high[0]
        return a

    def bindings(self) -> list[tuple[str, str]]:
        return [("←", f"{self.low[0]:g}"), ("→", f"{self.high[0]:g}")]


_DISCRETE_TABLES: dict[str, tuple[dict[str, tuple[int, str]], int | None]] = {
    "FrozenLake": (
        {LEFT: (0, "left"), DOWN: (1, "down"), RIGHT: (2, "right"), UP: (3, "up")},
        None,
    ),
    "CliffWalking": (
        {UP: (0, "up"), RIGHT: (1, "right"), DOWN: (2, "down"), LEFT: (3, "left")},
        None,
    ),
    "Taxi": (
        {
            DOWN: (0, "south"),
            UP: (1, "north"),
            RIGHT: (2, "east"),
            LEFT: (3, "west"),
            SPACE: (4, "pick up"),
            "D": (5, "drop off"),
        },
        None,
    ),
    "CartPole": ({LEFT: (0, "push left"), RIGHT: (1, "push right")}, None),
    "MountainCar": ({LEFT: (0, "accelerate left"), RIGHT: (2, "accelerate right")}, 1),
    "Acrobot": ({LEFT: (0, "torque -1"), RIGHT: (2, "torque +1")}, 1),
    "LunarLander": (
        {UP: (2, "main engine"), LEFT: (1, "left engine"), RIGHT: (3, "right engine")},
        0,
    ),
}


# =============================================================================== play session
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


def _default_env_factory(env_id: str):
    from framestore.envs import make_env

    return make_env(env_id)


def _lite_available() -> bool:
    try:
        import framestore

        return hasattr(framestore, "LiteRecorder")
    except ImportError:
        return False


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
    thread and an ``error`` event says why.
    """

    def __init__(
        self,
        env_id: str,
        store=None,
        *,
        seed: int = 0,
        preset: str | None = None,
        lite: bool = False,
        env_factory: Callable[[str], Any] | None = None,
        max_episode_steps: int | None = None,
    ):
        self.env_id = env_id
        self.store = store
        self.base_seed = int(seed)
        self.preset = preset
        self._lite_mode = bool(lite)
        self._env_factory = env_factory or _default_env_factory
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
        self._recorder = None  # set on the I/O thread once open
        self._recorder_opening = False
        self._recorder_error: BaseException | None = None
        self._episode_open = False  # a recorded episode is in progress
        self._rearm = False  # the last reset happened while the recorder was opening
        self._lite = None
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
    def lite_supported(self) -> bool:
        return _lite_available()

    @property
    def armed(self) -> bool:
        """Recording is on and ready (direct mode: the recorder is open)."""
        if not self._recording:
            return False
        return self._lite is not None if self._lite_mode else self._recorder is not None

    @property
    def recorder(self):
        return self._recorder

    @property
    def lite_steps(self) -> int:
        return self._lite.steps if self._lite is not None else 0

    def metrics(self):
        rec = self._recorder
        if rec is None:
            return None
        try:
            return rec.metrics()
        except Exception:
            return None

    def poll_events(self) -> list[SessionEvent]:
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
        if on and not self.lite_supported:
            raise ValueError("this framestore has no telemetry-lite (LiteRecorder)")
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
            from framestore import LiteRecorder

            kw: dict[str, Any] = {}
            try:  # the ring's bounds come from the preset (host-scaled), like the writer's
                from framestore.settings import resolve

                s = resolve(self.env_id, preset=self.preset).settings
                kw = dict(max_steps=s.lite_steps, max_bytes=s.lite_bytes)
            except Exception:  # noqa: BLE001 - fall back to LiteRecorder's defaults
                pass
            self._lite = LiteRecorder(action_space=self.env.action_space, **kw)

    def _recorder_kwargs(self) -> dict[str, Any]:
        return dict(
            action_space=self.env.action_space,
            preset=self.preset,
            config={"source": "gui", "seed": self.base_seed, "lite": self._lite_mode},
            on_error=self._on_background_error,
            render_fps=self.render_fps,
        )

    def _make_recorder(self):
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

    def _close_recorder(self, rec, quiet: bool = False) -> None:
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
        if hasattr(action, "item") and getattr(action, "ndim", 1) == 0:
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
        if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
            v = v.item()
        elif hasattr(v, "tolist"):
            v = v.tolist()
        out[str(k)] = v
    return out
