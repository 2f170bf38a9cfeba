"""``HudModel``: what the recording HUD shows (fps, queue, bytes, durability) and its
warnings, computed from ``Recorder.metrics()``."""

from __future__ import annotations

import errno
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from framestore import DiskFull, RecorderMetrics
from tools.text import human_bytes

from ._signal import Signal

__all__ = ["HudModel", "HudState", "HudWarning"]


@dataclass(frozen=True)
class HudWarning:
    """One warning line of the HUD."""

    code: str  # LOG932 (queue), LOG934 (slow flush), DISK_FULL, WRITER_ERROR, FRAMES_DROPPED
    text: str
    severity: str = "warning"  # or "error"


@dataclass(frozen=True)
class HudState:
    """Everything the HUD shows at one moment (numbers are zero when not recording)."""

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


#: What the HUD says when only ``SinkMetrics.failed`` tells that the SQLite sink died
#: (the exception itself reaches the HUD through ``set_error``).
SINK_FAILED_TEXT = "the telemetry sink (SQLite writer) failed"


def _is_disk_full(exc: BaseException | None, text: str) -> bool:
    """Whether the failure (or any error it was raised from) is a full disk."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFull) or (isinstance(e, OSError) and e.errno == errno.ENOSPC):
            return True
        e = e.__cause__ or e.__context__
    return "no space left" in text.lower()


def _recorder_numbers(metrics: RecorderMetrics) -> dict[str, Any]:
    """The ``HudState`` fields that come straight from ``Recorder.metrics()``."""
    f = metrics.frames
    return dict(
        queue_frames=f.queue_frames,
        queue_bound=f.bound_frames,
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


class HudModel:
    """Recording numbers and warnings for the HUD.

    Feed it ``frame_presented()`` once per displayed frame (achieved fps and frame time
    come from these timestamps) and ``update(metrics)`` with ``Recorder.metrics()``
    (``None`` when not recording). Warnings:

    * ``LOG932``: the frame queue is at or above 80% of its bound (frames or bytes);
    * ``LOG934``: a flush of the frame writer took more than 250 ms (shown for a while);
    * ``DISK_FULL`` / ``WRITER_ERROR``: recording failed (from ``set_error``, the frame
      writer's ``error`` or the sink's ``failed`` in the metrics);
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
        """Note that a frame was shown (now, or at monotonic time ``t``)."""
        self._times.append(self._clock() if t is None else t)

    def reset_frame_times(self) -> None:
        """Forget the frame timestamps (after a pause, so it does not count as a slow frame)."""
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

    def update(self, metrics: RecorderMetrics | None = None) -> HudState:
        """Recompute the state from ``Recorder.metrics()`` (or ``None``) and emit it."""
        fps, ms, ms_max = self.frame_stats()
        warnings: list[HudWarning] = []
        numbers: dict[str, Any] = {}
        if metrics is not None:
            numbers = _recorder_numbers(metrics)
            warnings += self._queue_warnings(metrics)
            warnings += self._flush_warnings(metrics)
            if metrics.frames.frames_dropped:
                n = metrics.frames.frames_dropped
                warnings.append(HudWarning("FRAMES_DROPPED", f"{n} frame(s) dropped (drop policy)"))
            self._note_background_error(metrics)
        warnings += self._error_warnings()
        self.state = HudState(
            recording=metrics is not None,
            fps=fps,
            target_fps=self.target_fps,
            frame_ms=ms,
            frame_ms_max=ms_max,
            warnings=tuple(warnings),
            **numbers,
        )
        self.changed.emit(self.state)
        return self.state

    def _queue_warnings(self, metrics: RecorderMetrics) -> list[HudWarning]:
        """``LOG932`` when the frame queue fills past its warning fraction."""
        f = metrics.frames
        fractions = []
        if f.bound_frames:
            fractions.append(f.queue_frames / f.bound_frames)
        if f.bound_bytes:
            fractions.append(f.queue_bytes / f.bound_bytes)
        if not fractions or max(fractions) < self._queue_warn:
            return []
        text = (
            f"frame queue at {100 * max(fractions):.0f}% of its bound "
            f"({f.queue_frames}/{f.bound_frames} frames): the writer is falling behind"
        )
        return [HudWarning("LOG932", text)]

    def _flush_warnings(self, metrics: RecorderMetrics) -> list[HudWarning]:
        """``LOG934`` for ``hold_seconds`` after the frame writer reports a slow flush
        (a new maximum or a slow last flush)."""
        f = metrics.frames
        now = self._clock()
        if f.max_flush_ms > self._seen_max_flush:
            if f.max_flush_ms > self._slow_flush_ms:
                self._slow_flush_until = now + self._hold
                self._slow_flush_ms_seen = f.max_flush_ms
            self._seen_max_flush = f.max_flush_ms
        if f.last_flush_ms > self._slow_flush_ms:
            self._slow_flush_until = now + self._hold
            self._slow_flush_ms_seen = max(f.last_flush_ms, self._slow_flush_ms_seen)
        if now >= self._slow_flush_until:
            return []
        text = (
            f"slow flush of the frame writer: {self._slow_flush_ms_seen:.0f} ms "
            f"(over {self._slow_flush_ms:.0f} ms); the disk is slow"
        )
        return [HudWarning("LOG934", text)]

    def _note_background_error(self, metrics: RecorderMetrics) -> None:
        """Keep the first failure the metrics report (frame writer or SQLite sink)."""
        if self._error is not None:
            return
        if metrics.frames.error:
            self._error = (None, metrics.frames.error)
        elif metrics.sink.failed:
            self._error = (None, SINK_FAILED_TEXT)

    def _error_warnings(self) -> list[HudWarning]:
        if self._error is None:
            return []
        exc, text = self._error
        if _is_disk_full(exc, text):
            return [HudWarning("DISK_FULL", f"disk full: {text}", "error")]
        return [HudWarning("WRITER_ERROR", f"recording failed: {text}", "error")]

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
