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

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from telemetry import SinkMetrics, Step, StepBatch

from ._format import StepMeta
from ._refs import FrameRef, check_key
from ._ring import SHM_DIR, Counter, FrameRing, slot_geometry
from ._storagelink import StorageLink
from ._storagewire import DROPPED, NO_FRAME, Cmd, decode_error, frame_message
from .codecs import check_frame
from .errors import InvalidInput, QueueFull, SharedMemoryFull, WriterFailed
from .service import ServiceMetrics
from .settings import Settings

__all__ = ["ProcessStorage", "RingRef"]

_FRAMES_RELEASED = int(Counter.FRAMES_RELEASED)
_BYTES_RELEASED = int(Counter.BYTES_RELEASED)
_WEIGHT_COMMITTED = int(Counter.WEIGHT_COMMITTED)
_PIPE_READ = int(Counter.PIPE_READ)
# Plain ints in the commands: pickling an IntEnum member costs a class lookup each time.
_STEP, _BATCH, _EVENT = int(Cmd.STEP), int(Cmd.BATCH), int(Cmd.EVENT)
_CUT = (int(Cmd.CUT),)
#: Free slots taken at a time, lowest first: the producer keeps reusing the few slots
#: the storage process just freed, whose pages are already mapped (a fresh 100 KB slot
#: costs ~25 page faults; the ring's far end is only touched under a backlog).
_REFILL = 64
_REFILL_AFTER = 16  # frames released since the last refill that make a refill worth it


class RingRef(FrameRef):
    """A ``FrameRef`` that also names the ring slot holding the frame's copy."""

    __slots__ = ("slot",)

    def __init__(self, seq, key, shape, slot: int, dropped: bool = False):
        super().__init__(seq, key, shape, dropped)
        self.slot = slot


