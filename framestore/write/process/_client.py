"""``ProcessStorage``: the producer's side of a storage process (``Settings.writer =
"process"``).

Per step the producer validates and copies the frame once, straight into its open
chunk, which lives in a shared-memory ring slot (``_openchunks.ChunkAssembler``, the
same open chunks as the thread placement's, with ring slots for buffers). Per chunk it
writes ONE command to a pipe: the slot, the frames' keys and the steps' metadata.
Compression, appending and SQLite all run in the storage process (``_main``),
under its own GIL; a chunk's slot is freed once it is written.

Bounds (the same ``QueueBudget`` as the thread placement's, enforced here, before
anything is sent):

- frames: ``queue_frames`` and ``queue_bytes`` placed and not yet written (the storage
  process's counters say what was written), and the ring's slots (one per chunk); a full
  queue blocks up to ``block_timeout`` (then ``QueueFull``) or drops the frame;
- rows: the sink's queue, ``sink_queue`` rows (plus a batch) sent and not yet committed;
- the pipe: at most half its capacity unread, so a write never blocks.

Progress comes back through the ``Control`` counters. A listener thread waits (off the
GIL) for the rare replies and for the process's death: an error or a death is noted at
once, passed to ``on_error``, and raised by the producer's next call as the thread
placement would raise it (``WriterFailed``, ``DiskFull``, ``SinkError``). A ticker thread
hands off chunks open for ``max_latency``.

What differs from the thread placement: ``FrameRef.location`` stays ``None`` in the
producer (the storage process writes the location into the frame's step row; read it
with ``FrameStore.frame_locations``), and a frame larger than the ring's slots (a new
shape) waits once for the ring to drain.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from telemetry import EpisodeEnded, RunEnded, SinkMetrics, Step, StepBatch

from ..._format.steps import StepMeta
from ...disk._refs import FrameRef, check_key
from ...disk.codecs import check_frame
from ...errors import InvalidInput, QueueFull, SharedMemoryFull, WriterFailed
from ...settings import Settings
from .._budget import QueueBudget
from .._chunks import Chunk
from .._openchunks import ChunkAssembler
from ..service import CHUNK_BYTES, ServiceMetrics
from ._link import StorageLink
from ._ring import SHM_DIR, Counter, FrameRing
from ._wire import NO_FRAME, Cmd, decode_error, frame_message, wire_steps

__all__ = ["ProcessStorage"]

_FRAMES_RELEASED = int(Counter.FRAMES_RELEASED)
_BYTES_RELEASED = int(Counter.BYTES_RELEASED)
_WEIGHT_COMMITTED = int(Counter.WEIGHT_COMMITTED)
_PIPE_READ = int(Counter.PIPE_READ)
_CHUNK, _EVENT = int(Cmd.CHUNK), int(Cmd.EVENT)
_ALIGN = 64


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


class _RingBuffers:
    """Open chunks' buffers in ring slots: one slot per chunk (``ChunkBuffers``). The
    producer claims a free slot (state 0 -> 1); the storage process frees it (1 -> 0)
    once the chunk is written."""

    def __init__(self) -> None:
        self.ring: FrameRing | None = None

    def get(self, shape: tuple[int, ...], capacity: int) -> tuple[np.ndarray, object] | None:
        ring = self.ring
        assert ring is not None
        # The lowest free slot (once per chunk): the producer keeps reusing the few
        # slots just freed, whose pages are mapped already (a fresh slot costs page
        # faults on every frame copied in; the ring's far end is only touched under a
        # backlog).
        free = ring.free_slots(1)
        if not free:
            return None
        slot = free[0]
        ring.states[slot] = 1
        nbytes = 1
        for d in shape:
            nbytes *= d
        # a ring fitted to a small /dev/shm has shorter slots than a chunk wants
        capacity = max(1, min(capacity, ring.slot_bytes // nbytes))
        return ring.view(slot, (capacity, *shape)), slot

    def put_back(self, handle: object) -> None:
        assert self.ring is not None and isinstance(handle, int)
        self.ring.states[handle] = 0

    def replace(self, ring: FrameRing) -> None:
        self.ring = ring


#: What a caller is told when the storage process gave no answer to a note (an rm's
#: tombstone): it may be on disk or be written yet, with no catalogue commit.
_NOTE_UNKNOWN = (
    "the tombstone may be on disk without its catalogue commit: if so, the deletion "
    "took effect and `framestore recover` finishes it (verify and gc say so until then)"
)


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
        first_segment_id: int = 0,
    ):
        self._s = s
        self._send_lock = threading.Lock()
        self._sent_weight = self._sent_bytes = self._hw_weight = 0
        self._batch_size = s.batch_size
        self._flush_ms = self._max_flush_ms = 0.0
        self._chunk_commands = 0
        self._link = StorageLink(root, db_path, s, on_error, store_id, first_segment_id)
        self._counts = self._link.control.counts
        self.pid: int | None = self._link.pid
        self.budget = QueueBudget(
            s.queue_frames, s.queue_bytes, s.policy, s.block_timeout, self._released
        )
        self._buffers = _RingBuffers()
        self._room_bound = 0  # slot bytes of a ring shortened to fit /dev/shm (0: not)
        # The thread placement's rules (FrameStorageService): a chunk at most a quarter
        # of the queue, the open chunks together at most half.
        self._chunk_frames = max(1, min(s.chunk_frames, s.queue_frames // 4))
        self._chunk_bytes = max(1, min(CHUNK_BYTES, s.queue_bytes // 4))
        self._chunks = ChunkAssembler(
            self.budget,
            self._buffers,
            self._hand_off,
            self,
            chunk_frames=self._chunk_frames,
            chunk_bytes=self._chunk_bytes,
            max_latency=s.max_latency,
            open_frames=max(1, s.queue_frames // 2),
            open_bytes=max(1, s.queue_bytes // 2),
        )
        self._stop_ticker = threading.Event()
        self._ticker = threading.Thread(
            target=self._tick, name="framestore-chunk-ticker", daemon=True
        )
        self._ticker.start()

    # ----------------------------------------------------------------- sending
    def _send(self, msg: tuple, weight: int = 0, timeout: float | None = None) -> None:
        """Write one command once the sink's queue (``weight`` rows) and the pipe have
        room for it; else wait up to the block timeout (``QueueFull``)."""
        data = frame_message(msg)
        counts = self._counts
        n = len(data)
        bound = self._s.sink_queue + self._batch_size
        room = self._link.pipe_room
        with self._send_lock:

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

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll until ``ready()`` (backing off to 2 ms), the storage process fails (its
        error is raised) or ``timeout`` passes (``QueueFull``)."""
        start = time.monotonic()
        delay = 50e-6
        while not ready():
            self.raise_if_failed()
            if time.monotonic() - start >= timeout:
                raise QueueFull(what, timeout, "the storage process cannot keep up")
            time.sleep(delay)
            delay = min(delay * 2, 0.002)

    # the budget's Waiter
    def wait(self, seconds: float) -> None:
        """Sleep a little: the storage process's counters say when room came."""
        time.sleep(min(seconds, 0.0005))

    def raise_if_failed(self) -> None:
        link = self._link
        if not link.closing:
            link.raise_if_failed()
        elif link.died:  # closing after an error: only a death ends a wait
            raise WriterFailed(str(link.error))

    def _released(self) -> tuple[int, int]:
        c = self._counts
        return c[_FRAMES_RELEASED], c[_BYTES_RELEASED]

    def _tick(self) -> None:
        """The ticker thread: hands off chunks open ``max_latency`` seconds."""
        wait = self._s.max_latency
        while not self._stop_ticker.wait(min(wait, 1.0)):
            try:
                wait = self._chunks.close_stale()
            except BaseException:  # noqa: BLE001 - the producer's next call raises it
                wait = self._s.max_latency

    # ----------------------------------------------------------------- frames
    def _hand_off(self, chunk: Chunk) -> None:
        """One ``CHUNK`` command (the assembler's lock is held: commands stay in order).
        If it cannot be sent, the slot and the frames' room are given back."""
        frames = chunk.frames
        slot = chunk.buffer if frames is not None else NO_FRAME
        msg = (
            _CHUNK, slot, None if frames is None else frames.shape, chunk.key,
            chunk.stream_index, tuple(r.key[1] for r in chunk.refs), wire_steps(chunk.steps),
            chunk.row_shapes,
        )  # fmt: skip
        try:
            self._send(msg, len(chunk.steps))
        except BaseException:
            if frames is not None:
                self._buffers.put_back(slot)
                self.budget.give_back(len(chunk.refs), frames.nbytes)
            raise
        self._chunk_commands += 1

    def _ring_for(self, nbytes: int) -> None:
        """The ring, created at the first frame and replaced (after it drained) when a
        chunk of these frames does not fit its slots."""
        capacity = max(1, min(self._chunk_frames, self._chunk_bytes // max(1, nbytes)))
        need = capacity * nbytes
        ring = self._buffers.ring
        if ring is not None and (need <= ring.slot_bytes or self._room_bound >= nbytes):
            return
        s = self._s
        if ring is not None:
            self._chunks.close_all()
            self._wait(
                lambda: self._counts[_FRAMES_RELEASED] == self.budget.frames_in,
                "frame queue",
                s.block_timeout,
            )
        budget = _ring_budget(s.queue_bytes)
        # Shorter chunks when the shared-memory room is small (two slots: one filling,
        # one being written; one, if that is all there is). No room for one frame: one
        # clear error.
        if nbytes > budget:
            raise WriterFailed(
                f"{SHM_DIR} has room for no frame of {nbytes} bytes; the storage process "
                "keeps its queue there: make it larger (docker run --shm-size) or record "
                "with writer='thread'"
            )
        fitted = max(nbytes, budget // 2 // nbytes * nbytes)
        # a ring fitted to the room is kept for frames that fit a slot of it
        self._room_bound = fitted if fitted < need else 0
        need = min(need, fitted)
        slot_bytes = -(-need // _ALIGN) * _ALIGN
        slots = max(1, budget // slot_bytes)
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
        self._buffers.replace(new)

    def _check_size(self, nbytes: int) -> None:
        if nbytes > self._s.queue_bytes:
            raise InvalidInput(
                f"frame of {nbytes} bytes is larger than the queue's byte bound "
                f"({self._s.queue_bytes}); raise queue_bytes"
            )

    def put(
        self,
        frame: np.ndarray,
        key: tuple[int, int],
        step: StepMeta | None = None,
        stream: int = 0,
        row_shape: str | None = None,
        *,
        owned: bool = False,  # noqa: ARG002 - frames live in shared memory: always copied
    ) -> FrameRef:
        """Validate ``frame`` and copy it into its open chunk's ring slot (``owned`` or
        not: the storage process reads frames from shared memory only)."""
        self._link.raise_if_failed()
        key = check_key(key)
        check_frame(frame)
        nbytes = frame.nbytes
        self._check_size(nbytes)
        self._ring_for(nbytes)
        return self._chunks.place(frame, key, step, stream, row_shape)

    def put_step(self, step: StepMeta) -> None:
        """A step without a frame: its metadata joins its episode's open chunk."""
        self._link.raise_if_failed()
        self._chunks.add_step(step)

    def put_many(
        self,
        frames: Sequence[np.ndarray | None],
        keys: Sequence[tuple[int, int]],
        steps: Sequence[StepMeta | None] | None = None,
        streams: Sequence[int] | None = None,
        row_shapes: Sequence[str | None] | None = None,
        *,
        owned: bool = False,  # noqa: ARG002 - frames live in shared memory: always copied
    ) -> list[FrameRef | None]:
        """``put`` for a batch: under ``block`` the whole batch waits until it fits
        (always copied, ``owned`` or not, as ``put``)."""
        self._link.raise_if_failed()
        checked = [check_key(k) for k in keys]
        if len(checked) != len(frames):
            raise InvalidInput(f"{len(frames)} frames for {len(checked)} keys")
        present = [f for f in frames if f is not None]
        for f in present:
            check_frame(f)
        metas: Sequence[StepMeta | None] = steps if steps is not None else [None] * len(frames)
        if present:
            big = max(f.nbytes for f in present)
            self._check_size(big)
            total = sum(f.nbytes for f in present)
            if len(present) > self._s.queue_frames or total > self._s.queue_bytes:
                raise InvalidInput(
                    f"a batch of {len(present)} frames ({total} bytes) does not fit the queue "
                    f"({self._s.queue_frames} frames, {self._s.queue_bytes} bytes); raise "
                    "queue_frames or queue_bytes, or record smaller batches"
                )
            self._ring_for(big)
        return self._chunks.place_many(frames, checked, metas, streams, row_shapes)

    # ----------------------------------------------------------------- events
    def offer(self, event: Any, timeout: float | None = None) -> bool:
        """A hub event (the sink is its durable subscriber). Steps are not sent: their
        chunks carry them. An episode's end (or the run's) first hands off its open
        chunks, so it reaches the storage process after them."""
        self._link.raise_if_failed()
        kind = type(event)
        if kind is Step or kind is StepBatch:
            return True
        chunks = self._chunks
        if kind is EpisodeEnded:
            chunks.close_stream(event.episode_id)
        elif kind is RunEnded:
            chunks.close_all()
        chunks.locked(lambda: self._send((_EVENT, event), 1, timeout))
        return True

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def set_batch_size(self, rows: int) -> None:
        self._link.raise_if_failed()
        self._send((int(Cmd.BATCH_SIZE), rows))
        self._batch_size = rows

    def cut(self) -> None:
        self._chunks.close_all()

    # ----------------------------------------------------------------- durability
    def _flush(self, timeout: float | None, frames_only: bool) -> None:
        self._link.raise_if_failed()
        t0 = time.perf_counter()
        token = self._link.token()
        self._chunks.close_all()
        self._chunks.locked(lambda: self._send((int(Cmd.FLUSH), token, timeout, frames_only)))
        # A little longer than the storage process waits: its QueueFull arrives first.
        reply = self._link.reply(token, None if timeout is None else timeout + 5.0)
        if reply[2] is not None:
            raise decode_error(reply[2])
        if frames_only:
            self._flush_ms = (time.perf_counter() - t0) * 1000
            self._max_flush_ms = max(self._max_flush_ms, self._flush_ms)

    def write_note(
        self, records: list[bytes], first_id: int, timeout: float | None = None
    ) -> tuple[int, int]:
        """The storage process's writer writes the note segment (in order after the
        chunks handed off before); returns ``(segment id, size)`` from its reply, or
        raises its error (then nothing was written: a note not taken up in ``timeout``
        is cancelled there). Without a reply (the process died, or did not answer in
        time) the note may still be on disk: the error says what finishes the rm."""
        self._link.raise_if_failed()
        token = self._link.token()
        msg = (int(Cmd.NOTE), token, list(records), int(first_id), timeout)
        self._chunks.locked(lambda: self._send(msg))
        try:
            # A little longer than the storage process waits: its QueueFull arrives first.
            reply = self._link.reply(token, None if timeout is None else timeout + 5.0)
        except QueueFull as e:
            raise QueueFull(e.what, e.timeout, message=f"{e}; {_NOTE_UNKNOWN}") from e
        except WriterFailed as e:
            raise WriterFailed(f"{e}; {_NOTE_UNKNOWN}") from e
        if reply[3] is not None:
            raise decode_error(reply[3])
        sid, size = reply[2]
        return int(sid), int(size)

    def flush_frames(self, timeout: float | None = None) -> None:
        self._flush(timeout, frames_only=True)

    def flush(self, timeout: float | None = None) -> None:
        self._flush(timeout, frames_only=False)

    # ----------------------------------------------------------------- metrics
    def queue_waits(self) -> int:
        return self.budget.waits

    def frame_metrics(self) -> ServiceMetrics:
        c = self._counts
        b = self.budget
        ring = self._buffers.ring
        seg = c[Counter.CURRENT_SEGMENT]
        frames, queued_bytes = b.queued()
        return ServiceMetrics(
            queue_frames=frames,
            queue_bytes=queued_bytes,
            bound_frames=b.max_frames,
            bound_bytes=min(b.max_bytes, ring.slots * ring.slot_bytes) if ring else b.max_bytes,
            high_water_frames=b.high_water_frames,
            high_water_bytes=b.high_water_bytes,
            frames_in=b.frames_in,
            frames_written=c[_FRAMES_RELEASED],
            frames_dropped=b.dropped,
            bytes_in=b.bytes_in,
            bytes_out=c[Counter.BYTES_OUT],
            chunks_written=c[Counter.CHUNKS_WRITTEN],
            segments_sealed=c[Counter.SEGMENTS_SEALED],
            current_segment=seg - 1 if seg else None,
            blocked_seconds=b.blocked_seconds,
            blocked_waits=b.waits,
            last_flush_ms=self._flush_ms,
            max_flush_ms=self._max_flush_ms,
            error=str(self._link.error) if self._link.error else None,
            writer_wakeups=self._chunk_commands,
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
        """Hand off the open chunks, ask the storage process to commit everything and
        exit; wait for it (or its death), then free the shared memory. Raises the first
        error."""
        link = self._link
        if link.closed:
            return
        self._stop_ticker.set()
        self._ticker.join()
        if not link.closing:
            try:
                if link.error is None:
                    self._chunks.close_all()
            except WriterFailed:
                pass  # it died: the listener says how
            except BaseException:
                link.closing = True
                link.hang_up()
                link.finish()
                self._free_ring()
                raise
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
        ring = self._buffers.ring
        if ring is not None:
            ring.close()
            ring.unlink()
            self._buffers.ring = None

    def __del__(self) -> None:
        link = getattr(self, "_link", None)
        if link is not None and not link.closed:
            import warnings

            warnings.warn("ProcessStorage was not closed", ResourceWarning, stacklevel=1)
