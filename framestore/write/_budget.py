"""``QueueBudget``: the bound on frames accepted and not yet written, for both placements.

The producer counts what it places (``take``); the writer side counts what it wrote
(``released``: read from the thread placement's writer, or from the storage process's
shared counters). Each count has one writer, so the producer checks for room without a
lock; only a producer that finds the queue full waits (``wait_for_room``), through the
placement's ``Waiter`` (a condition the writer notifies, or a poll of the shared
counters). The budget also keeps what the HUD shows of the queue (high-water marks,
blocked time, drops) and logs LOG932/LOG931 for it (``log_state``, once per chunk).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from telemetry import logcodes

from ..errors import QueueFull

__all__ = ["QueueBudget", "Waiter"]

log = logging.getLogger(logcodes.LOGGER_NAME)


class Waiter(Protocol):
    """How a placement waits for the writer to release frames."""

    def wait(self, seconds: float) -> None:
        """Sleep until something was released or ``seconds`` passed."""
        ...

    def raise_if_failed(self) -> None:
        """Raise the writer's error, if it failed."""
        ...


class QueueBudget:
    """Frames and bytes placed and not yet written, bounded.

    Args:
        max_frames, max_bytes: the bounds (``queue_frames``, ``queue_bytes``).
        policy: ``block`` or ``drop`` (what the caller does when ``fits`` says no).
        block_timeout: seconds ``wait_for_room`` waits before ``QueueFull``.
        released: the writer side's ``(frames, bytes)`` written so far.
    """

    def __init__(
        self,
        max_frames: int,
        max_bytes: int,
        policy: str,
        block_timeout: float,
        released: Callable[[], tuple[int, int]],
    ):
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.policy = policy
        self.block_timeout = block_timeout
        self._released = released
        self.frames_in = 0
        self.bytes_in = 0
        self.dropped = 0
        self.high_water_frames = 0
        self.high_water_bytes = 0
        self.blocked_seconds = 0.0
        self._warned = False
        self._last_snapshot = time.monotonic()

    def queued(self) -> tuple[int, int]:
        """``(frames, bytes)`` placed and not yet written."""
        frames_out, bytes_out = self._released()
        return self.frames_in - frames_out, self.bytes_in - bytes_out

    def fits(self, count: int, nbytes: int) -> bool:
        frames_out, bytes_out = self._released()  # queued(), inlined: once per frame
        return (
            self.frames_in - frames_out + count <= self.max_frames
            and self.bytes_in - bytes_out + nbytes <= self.max_bytes
        )

    def take(self, count: int, nbytes: int) -> None:
        """Count ``count`` frames of ``nbytes`` in total as placed."""
        self.frames_in += count
        self.bytes_in += nbytes
        frames_out, bytes_out = self._released()
        frames, queued_bytes = self.frames_in - frames_out, self.bytes_in - bytes_out
        if frames > self.high_water_frames:
            self.high_water_frames = frames
        if queued_bytes > self.high_water_bytes:
            self.high_water_bytes = queued_bytes

    def give_back(self, count: int, nbytes: int) -> None:
        """Undo a ``take`` of frames that never reached the writer."""
        self.frames_in -= count
        self.bytes_in -= nbytes

    def wait_for_room(
        self,
        count: int,
        nbytes: int,
        waiter: Waiter,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        """Wait until ``count`` frames of ``nbytes`` fit (and ``ready()``, if given: a
        free buffer); ``QueueFull`` after ``block_timeout``. The time counts as blocked."""
        start = time.monotonic()
        deadline = start + self.block_timeout
        try:
            while not self.fits(count, nbytes) or (ready is not None and not ready()):
                waiter.raise_if_failed()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    frames, queued_bytes = self.queued()
                    raise QueueFull(
                        "frame queue",
                        self.block_timeout,
                        f"{frames}/{self.max_frames} frames, {queued_bytes}/{self.max_bytes} bytes",
                    )
                waiter.wait(remaining)
        finally:
            self.blocked_seconds += time.monotonic() - start

    def log_state(self) -> None:
        """LOG932 once per crossing of the warning level (re-armed below it), LOG931
        every five seconds at most. Called once per chunk, not per frame."""
        frames, queued_bytes = self.queued()
        fill = max(frames / self.max_frames, queued_bytes / self.max_bytes)
        if fill >= logcodes.QUEUE_WARN_FRACTION:
            if not self._warned:
                self._warned = True
                log.warning(
                    "%s queue=frames queue_depth=%d queue_bytes=%d bound=%d bound_bytes=%d policy=%s",
                    logcodes.QUEUE_HIGH,
                    frames,
                    queued_bytes,
                    self.max_frames,
                    self.max_bytes,
                    self.policy,
                )
        elif fill < logcodes.QUEUE_REARM_FRACTION:
            self._warned = False
        now = time.monotonic()
        if now - self._last_snapshot >= 5.0:
            self._last_snapshot = now
            log.info(
                "%s queue=frames queue_depth=%d queue_bytes=%d high_water=%d bound=%d "
                "frames_written=%d frames_dropped=%d",
                logcodes.QUEUE_SNAPSHOT,
                frames,
                queued_bytes,
                self.high_water_frames,
                self.max_frames,
                self._released()[0],
                self.dropped,
            )