def _ring_budget(queue_bytes: int) -> int:
    """Bytes the ring may take: ``queue_bytes``, or half of what the shared-memory file
    system has free if that is less (a tmpfs accepts a larger block, then kills the
    process with SIGBUS when a page past its size is touched: Docker's is 64 MiB)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return queue_bytes
    return min(queue_bytes, st.f_bavail * st.f_frsize // 2)


def _create_ring(slot_bytes: int, slots: int) -> FrameRing:
    """A ring of ``slots`` slots, or of fewer (halved until they fit) when another
    recorder took the room meanwhile: its pages are reserved, so no SIGBUS later.
    ``SharedMemoryFull`` when not even one slot fits."""
    while True:
        try:
            return FrameRing.create(slot_bytes, slots)
        except SharedMemoryFull:
            if slots == 1:
                raise
            slots //= 2


def _slot(ref: object) -> int:
    return ref.slot if isinstance(ref, RingRef) else NO_FRAME


class ProcessStorage:
    """A storage process for the store at ``root``, fed as the module docstring says.

    Args: as ``ThreadStorage``. Raises what the storage process raised while starting
    (``StoreLocked``, ``NotAStore``, ...) or ``WriterFailed`` if it could not start.
    """

    def __init__(
        self,
        root: Path,
        db_path: Path,
        s: Settings,
        on_error: Callable,
        store_id: str | None = None,
    ):
        self._s = s
        self._ring: FrameRing | None = None
        self._free: list[int] = []
        self._refilled_at = 0
        self._seq = 0
        self._frames_in = self._bytes_in = self._dropped = 0
        self._hw_frames = self._hw_bytes = self._hw_weight = 0
        self._blocked_s = 0.0
        self._sent_weight = self._sent_bytes = 0
        self._batch_size = s.batch_size
        self._flush_ms = self._max_flush_ms = 0.0
        self._link = StorageLink(root, db_path, s, on_error, store_id)
        self._counts = self._link.control.counts
        self.pid: int | None = self._link.pid

    # ----------------------------------------------------------------- sending
    def _send(self, msg: tuple, weight: int = 0, timeout: float | None = None) -> None:
        """Write one command once the sink's queue (``weight`` rows) and the pipe have
        room for it; else wait up to the block timeout (``QueueFull``)."""
        data = frame_message(msg)
        counts = self._counts
        n = len(data)
        bound = self._s.sink_queue + self._batch_size
        room = self._link.pipe_room

        def fits() -> bool:
            in_flight = self._sent_weight - counts[_WEIGHT_COMMITTED]
            # a batch larger than the bound goes once nothing else is in flight
            rows_ok = weight == 0 or in_flight + weight <= bound or in_flight == 0
            unread = self._sent_bytes - counts[_PIPE_READ]
            return rows_ok and (unread + n <= room or unread == 0)

        if not fits():
            what = "telemetry DB queue" if weight else "storage process pipe"
            self._wait(fits, what, self._s.block_timeout if timeout is None else timeout)
        self._link.write(data)
        self._sent_weight += weight
        self._sent_bytes += n
        in_flight = self._sent_weight - counts[_WEIGHT_COMMITTED]
        if in_flight > self._hw_weight:
            self._hw_weight = in_flight

    def _wait(
        self, ready: Callable[[], bool], what: str, timeout: float, frames: bool = False
    ) -> None:
        """Poll until ``ready()`` (backing off to 2 ms), the storage process fails (its
        error is raised) or ``timeout`` passes (``QueueFull``). Time waiting for room in
        the frame queue (``frames``) counts as ``blocked_seconds``, as in the thread
        placement."""
        link = self._link
        start = time.monotonic()
        delay = 50e-6
        try:
            while not ready():
                if not link.closing:
                    link.raise_if_failed()
                elif link.died:  # closing after an error: only a death ends the wait
                    raise WriterFailed(str(link.error))
                if time.monotonic() - start >= timeout:
                    raise QueueFull(what, timeout, "the storage process cannot keep up")
                time.sleep(delay)
                delay = min(delay * 2, 0.002)
        finally:
            if frames:
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
            self._send(_CUT)
            self._wait(
                lambda: self._counts[_FRAMES_RELEASED] == self._frames_in,
                "frame queue",
                s.block_timeout,
            )
        budget = _ring_budget(s.queue_bytes)
        slot_bytes, slots = slot_geometry(nbytes, s.queue_frames, budget)
        # (a frame just under queue_bytes may round up past it: that is not shm's fault)
        if budget < s.queue_bytes and slots * slot_bytes > budget:
            raise WriterFailed(
                f"{SHM_DIR} has room for no frame of {nbytes} bytes; the storage process "
                "keeps its queue there: make it larger (docker run --shm-size) or record "
                "with writer='thread'"
            )
        new = _create_ring(slot_bytes, slots)
        try:
            self._send((int(Cmd.RING), new.name, new.slot_bytes, new.slots))
        except BaseException:
            new.close()
            new.unlink()
            raise
        if ring is not None:
            ring.close()
            ring.unlink()  # the storage process keeps its mapping until it lets go
        self._ring = new
        self._free = []
        return new

    def _claim(self, count: int = 1) -> bool:
        """Room for ``count`` frames (slots: each holds any frame within the byte bound):
        True at once or after waiting (``block``), False when they do not fit (``drop``)."""
        ring = self._ring
        assert ring is not None
        counts = self._counts

        def fits() -> bool:
            return self._frames_in + count - counts[_FRAMES_RELEASED] <= ring.slots

        if fits():
            return True
        if self._s.policy == "drop":
            return False
        self._send(_CUT)  # open chunks would hold slots until they time out
        self._wait(fits, "frame queue", self._s.block_timeout, frames=True)
        return True

    def _copy_in(self, frame: np.ndarray, key: tuple[int, int]) -> RingRef:
        """Copy ``frame`` into a free slot (room already claimed)."""
        ring = self._ring
        assert ring is not None
        counts = self._counts
        released = counts[_FRAMES_RELEASED]
        if not self._free or released - self._refilled_at >= _REFILL_AFTER:
            self._free = ring.free_slots(_REFILL)
            self._refilled_at = released
        slot = self._free.pop()
        np.copyto(ring.view(slot, frame.shape), frame)
        ring.states[slot] = 1
        ref = RingRef(self._seq, key, frame.shape, slot)
        self._seq += 1
        self._frames_in += 1
        self._bytes_in += frame.nbytes
        queued = self._frames_in - released
        if queued > self._hw_frames:
            self._hw_frames = queued
            self._hw_bytes = max(self._hw_bytes, self._bytes_in - counts[_BYTES_RELEASED])
        return ref

    def _check_size(self, nbytes: int) -> None:
        if nbytes > self._s.queue_bytes:
            raise InvalidInput(
                f"frame of {nbytes} bytes is larger than the queue's byte bound "
                f"({self._s.queue_bytes}); raise queue_bytes"
            )

    def put(
        self, frame: np.ndarray, key: tuple[int, int], step: StepMeta | None = None
    ) -> FrameRef:
        """Validate ``frame`` and copy it into a ring slot (the step's command, sent by
        ``offer``, tells the storage process about it, and carries the values the storage
        process makes ``step`` from: ``step`` itself is not sent)."""
        self._link.raise_if_failed()
        key = check_key(key)
        check_frame(frame)
        nbytes = frame.nbytes
        self._check_size(nbytes)
        self._ring_for(nbytes)
        if not self._claim():
            self._dropped += 1
            return RingRef(None, key, frame.shape, DROPPED, dropped=True)
        return self._copy_in(frame, key)

    def put_step(self, step: StepMeta) -> None:
        """Nothing to do: the step's command (``offer``) carries its values."""

    def put_many(
        self,
        frames: Sequence[np.ndarray | None],
        keys: Sequence[tuple[int, int]],
        steps: Sequence[StepMeta] | None = None,
    ) -> list[FrameRef | None]:
        """``put`` for a batch: under ``block`` the whole batch waits until it fits
        (``steps``: see ``put``)."""
        self._link.raise_if_failed()
        checked = [check_key(k) for k in keys]
        if len(checked) != len(frames):
            raise InvalidInput(f"{len(frames)} frames for {len(checked)} keys")
        present = [f for f in frames if f is not None]
        for f in present:
            check_frame(f)
        if not present:
            return [None] * len(frames)
        big = max(f.nbytes for f in present)
        self._check_size(big)
        ring = self._ring_for(big)
        if len(present) > ring.slots:
            raise InvalidInput(
                f"a batch of {len(present)} frames does not fit the queue ({ring.slots} "
                f"frames of {ring.slot_bytes} bytes); raise queue_frames or queue_bytes"
            )
        whole = self._s.policy == "block" and self._claim(len(present))
        refs: list[FrameRef | None] = []
        for frame, key in zip(frames, checked, strict=True):
            if frame is None:
                refs.append(None)
            elif whole or self._claim():
                refs.append(self._copy_in(frame, key))
            else:
                self._dropped += 1
                refs.append(RingRef(None, key, frame.shape, DROPPED, dropped=True))
        return refs

    # ----------------------------------------------------------------- events
    def offer(self, event: Any, timeout: float | None = None) -> bool:
        """Send a telemetry event (the hub's durable subscriber): a ``Step`` or a
        ``StepBatch`` names the ring slots its frames sit in."""
        self._link.raise_if_failed()
        kind = type(event)
        if kind is Step:
            e = event
            ref = e.frame
            shape = ref.shape if isinstance(ref, FrameRef) else None
            msg: tuple = (
                _STEP, e.episode_id, e.step, e.action, e.reward, e.terminated,
                e.truncated, e.info, e.wall_time, _slot(ref), shape, e.frame_shape,
            )  # fmt: skip
            self._send_rows(msg, 1, (ref,), timeout)
        elif kind is StepBatch:
            b = event
            msg = (
                _BATCH, b.episode_ids, b.steps, b.actions, b.rewards, b.terminated,
                b.truncated, b.infos, b.wall_time, tuple(_slot(r) for r in b.frames),
                tuple(r.shape if isinstance(r, FrameRef) else None for r in b.frames),
                b.frame_shapes,
            )  # fmt: skip
            self._send_rows(msg, len(b), b.frames, timeout)
        else:
            self._send((_EVENT, event), 1, timeout)
        return True

    def offer_row(self, row: tuple) -> None:
        """A step as ``Step``'s fields (``Recorder.record_step`` without a display
        subscriber): straight into its command, no event object."""
        self._link.raise_if_failed()
        eid, step, action, reward, term, trunc, info, wall, ref, text = row
        shape = ref.shape if ref is not None else None
        msg = (_STEP, eid, step, action, reward, term, trunc, info, wall, _slot(ref), shape, text)
        self._send_rows(msg, 1, (ref,))

    def _send_rows(
        self, msg: tuple, weight: int, refs: Sequence[object], timeout: float | None = None
    ) -> None:
        """``_send`` for rows whose frames sit in ring slots: if the command cannot be
        sent (a full queue, an interrupt), the storage process never hears of those
        slots, so they are given back here."""
        try:
            self._send(msg, weight, timeout)
        except BaseException:
            self._give_back(refs)
            raise

    def _give_back(self, refs: Sequence[object]) -> None:
        ring = self._ring
        if ring is None:
            return
        for ref in refs:
            if isinstance(ref, RingRef) and ref.slot >= 0 and not ref.dropped:
                ring.states[ref.slot] = 0
                self._frames_in -= 1
                self._bytes_in -= int(np.prod(ref.shape))  # uint8 frames

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def set_batch_size(self, rows: int) -> None:
        self._link.raise_if_failed()
        self._send((int(Cmd.BATCH_SIZE), rows))
        self._batch_size = rows

    def cut(self) -> None:
        self._send(_CUT)

    # ----------------------------------------------------------------- durability
    def _flush(self, timeout: float | None, frames_only: bool) -> None:
        self._link.raise_if_failed()
        t0 = time.perf_counter()
        token = self._link.token()
        self._send((int(Cmd.FLUSH), token, timeout, frames_only))
        # A little longer than the storage process waits: its QueueFull arrives first.
        reply = self._link.reply(token, None if timeout is None else timeout + 5.0)
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
        c = self._counts
        ring = self._ring
        seg = c[Counter.CURRENT_SEGMENT]
        return ServiceMetrics(
            queue_frames=self._frames_in - c[_FRAMES_RELEASED],
            queue_bytes=self._bytes_in - c[_BYTES_RELEASED],
            bound_frames=ring.slots if ring else self._s.queue_frames,
            bound_bytes=ring.slots * ring.slot_bytes if ring else self._s.queue_bytes,
            high_water_frames=self._hw_frames,
            high_water_bytes=self._hw_bytes,
            frames_in=self._frames_in,
            frames_written=c[_FRAMES_RELEASED],
            frames_dropped=self._dropped,
            bytes_in=self._bytes_in,
            bytes_out=c[Counter.BYTES_OUT],
            chunks_written=c[Counter.CHUNKS_WRITTEN],
            segments_sealed=c[Counter.SEGMENTS_SEALED],
            current_segment=seg - 1 if seg else None,
            blocked_seconds=self._blocked_s,
            last_flush_ms=self._flush_ms,
            max_flush_ms=self._max_flush_ms,
            error=str(self._link.error) if self._link.error else None,
        )

    def sink_metrics(self) -> SinkMetrics:
        c = self._counts
        return SinkMetrics(
            queue_depth=max(0, self._sent_weight - c[_WEIGHT_COMMITTED]),
            high_water=self._hw_weight,
            bound=self._s.sink_queue,
            policy="block",
            steps_committed=c[Counter.STEPS_COMMITTED],
            steps_dropped=0,
            events_committed=c[Counter.EVENTS_COMMITTED],
            batches=c[Counter.BATCHES],
            last_flush_ms=c[Counter.SINK_FLUSH_US] / 1000,
            max_flush_ms=c[Counter.SINK_MAX_FLUSH_US] / 1000,
            checkpoints=c[Counter.CHECKPOINTS],
            failed=self._link.error is not None,
        )

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Ask the storage process to commit everything and exit; wait for it (or its
        death), then free the shared memory. Raises the first error."""
        link = self._link
        if link.closed:
            return
        if not link.closing:
            link.closing = True
            if not link.died:
                try:
                    self._send((int(Cmd.CLOSE),))
                except WriterFailed:
                    pass  # it died: the listener says how
                except BaseException:
                    # No room in the pipe (or an interrupt): end-of-file on the command
                    # pipe tells it to commit what it has and exit, as if we had died.
                    link.hang_up()
                    link.finish()
                    self._free_ring()
                    raise
        reply = link.finish()
        self._free_ring()
        if reply[1] is not None:
            raise decode_error(reply[1])
        if link.error is not None:
            link.raise_if_failed()  # the error itself: "closed" is said only without one

    def _free_ring(self) -> None:
        # counters read after close: the storage process's final values
        self._counts = self._link.final_counts or [0] * len(Counter)
        if self._ring is not None:
            self._ring.close()
            self._ring.unlink()
            self._ring = None

    def __del__(self) -> None:
        link = getattr(self, "_link", None)
        if link is not None and not link.closed:
            import warnings

            warnings.warn("ProcessStorage was not closed", ResourceWarning, stacklevel=1)
