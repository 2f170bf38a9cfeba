"""``TelemetryDBSink``: the one thread that writes recorded steps to SQLite.

The producer calls :meth:`TelemetryDBSink.offer` (usually through the hub), which only
appends to a bounded queue. The ``telemetry-db-sink`` thread owns its own connection and
applies events in order. Everything pending (steps and run/episode rows) is written in
ONE transaction per batch, so the database always holds a prefix of the event stream.
Before a batch commits, the ``resolve_frames`` hook is called with the batch's frame
pointers; it blocks until those frames are durable and returns their locations, so a
step row never becomes visible before its frame's bytes are written.

A batch commits when ``batch_size`` steps are pending, when the oldest pending event is
``commit_interval`` seconds old, and at ``EpisodeEnded`` (unless it says
``commit_now=False``), ``RunEnded`` and ``Barrier``.

A failure on the sink thread is never swallowed: it is stored, passed to ``on_error``,
and raised as :class:`~telemetry.errors.SinkError` (chained to the cause) by the next
:meth:`~TelemetryDBSink.offer`, :meth:`~TelemetryDBSink.flush` or
:meth:`~TelemetryDBSink.close`.

Log lines: see :mod:`telemetry.logcodes` (LOG931-LOG934, ``queue=db``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import logcodes
from ._insert import checkpoint_passive, write_events
from .db import StorageProfile, _open, get_profile, warn_if_lossy
from .errors import Closed, FrameStoreError, InvalidInput, QueueFull, SinkError
from .events import Barrier, EpisodeEnded, Event, RunEnded, Step, StepBatch

FrameLocation = tuple[int, int, int]
ResolveFrames = Callable[[list[object | None]], Sequence[FrameLocation | None]]

# Events after which everything pending is committed at once.
_COMMIT_NOW = (EpisodeEnded, RunEnded, Barrier)


def _commits_now(event: Event) -> bool:
    if type(event) is EpisodeEnded:
        return event.commit_now
    return isinstance(event, _COMMIT_NOW)


def _rows(event: Event) -> int:
    """Step rows an event writes: a ``StepBatch`` counts as its rows (queue bounds and
    batch sizes are in rows), a ``Step`` as one, other events as none."""
    kind = type(event)
    if kind is Step:
        return 1
    if kind is StepBatch:
        return len(event)
    return 0


@dataclass(frozen=True, slots=True)
class SinkMetrics:
    """A snapshot of the sink's counters.

    Attributes:
        queue_depth: Events waiting in the queue now.
        high_water: Largest queue depth seen.
        bound: ``max_queue``.
        policy: ``block`` or ``drop``.
        steps_committed: Step rows committed.
        steps_dropped: Step events dropped by the ``drop`` policy.
        events_committed: All events committed (steps and run/episode rows).
        batches: Transactions committed.
        last_flush_ms: Duration of the last flush (resolve wait + commit).
        max_flush_ms: Longest flush.
        checkpoints: ``wal_checkpoint(PASSIVE)`` calls made.
        failed: True once the sink thread has failed.
    """

    queue_depth: int
    high_water: int
    bound: int
    policy: str
    steps_committed: int
    steps_dropped: int
    events_committed: int
    batches: int
    last_flush_ms: float
    max_flush_ms: float
    checkpoints: int
    failed: bool


class TelemetryDBSink:
    """Writes telemetry events to a store's SQLite database on its own thread.

    Args:
        db_path: Path of ``framestore.db`` (created and migrated if needed).
        profile: Storage profile name or object (see ``telemetry.db.PROFILES``).
        batch_size: Steps per transaction, at most.
        checkpoint_interval: Committed steps between ``PRAGMA wal_checkpoint(PASSIVE)``.
        max_queue: Queue bound, in events (a ``StepBatch`` counts as its rows).
        policy: ``block``: a full queue makes ``offer`` wait up to ``block_timeout``, then
            raise ``QueueFull``. ``drop``: a full queue drops Step events (counted in
            ``steps_dropped``); run, episode and barrier events are never dropped and may
            exceed the bound by the few that are in flight.
        block_timeout: Seconds ``offer`` waits under ``block``.
        commit_interval: Most seconds an event waits before its batch is committed.
        resolve_frames: Hook called on the sink thread before each commit with the
            batch's ``Step.frame`` pointers; returns ``(segment, offset, slot)`` or
            ``None`` for each. May block until the frames are durable. ``None``: no
            frame columns are filled.
        on_error: Called on the sink thread with the exception when the sink fails.
        on_committed: Called on the sink thread after each commit with the queue weight
            it retired (step rows, plus one per other event; barriers not counted).
        logger: Logger for LOG931-LOG934 (default: the ``telemetry`` logger).
        snapshot_interval: Seconds between LOG931 queue snapshots.
        slow_flush_ms: A flush slower than this is logged as LOG934.

    Raises:
        InvalidInput: Bad arguments or unknown profile.
        NotAStore, SchemaTooNew: The database cannot be used (raised by the constructor,
            which waits for the sink thread to open it).
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        profile: str | StorageProfile = "balanced",
        batch_size: int = 128,
        checkpoint_interval: int = 2048,
        max_queue: int = 4096,
        policy: Literal["block", "drop"] = "block",
        block_timeout: float = 10.0,
        commit_interval: float = 0.5,
        resolve_frames: ResolveFrames | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
        on_committed: Callable[[int], Any] | None = None,
        logger: logging.Logger | None = None,
        snapshot_interval: float = 5.0,
        slow_flush_ms: float = logcodes.SLOW_FLUSH_MS,
    ):
        _check_args(
            policy,
            positive_ints={
                "batch_size": batch_size,
                "checkpoint_interval": checkpoint_interval,
                "max_queue": max_queue,
            },
            positive={
                "block_timeout": block_timeout,
                "commit_interval": commit_interval,
                "snapshot_interval": snapshot_interval,
            },
        )
        self._profile = get_profile(profile)
        warn_if_lossy(self._profile)
        self.db_path = os.fspath(db_path)
        self.batch_size = batch_size
        self.checkpoint_interval = checkpoint_interval
        self.max_queue = max_queue
        self.policy = policy
        self.block_timeout = float(block_timeout)
        self.commit_interval = float(commit_interval)
        self.snapshot_interval = float(snapshot_interval)
        self.slow_flush_ms = float(slow_flush_ms)
        self._resolve = resolve_frames
        self._on_error = on_error
        self._on_committed = on_committed
        self._log = logger or logging.getLogger(logcodes.LOGGER_NAME)

        self._queue: deque[Event] = deque()
        self._depth = 0  # queued step rows (a StepBatch counts its rows), plus other events
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._warn_level = max(1, int(max_queue * logcodes.QUEUE_WARN_FRACTION))
        self._rearm_level = int(max_queue * logcodes.QUEUE_REARM_FRACTION)
        self._warn_armed = True

        self._high_water = 0
        self._steps_committed = 0
        self._steps_dropped = 0
        self._events_committed = 0
        self._batches = 0
        self._last_flush_ms = 0.0
        self._max_flush_ms = 0.0
        self._checkpoints = 0
        self._steps_since_checkpoint = 0
        self._pending: list[Event] = []
        self._error: BaseException | None = None
        self._error_reported = False
        self._closing = False
        self._closed = False
        self._ready = threading.Event()
        self._open_error: BaseException | None = None

        self._thread = threading.Thread(target=self._run, name="telemetry-db-sink", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._open_error is not None:
            self._thread.join()
            self._closed = True
            err = self._open_error
            if isinstance(err, FrameStoreError):
                raise err
            raise SinkError(f"telemetry sink could not open {self.db_path}: {err}") from err

    # ------------------------------------------------------------------ producer side

    def offer(self, event: Event, timeout: float | None = None) -> bool:
        """Queue ``event`` for the sink thread.

        Args:
            event: A telemetry event.
            timeout: Seconds to wait for space under the ``block`` policy (``None``:
                ``block_timeout``).

        Returns:
            True if queued; False if a Step was dropped under the ``drop`` policy.

        Raises:
            QueueFull: ``block`` policy and the queue stayed full for ``timeout``.
            SinkError: The sink thread has failed (chained to the cause).
            Closed: The sink is closing or closed.
        """
        warn_depth = 0
        with self._lock:
            self._check_open()
            queue = self._queue
            rows = _rows(event)
            if self._depth >= self.max_queue:
                if self.policy == "drop":
                    if rows:
                        self._steps_dropped += rows
                        return False
                else:
                    wait = self.block_timeout if timeout is None else timeout
                    deadline = time.monotonic() + wait
                    while self._depth >= self.max_queue:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise QueueFull(
                                "telemetry DB queue",
                                wait,
                                f"{self._depth}/{self.max_queue} events, "
                                f"last flush {self._last_flush_ms:.0f} ms",
                            )
                        self._not_full.wait(remaining)
                        self._check_open()
            queue.append(event)
            self._depth += max(rows, 1)
            depth = self._depth
            if depth > self._high_water:
                self._high_water = depth
            if self._warn_armed and depth >= self._warn_level:
                self._warn_armed = False
                warn_depth = depth
            self._not_empty.notify()
        if warn_depth:
            # Once per crossing (re-armed below QUEUE_REARM_FRACTION), so rare enough
            # to log on the producer thread, where the crossing happens.
            self._log.warning(
                "%s queue=db queue_depth=%d bound=%d policy=%s",
                logcodes.QUEUE_HIGH,
                warn_depth,
                self.max_queue,
                self.policy,
            )
        return True

    def flush(self, timeout: float | None = None) -> None:
        """Commit everything offered so far and wait until it is committed.

        Args:
            timeout: Most seconds to wait in total (``None``: no limit for the commit;
                ``block_timeout`` for queue space).

        Raises:
            QueueFull: The barrier could not be queued, or was not committed, in time.
            SinkError: The sink thread has failed.
            Closed: The sink is closed.
        """
        start = time.monotonic()
        barrier = Barrier(threading.Event())
        self.offer(barrier, timeout=timeout)
        remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        if not barrier.done.wait(remaining):
            raise QueueFull("telemetry DB sink", timeout or 0.0, "flush was not committed in time")
        if barrier.error is not None:
            with self._lock:
                self._error_reported = True
            raise SinkError(f"telemetry sink failed: {barrier.error!r}") from barrier.error

    def close(self, timeout: float | None = None) -> None:
        """Drain the queue, commit, checkpoint, close the connection and join the thread.

        Idempotent. Raises the sink's error if it failed and the error has not been
        raised to the caller yet.

        Args:
            timeout: Most seconds to wait for the thread (``None``: until drained).

        Raises:
            SinkError: The sink thread failed, or did not finish within ``timeout``.
        """
        with self._lock:
            self._closing = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
        if threading.current_thread() is self._thread:
            # Called from on_error or the resolve hook: the thread cannot join itself;
            # it finishes on its own now that closing is set.
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise SinkError(
                f"telemetry sink did not finish within {timeout}s "
                f"({len(self._queue)} events still queued)"
            )
        first_close = not self._closed
        self._closed = True
        with self._lock:
            error, unreported = self._error, not self._error_reported
            self._error_reported = True
        if error is not None and unreported:
            raise SinkError(f"telemetry sink failed: {error!r}") from error
        if first_close and self._steps_dropped:
            self._log.warning(
                "telemetry sink dropped %d steps (policy=drop, bound=%d)",
                self._steps_dropped,
                self.max_queue,
            )

    def set_batch_size(self, batch_size: int) -> None:
        """Change the rows per transaction while running (a recorder of N interleaved
        episodes commits N times as many rows, so each commit still finds full chunks)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size

    def metrics(self) -> SinkMetrics:
        """Return a snapshot of the sink's counters."""
        with self._lock:
            return SinkMetrics(
                queue_depth=self._depth,
                high_water=self._high_water,
                bound=self.max_queue,
                policy=self.policy,
                steps_committed=self._steps_committed,
                steps_dropped=self._steps_dropped,
                events_committed=self._events_committed,
                batches=self._batches,
                last_flush_ms=self._last_flush_ms,
                max_flush_ms=self._max_flush_ms,
                checkpoints=self._checkpoints,
                failed=self._error is not None,
            )

    @property
    def profile(self) -> StorageProfile:
        """The storage profile the sink's connection uses."""
        return self._profile

    def __enter__(self) -> TelemetryDBSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self):
        if not getattr(self, "_closed", True):
            import warnings

            warnings.warn(
                "TelemetryDBSink was not closed; call close() or use it as a context manager",
                ResourceWarning,
                stacklevel=2,
            )

    def _check_open(self) -> None:
        # Called with the lock held. After close() the sink is simply closed; until
        # then a failure wins over "closing" so the producer learns why.
        if self._closed:
            raise Closed("telemetry DB sink")
        if self._error is not None:
            self._error_reported = True
            raise SinkError(f"telemetry sink failed: {self._error!r}") from self._error
        if self._closing:
            raise Closed("telemetry DB sink")

    # ------------------------------------------------------------------ sink thread

    def _run(self) -> None:
        try:
            self._db = _open(self.db_path, self._profile, readonly=False)
        except BaseException as exc:
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop()
        except BaseException as exc:
            self._fail(exc)
        finally:
            try:
                self._db.close()
            except Exception:
                self._log.exception("closing the telemetry sink connection failed")

    def _loop(self) -> None:
        queue = self._queue
        oldest: float | None = None  # monotonic time the oldest pending event arrived
        pending_steps = 0
        next_snapshot = time.monotonic() + self.snapshot_interval
        while True:
            with self._lock:
                while not queue and not self._closing:
                    now = time.monotonic()
                    wake = next_snapshot
                    if oldest is not None:
                        wake = min(wake, oldest + self.commit_interval)
                    if wake <= now:
                        break
                    self._not_empty.wait(wake - now)
                taken = self._take(queue)
                finished = self._closing and not queue
                if self._depth < self._rearm_level:
                    self._warn_armed = True
                if taken:
                    self._not_full.notify_all()
            now = time.monotonic()
            for event in taken:
                self._pending.append(event)
                if oldest is None:
                    oldest = now
                pending_steps += _rows(event)
                if pending_steps >= self.batch_size or _commits_now(event):
                    self._commit()
                    oldest, pending_steps = None, 0
            now = time.monotonic()
            if oldest is not None and (finished or now - oldest >= self.commit_interval):
                self._commit()
                oldest, pending_steps = None, 0
            if now >= next_snapshot:
                self._snapshot()
                next_snapshot = now + self.snapshot_interval
            if finished:
                self._checkpoint()
                return

    def _commit(self) -> None:
        pending = self._pending
        steps = [e for e in pending if type(e) is Step or type(e) is StepBatch]
        if steps or any(type(e) is not Barrier for e in pending):
            t0 = time.perf_counter()
            locations = self._resolve_frames(steps)
            t1 = time.perf_counter()
            self._write(pending, locations)
            t2 = time.perf_counter()
            rows = sum(_rows(e) for e in steps)
            self._record_flush(rows, len(pending), (t1 - t0) * 1e3, (t2 - t1) * 1e3)
            if self._on_committed is not None:
                self._on_committed(sum(max(_rows(e), 1) for e in pending if type(e) is not Barrier))
        self._pending = []
        for event in pending:
            if type(event) is Barrier:
                event.done.set()

    def _take(self, queue: deque[Event]) -> list[Event]:
        """Up to ``batch_size`` rows' worth of events off the queue (lock held)."""
        taken: list[Event] = []
        rows = 0
        while queue and rows < self.batch_size:
            event = queue.popleft()
            weight = max(_rows(event), 1)
            self._depth -= weight
            rows += weight
            taken.append(event)
        return taken

    def _resolve_frames(self, steps: list[Step | StepBatch]) -> Sequence[FrameLocation | None]:
        if not steps:
            return []
        frames: list[object | None] = []
        for e in steps:
            if type(e) is Step:
                frames.append(e.frame)
                # a step's frames of other streams follow its own (write_events' order)
                frames.extend(sf.frame for sf in e.streams)
            else:
                frames.extend(e.frames)
        if self._resolve is None:
            return [None] * len(frames)
        locations = self._resolve(frames)
        if len(locations) != len(frames):
            raise SinkError(
                f"resolve_frames returned {len(locations)} locations for {len(frames)} frames"
            )
        return locations

    def _write(self, pending: list[Event], locations: Sequence[FrameLocation | None]) -> None:
        with self._db.atomic():
            write_events(self._db.conn, pending, locations)

    def _record_flush(self, steps: int, events: int, resolve_ms: float, commit_ms: float) -> None:
        total = resolve_ms + commit_ms
        with self._lock:
            self._steps_committed += steps
            self._events_committed += sum(1 for e in self._pending if type(e) is not Barrier)
            self._batches += 1
            self._last_flush_ms = total
            self._max_flush_ms = max(self._max_flush_ms, total)
        self._log.debug(
            "%s queue=db steps=%d events=%d resolve_ms=%.1f commit_ms=%.1f ms=%.1f",
            logcodes.FLUSH_STATS,
            steps,
            events,
            resolve_ms,
            commit_ms,
            total,
        )
        if total > self.slow_flush_ms:
            self._log.warning(
                "%s queue=db steps=%d resolve_ms=%.1f commit_ms=%.1f ms=%.1f threshold_ms=%.0f",
                logcodes.FLUSH_SLOW,
                steps,
                resolve_ms,
                commit_ms,
                total,
                self.slow_flush_ms,
            )
        self._steps_since_checkpoint += steps
        if self._steps_since_checkpoint >= self.checkpoint_interval:
            self._checkpoint()

    def _checkpoint(self) -> None:
        checkpoint_passive(self._db.conn)
        self._steps_since_checkpoint = 0
        with self._lock:
            self._checkpoints += 1

    def _snapshot(self) -> None:
        m = self.metrics()
        self._log.info(
            "%s queue=db queue_depth=%d high_water=%d bound=%d steps_committed=%d "
            "steps_dropped=%d last_flush_ms=%.1f max_flush_ms=%.1f",
            logcodes.QUEUE_SNAPSHOT,
            m.queue_depth,
            m.high_water,
            m.bound,
            m.steps_committed,
            m.steps_dropped,
            m.last_flush_ms,
            m.max_flush_ms,
        )

    def _fail(self, exc: BaseException) -> None:
        self._log.error("telemetry DB sink failed: %r", exc, exc_info=exc)
        with self._lock:
            self._error = exc
            stranded = self._pending + list(self._queue)
            self._queue.clear()
            self._depth = 0
            self._pending = []
            self._not_full.notify_all()
            self._not_empty.notify_all()
        # Wake every flush() waiting on a barrier that will now never commit.
        for event in stranded:
            if type(event) is Barrier:
                event.error = exc
                event.done.set()
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:
                self._log.exception("telemetry sink on_error callback failed")


def _check_args(policy: str, *, positive_ints: dict[str, int], positive: dict[str, float]) -> None:
    if policy not in ("block", "drop"):
        raise InvalidInput(f"unknown sink policy {policy!r}; use 'block' or 'drop'")
    for name, value in positive_ints.items():
        if not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{name} must be a positive int, got {value!r}")
    for name, value in positive.items():
        if not value > 0:
            raise InvalidInput(f"{name} must be > 0, got {value!r}")


__all__ = ["FrameLocation", "ResolveFrames", "SinkMetrics", "TelemetryDBSink"]
