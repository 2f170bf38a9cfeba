"""``ProcessStorage``: the producer's side of a storage process (``Settings.writer =
"process"``).

Per step the producer validates, claims a ring slot, copies the frame into shared memory
and writes one small command to a pipe. Compression dispatch, chunking, appending and
SQLite all run in the storage process (``_storageproc``), under its own GIL.

Bounds (the same as the thread placement's, enforced here, before anything is sent):

- frames: the ring's slots (``queue_frames`` and ``queue_bytes``); a full ring blocks up
  to ``block_timeout`` (then ``QueueFull``) or drops the frame, per ``policy``;
- rows: the sink's queue, ``sink_queue`` rows (plus the batch being committed) sent and
  not yet committed;
- the pipe: at most half its capacity unread, so a write never blocks.

Progress comes back through the ``Control`` counters. A listener thread waits (off the
GIL) for the rare replies and for the process's death: an error or a death is noted at
once, passed to ``on_error``, and raised by the producer's next call as the thread
placement would raise it (``WriterFailed``, ``DiskFull``, ``SinkError``).

What differs from the thread placement: ``FrameRef.location`` stays ``None`` in the
producer (the storage process writes the location into the frame's step row; read it
with ``FrameStore.frame_locations``), and a frame larger than the ring's slots (a new
shape) waits once for the ring to drain.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import numpy as np

from telemetry import SinkMetrics, Step, StepBatch
from telemetry.errors import SinkError

from ._refs import FrameRef, check_key
from ._ring import Control, Counter, FrameRing, slot_geometry
from ._storagelaunch import fd_connection, launch
from ._storageproc import LOGGERS
from ._storagewire import DROPPED, NO_FRAME, Cmd, decode_error, frame_message
from .codecs import check_frame
from .errors import InvalidInput, QueueFull, StoreClosed, WriterFailed
from .service import ServiceMetrics, writer_error
from .settings import Settings

__all__ = ["ProcessStorage", "RingRef"]

log = logging.getLogger("framestore")

#: Seconds a storage process may take to start (spawn imports numpy, zstd, SQLite).
START_TIMEOUT = 120.0
_PIPE_BYTES = 1 << 20
_FRAMES_RELEASED = int(Counter.FRAMES_RELEASED)
_BYTES_RELEASED = int(Counter.BYTES_RELEASED)
_WEIGHT_COMMITTED = int(Counter.WEIGHT_COMMITTED)
_PIPE_READ = int(Counter.PIPE_READ)


class RingRef(FrameRef):
    """A ``FrameRef`` that also names the ring slot holding the frame's copy."""

    __slots__ = ("slot",)

    def __init__(self, seq, key, shape, slot: int, dropped: bool = False):
        super().__init__(seq, key, shape, dropped)
        self.slot = slot


def _slot(ref: object) -> int:
    return ref.slot if isinstance(ref, RingRef) else NO_FRAME


