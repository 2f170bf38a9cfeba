"""``PlaybackClock``: where a replay is and how it moves (fps, speed, loop, reverse,
follow-live)."""

from __future__ import annotations

import math

from ._signal import Signal

__all__ = ["SPEEDS", "SPEED_MAX", "SPEED_MIN", "PlaybackClock"]

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