class ProcessStorage:
    """Starts a storage process for the store at ``root`` and feeds it (module docstring).

    Args: as ``ThreadStorage``. Raises what the storage process raised while starting
    (``StoreLocked``, ``NotAStore``, ...) or ``WriterFailed`` if it could not start.
    """

    def __init__(self, root: Path, db_path: Path, s: Settings, on_error: Callable):
        self._s = s
        self._on_error = on_error
        self._init_state()
        self._control = Control.create()
        try:
            self._start(root, db_path)
        except BaseException:
            self._control.close()
            self._control.unlink()
            raise
        self._listener = threading.Thread(
            target=self._listen, name="framestore-storage-listener", daemon=True
        )
        self._listener.start()
        _live.add(self)

    def _init_state(self) -> None:
        s = self._s
        self._error: BaseException | None = None  # first background error or death
        self._error_source = ""
        self._closing = False
        self._closed = False
        self._ring: FrameRing | None = None
        self._free: list[int] = []
        self._seq = 0
        self._frames_in = self._bytes_in = self._dropped = 0
        self._hw_frames = self._hw_bytes = self._hw_weight = 0
        self._blocked_s = 0.0
        self._sent_weight = self._sent_bytes = 0
        self._batch_size = s.batch_size
        self._flush_ms = self._max_flush_ms = 0.0
        self._replies_cond = threading.Condition()
        self._results: dict[Any, Any] = {}
        self._token = 0
        self._send_lock = threading.Lock()

    def _start(self, root: Path, db_path: Path) -> None:
        cmd_r, self._fd = os.pipe()
        reply_r, reply_w = os.pipe()
        self._replies = fd_connection(reply_r, readable=True)
        self._pipe_room = _pipe_capacity(self._fd) // 2
        args = {
            "storage_args": (root, db_path, self._s),
            "control_name": self._control.name,
            "parent_pid": os.getpid(),
            "log_levels": {n: logging.getLogger(n).getEffectiveLevel() for n in LOGGERS},
        }
        try:
            self._child = launch(self._s.writer_start, args, cmd_r, reply_w, (self._fd, reply_r))
        except BaseException:
            os.close(self._fd)
            self._replies.close()
            raise
        finally:
            os.close(cmd_r)
            os.close(reply_w)
        child = self._child
        ready = wait([self._replies, child.sentinel], START_TIMEOUT)
        msg = None
        if self._replies in ready:
            try:
                msg = self._replies.recv()
            except (EOFError, OSError):
                msg = None
        if msg is not None and msg[0] == "ready":
            self.pid: int | None = msg[1]
            return
        if not ready:
            child.kill()
        child.join()
        os.close(self._fd)
        self._replies.close()
        if msg is not None:
            raise decode_error(msg[1])
        raise WriterFailed(f"the storage process did not start (exit code {child.exitcode})")

    # ----------------------------------------------------------------- errors
    def _raise_if_failed(self) -> None:
        err = self._error
        if err is None:
            if self._closed:
                raise StoreClosed("recorder storage is closed")
            return
        source = self._error_source
        if source == "sink":
            raise SinkError(f"telemetry sink failed: {err!r}") from err
        if source == "writer":
            raise writer_error(err) from err
        if source == "death":
            raise WriterFailed(str(err)) from err
        raise WriterFailed(f"the storage process failed: {err}") from err

    def _fail(self, err: BaseException, source: str) -> None:
        """Note a background error (listener thread: ``source`` is ``writer``, ``sink``,
        ``storage`` or ``death``) and pass it to ``on_error``."""
        with self._replies_cond:
            first = self._error is None
            if first:
                self._error = err
                self._error_source = source
            self._replies_cond.notify_all()
        if first:
            log.error("storage process: %s", err)
            try:
                self._on_error(err)
            except Exception:  # a broken callback must not hide the real error
                log.exception("on_error callback raised")

    def _listen(self) -> None:
        """The listener thread: replies, background errors and the process's death."""
        conns: list[Any] = [self._replies, self._child.sentinel]
        while True:
            ready = wait(conns)
            if self._replies in ready:
                try:
                    msg = self._replies.recv()
                except (EOFError, OSError):
                    conns = [self._child.sentinel]
                    continue
                if msg[0] == "log":
                    _emit(msg[1])
                    continue
                if msg[0] == "error":
                    self._fail(decode_error(msg[2]), msg[1])
                    continue
                with self._replies_cond:
                    self._results[msg[1] if msg[0] == "flushed" else msg[0]] = msg
                    self._replies_cond.notify_all()
                if msg[0] == "closed":
                    return
                continue
            self._child.join()
            code = self._child.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
            self._fail(WriterFailed(f"the storage process {self._child.pid} died ({how})"), "death")
            with self._replies_cond:
                self._results["closed"] = ("closed", None)
                self._replies_cond.notify_all()
            return

    def _reply(self, key: Any, timeout: float | None) -> tuple:
        """Wait for the reply ``key`` (a flush token or ``"closed"``); a death ends it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._replies_cond:
            while key not in self._results:
                if self._error is not None and key != "closed":
                    self._raise_if_failed()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise QueueFull("storage process", timeout or 0.0, "no reply in time")
                self._replies_cond.wait(remaining)
            return self._results.pop(key)

    # ----------------------------------------------------------------- sending
    def _send(self, msg: tuple, weight: int = 0, timeout: float | None = None) -> None:
        """Write one command once the sink's queue and the pipe have room for it."""
        data = frame_message(msg)
        values = self._control.values
        bound = self._s.sink_queue + self._batch_size
        room = self._pipe_room
        with self._send_lock:
            if (
                self._sent_weight + weight - values[_WEIGHT_COMMITTED] > bound
                or self._sent_bytes + len(data) - values[_PIPE_READ] > room
            ):
                self._wait(
                    lambda: (
                        (
                            self._sent_weight + weight - values[_WEIGHT_COMMITTED] <= bound
                            or weight == 0
                        )
                        and (
                            self._sent_bytes + len(data) - values[_PIPE_READ] <= room
                            or self._sent_bytes == values[_PIPE_READ]
                        )
                    ),
                    "telemetry DB queue" if weight else "storage process pipe",
                    self._s.block_timeout if timeout is None else timeout,
                )
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError as e:  # EPIPE: it died; the listener reports how
                self._wait(lambda: False, "storage process", 5.0)
                raise WriterFailed(f"the storage process is gone: {e}") from e
            self._sent_weight += weight
            self._sent_bytes += len(data)
            in_flight = self._sent_weight - int(values[_WEIGHT_COMMITTED])
            if in_flight > self._hw_weight:
                self._hw_weight = in_flight

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll until ``ready()`` (backing off to 2 ms), the storage process fails (its
        error is raised) or ``timeout`` passes (``QueueFull``)."""
        start = time.monotonic()
        delay = 50e-6
        try:
            while not ready():
                if self._closing:  # closing after an error: only a death stops the wait
                    if self._error_source == "death":
                        raise WriterFailed(str(self._error))
                else:
                    self._raise_if_failed()
                if time.monotonic() - start >= timeout:
                    raise QueueFull(what, timeout, "the storage process cannot keep up")
                time.sleep(delay)
                delay = min(delay * 2, 0.002)
        finally:
            self._blocked_s += time.monotonic() - start

    # ----------------------------------------------------------------- frames
    def _ring_for(self, nbytes: int) -> FrameRing:
        """The ring, created at the first frame and replaced (after it drained) when a
        frame does not fit its slots."""
        ring = self._ring
        if ring is not None and nbytes <= ring.slot_bytes:
            return ring
        s = self._s
        if ring is not None:
            self._send((Cmd.CUT,))
            self._wait(
                lambda: self._control.values[_FRAMES_RELEASED] == self._frames_in,
                "frame queue",
                s.block_timeout,
            )
        slot_bytes, slots = slot_geometry(nbytes, s.queue_frames, s.queue_bytes)
        new = FrameRing.create(slot_bytes, slots)
        try:
            self._send((Cmd.RING, new.name, slot_bytes, slots))
        except BaseException:
            new.close()
            new.unlink()
            raise
        if ring is not None:
            ring.close()
            ring.unlink()  # the storage process keeps its mapping until it lets go
        self._ring = new
        self._free = new.free_slots()
        return new

    def _claim(self, nbytes: int, count: int = 1) -> bool:
        """Room for ``count`` frames of ``nbytes`` bytes in all: True at once or after
        waiting (``block``), False when they do not fit (``drop``)."""
        ring = self._ring
        assert ring is not None
        values = self._control.values

        def fits() -> bool:
            return self._frames_in + count - values[_FRAMES_RELEASED] <= ring.slots

        if fits():
            return True
        if self._s.policy == "drop":
            return False
        self._send((Cmd.CUT,))  # open chunks would hold slots until they time out
        self._wait(fits, "frame queue", self._s.block_timeout)
        return True

    def _copy_in(self, frame: np.ndarray, key: tuple[int, int]) -> RingRef:
        """Copy ``frame`` into a free slot (room already claimed)."""
        ring = self._ring
        assert ring is not None
        if not self._free:
            self._free = ring.free_slots()
        slot = self._free.pop()
        np.copyto(ring.view(slot, frame.shape), frame)
        ring.states[slot] = 1
        ref = RingRef(self._seq, key, frame.shape, slot)
        self._seq += 1
        self._frames_in += 1
        self._bytes_in += frame.nbytes
        values = self._control.values
        queued = self._frames_in - int(values[_FRAMES_RELEASED])
        if queued > self._hw_frames:
            self._hw_frames = queued
            self._hw_bytes = max(self._hw_bytes, self._bytes_in - int(values[_BYTES_RELEASED]))
        return ref

    def _check_size(self, nbytes: int) -> None:
        if nbytes > self._s.queue_bytes:
            raise InvalidInput(
                f"frame of {nbytes} bytes is larger than the queue's byte bound "
                f"({self._s.queue_bytes}); raise queue_bytes"
            )

    def put(self, frame: np.ndarray, key: tuple[int, int]) -> FrameRef:
        """Validate ``frame`` and copy it into a ring slot (the step's command, sent by
        ``offer``, tells the storage process about it)."""
        self._raise_if_failed()
        key = check_key(key)
        check_frame(frame)
        nbytes = frame.nbytes
        self._check_size(nbytes)
        self._ring_for(nbytes)
        if not self._claim(nbytes):
            self._dropped += 1
            return RingRef(None, key, frame.shape, DROPPED, dropped=True)
        return self._copy_in(frame, key)

    def put_many(
        self, frames: Sequence[np.ndarray | None], keys: Sequence[tuple[int, int]]
    ) -> list[FrameRef | None]:
        """``put`` for a batch: under ``block`` the whole batch waits until it fits."""
        self._raise_if_failed()
        checked = [check_key(k) for k in keys]
        if len(checked) != len(frames):
            raise InvalidInput(f"{len(frames)} frames for {len(checked)} keys")
        present = [f for f in frames if f is not None]
        for f in present:
            check_frame(f)
        if not present:
            return [None] * len(frames)
        total = sum(f.nbytes for f in present)
        big = max(f.nbytes for f in present)
        self._check_size(big)
        ring = self._ring_for(big)
        if len(present) > ring.slots:
            raise InvalidInput(
                f"a batch of {len(present)} frames does not fit the queue ({ring.slots} "
                f"frames of {ring.slot_bytes} bytes); raise queue_frames or queue_bytes"
            )
        whole = self._s.policy == "block" and self._claim(total, len(present))
        refs: list[FrameRef | None] = []
        for frame, key in zip(frames, checked, strict=True):
            if frame is None:
                refs.append(None)
            elif whole or self._claim(frame.nbytes):
                refs.append(self._copy_in(frame, key))
            else:
                self._dropped += 1
                refs.append(RingRef(None, key, frame.shape, DROPPED, dropped=True))
        return refs

    # ----------------------------------------------------------------- events
    def offer(self, event: Any, timeout: float | None = None) -> bool:
        """Send a telemetry event (the hub's durable subscriber): a ``Step`` or a
        ``StepBatch`` names the ring slots its frames sit in."""
        self._raise_if_failed()
        kind = type(event)
        if kind is Step:
            e = event
            ref = e.frame
            shape = ref.shape if isinstance(ref, FrameRef) else None
            msg: tuple = (
                Cmd.STEP, e.episode_id, e.step, e.action, e.reward, e.terminated,
                e.truncated, e.info, e.wall_time, _slot(ref), shape, e.frame_shape,
            )  # fmt: skip
            self._send(msg, 1, timeout)
        elif kind is StepBatch:
            b = event
            msg = (
                Cmd.BATCH, b.episode_ids, b.steps, b.actions, b.rewards, b.terminated,
                b.truncated, b.infos, b.wall_time, tuple(_slot(r) for r in b.frames),
                tuple(r.shape if isinstance(r, FrameRef) else None for r in b.frames),
                b.frame_shapes,
            )  # fmt: skip
            self._send(msg, len(b), timeout)
        else:
            self._send((Cmd.EVENT, event), 1, timeout)
        return True

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def set_batch_size(self, rows: int) -> None:
        self._raise_if_failed()
        self._send((Cmd.BATCH_SIZE, rows))
        self._batch_size = rows

    def cut(self) -> None:
        self._send((Cmd.CUT,))

    # ----------------------------------------------------------------- durability
    def _flush(self, timeout: float | None, frames_only: bool) -> None:
        self._raise_if_failed()
        t0 = time.perf_counter()
        with self._replies_cond:
            self._token += 1
            token = self._token
        self._send((Cmd.FLUSH, token, timeout, frames_only))
        reply = self._reply(token, timeout)
        if reply[2] is not None:
            raise decode_error(reply[2])
        if frames_only:
            self._flush_ms = (time.perf_counter() - t0) * 1000
            self._max_flush_ms = max(self._max_flush_ms, self._flush_ms)

    def flush_frames(self, timeout: float | None = None) -> None:
        self._flush(timeout, frames_only=True)

    def flush(self, timeout: float | None = None) -> None:
        self._flush(timeout, frames_only=False)

    # ----------------------------------------------------------------- metrics
    def frame_metrics(self) -> ServiceMetrics:
        v = self._control.values
        ring = self._ring
        seg = int(v[Counter.CURRENT_SEGMENT])
        return ServiceMetrics(
            queue_frames=self._frames_in - int(v[_FRAMES_RELEASED]),
            queue_bytes=self._bytes_in - int(v[_BYTES_RELEASED]),
            bound_frames=ring.slots if ring else self._s.queue_frames,
            bound_bytes=ring.slots * ring.slot_bytes if ring else self._s.queue_bytes,
            high_water_frames=self._hw_frames,
            high_water_bytes=self._hw_bytes,
            frames_in=self._frames_in,
            frames_written=int(v[_FRAMES_RELEASED]),
            frames_dropped=self._dropped,
            bytes_in=self._bytes_in,
            bytes_out=int(v[Counter.BYTES_OUT]),
            chunks_written=int(v[Counter.CHUNKS_WRITTEN]),
            segments_sealed=int(v[Counter.SEGMENTS_SEALED]),
            current_segment=seg - 1 if seg else None,
            blocked_seconds=self._blocked_s,
            last_flush_ms=self._flush_ms,
            max_flush_ms=self._max_flush_ms,
            error=str(self._error) if self._error else None,
        )

    def sink_metrics(self) -> SinkMetrics:
        v = self._control.values
        return SinkMetrics(
            queue_depth=max(0, self._sent_weight - int(v[_WEIGHT_COMMITTED])),
            high_water=self._hw_weight,
            bound=self._s.sink_queue,
            policy="block",
            steps_committed=int(v[Counter.STEPS_COMMITTED]),
            steps_dropped=0,
            events_committed=int(v[Counter.EVENTS_COMMITTED]),
            batches=int(v[Counter.BATCHES]),
            last_flush_ms=int(v[Counter.SINK_FLUSH_US]) / 1000,
            max_flush_ms=int(v[Counter.SINK_MAX_FLUSH_US]) / 1000,
            checkpoints=int(v[Counter.CHECKPOINTS]),
            failed=self._error is not None,
        )

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Ask the storage process to commit everything and exit; wait for it (or its
        death), then free the shared memory. Raises the first error."""
        if self._closed:
            return
        self._closing = True
        if self._error_source != "death":
            try:
                self._send((Cmd.CLOSE,))
            except WriterFailed:
                pass  # it died: the listener reports how
        reply = self._reply("closed", None)
        self._closed = True
        self._child.join()
        self._listener.join()
        if self._fd >= 0:
            os.close(self._fd)
        self._replies.close()
        for block in (self._ring, self._control):
            if block is not None:
                block.close()
                block.unlink()
        if reply[1] is not None:
            raise decode_error(reply[1])
        if self._error is not None:
            self._closed = False  # let _raise_if_failed raise the error, not "closed"
            try:
                self._raise_if_failed()
            finally:
                self._closed = True

    def abandon(self) -> None:
        """At interpreter exit without ``close``: close the command pipe, so the storage
        process commits what it has and exits (``fork`` children are joined by
        ``multiprocessing`` at exit, which would otherwise wait forever)."""
        if not self._closed and not self._closing:
            self._closing = True
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            import warnings

            warnings.warn("ProcessStorage was not closed", ResourceWarning, stacklevel=1)


_live: weakref.WeakSet[ProcessStorage] = weakref.WeakSet()


@atexit.register
def _abandon_at_exit() -> None:
    # Registered after multiprocessing's own exit handler (imported above), so it runs
    # before that handler joins the fork children.
    for storage in list(_live):
        storage.abandon()


def _emit(record: dict[str, Any]) -> None:
    """A storage process's log record, handled by this process's logger of that name."""
    rec = logging.makeLogRecord(record)
    logger = logging.getLogger(rec.name)
    if logger.isEnabledFor(rec.levelno):
        logger.handle(rec)


def _pipe_capacity(fd: int) -> int:
    """Grow the pipe to 1 MiB where allowed; its capacity in bytes."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    except OSError:
        pass
    try:
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except OSError:
        return 65536
