"""FrameStorageService: the producer places frames into open chunks, a writer thread
compresses and appends whole chunks.

The producer's cost per ``put`` is a validation and one copy, straight into its
episode's open chunk (``_openchunks``): no queue operation and no wake-up per frame.
The writer thread is woken once per chunk (or when ``max_latency`` expires, or on a
flush); it compresses the chunk's buffer where it lies on a small pool
(``framestore-compress``), appends, fsyncs as the profile says and hands the chunk back
(``on_written``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from telemetry import logcodes

from .._closing import close_on_exit
from .._format import RecordType
from .._format.steps import StepMeta
from ..disk._lock import StoreLock
from ..disk._refs import FrameRef, check_key
from ..disk.codecs import check_frame, check_level, codec_from_name
from ..disk.segments import checked_segment_dir
from ..errors import (
    InvalidInput,
    QueueFull,
    StoreClosed,
    WriterFailed,
    writer_error,
)
from ._budget import QueueBudget
from ._chunks import Chunk, ChunkWriter, MetaRecord, NoteSegment, Written
from ._openchunks import ArrayBuffers, ChunkAssembler
from ._serviceargs import DURABILITIES, POLICIES, ServiceMetrics, check_args

log = logging.getLogger(logcodes.LOGGER_NAME)

__all__ = [
    "DURABILITIES",
    "POLICIES",
    "FrameRef",
    "CHUNK_BYTES",
    "MAX_LATENCY",
    "FrameStorageService",
    "MetaRecord",
    "NoteSegment",
    "ServiceMetrics",
    "StepMeta",
    "remove_dead_shared_memory",
]

#: Seconds a chunk stays open at most (after its first frame or step): the latency
#: part of the durability bound (docs/RELIABILITY.md).
MAX_LATENCY = 0.5
#: A chunk is also closed once its raw frames reach this many bytes.
CHUNK_BYTES = 32 * 1024 * 1024
#: Longest a producer waiting for room sleeps between checks (a release it missed).
_ROOM_POLL_S = 0.005


def remove_dead_shared_memory() -> list[tuple[str, int]]:
    """Remove the shared memory blocks (``/dev/shm/framestore_<pid>_...``) of storage
    processes whose producer is dead: what a recorder with ``writer="process"`` leaves
    when its whole process group is SIGKILLed (its resource tracker dies with it).
    Blocks of running recorders are kept. Returns ``(name, bytes)`` of each removed.
    ``recover`` and the start of every process-writer recording call it."""
    from .process._ring import remove_dead_blocks

    return remove_dead_blocks()


def _note_late(timeout: float | None) -> str:
    return (
        f"the tombstone was not written within {timeout or 0.0:g}s: the writer is still "
        "writing what was recorded before it; nothing was deleted (try again later, or "
        "with a longer timeout)"
    )


class FrameStorageService:
    """Stores frames in append-only segment files under ``root/segments``.

    Args:
        root: the store directory (created if missing). The service takes its writer lock.
        codec: ``"zstd"`` (default), ``"png"`` or ``"raw"``; all lossless.
        level: zstd level (-7..22).
        chunk_frames: frames compressed together in one chunk.
        part_frames: zstd: chunks of more frames are compressed in independently
            decodable parts of this many frames (0: one zstd frame per chunk).
        chunk_bytes: a chunk is also closed once its raw frames reach this many bytes.
        segment_bytes: a segment is sealed and a new one started beyond this size.
        queue_frames, queue_bytes: bounds on frames accepted but not yet written.
        policy: ``"block"`` (wait up to ``block_timeout``, then ``QueueFull``) or ``"drop"``
            (the frame is not stored, counted, and its ref has ``dropped=True``).
        durability: ``"durable"`` fsyncs each chunk before it counts as written;
            ``"balanced"`` fsyncs on flush/seal/close; ``"fast"`` only on seal/close.
        compress_threads: size of the compression pool (zstandard releases the GIL).
        max_latency: an open chunk is closed this many seconds after its first frame.
        on_error: called (from the writer thread) with the exception if writing fails.
        lock: take the store's writer lock (a second writer gets ``StoreLocked``).
        on_written: called on the writer thread with each chunk once it is appended
            (its refs located; fsynced under ``durable``), before a flush sees it.
        on_meta: called on the writer thread with each ``note``d record once appended.
        store_tag: the segment file headers' store tag (docs/FORMAT.md; 0: unknown).
        first_segment_id: the lowest id a new segment takes (``ChunkWriter``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        codec: str = "zstd",
        level: int = 3,
        chunk_frames: int = 64,
        part_frames: int = 0,
        chunk_bytes: int = CHUNK_BYTES,
        segment_bytes: int = 256 * 1024 * 1024,
        queue_frames: int = 1024,
        queue_bytes: int = 256 * 1024 * 1024,
        policy: str = "block",
        block_timeout: float = 10.0,
        durability: str = "balanced",
        compress_threads: int = 2,
        max_latency: float = MAX_LATENCY,
        on_error: Callable[[BaseException], None] | None = None,
        lock: bool = True,
        on_written: Callable[[Chunk], None] | None = None,
        on_meta: Callable[[MetaRecord], None] | None = None,
        store_tag: int = 0,
        first_segment_id: int = 0,
    ):
        self._codec = codec_from_name(codec)
        self._level = check_level(self._codec, level)
        check_args(
            policy,
            durability,
            chunk_frames=chunk_frames,
            queue_frames=queue_frames,
            queue_bytes=queue_bytes,
            segment_bytes=segment_bytes,
            chunk_bytes=chunk_bytes,
            compress_threads=compress_threads,
        )
        self.root = Path(root)
        self.codec = codec
        self.level = level
        self.policy = policy
        self.durability = durability
        self._max_bytes = queue_bytes
        self._on_error = on_error
        self._on_written = on_written
        self._on_meta = on_meta

        self.root.mkdir(parents=True, exist_ok=True)
        checked_segment_dir(self.root, create=True)  # a real directory, never a link
        self._lock = StoreLock(self.root)
        if lock:
            self._lock.acquire()

        self._cond = threading.Condition()
        self._queue: deque[Chunk | MetaRecord | NoteSegment] = deque()
        self._queued_items = 0  # chunks and records handed to the writer thread
        self._done_items = 0  # ... and appended (in the same order)
        self._frames_out = 0  # frames (and their raw bytes) written: the budget's release
        self._raw_out = 0
        self._wakeups = 0
        self._stopping = False
        self._closed = False
        self._error: BaseException | None = None
        self._bytes_out = 0
        self._last_flush_ms = 0.0
        self._max_flush_ms = 0.0
        self.budget = QueueBudget(
            queue_frames, queue_bytes, policy, float(block_timeout), self._released
        )
        # A chunk never holds more than a quarter of the queue's bounds and the open
        # chunks together at most half: the other half keeps flowing to compression, so
        # a producer waiting for room always sees it come. Chunk buffers are recycled
        # up to the queue's byte bound (what the frames in them are bounded by).
        self._buffers = ArrayBuffers(queue_bytes)
        self._chunks = ChunkAssembler(
            self.budget,
            self._buffers,
            self._hand_off,
            self,
            chunk_frames=max(1, min(chunk_frames, queue_frames // 4)),
            chunk_bytes=max(1, min(chunk_bytes, queue_bytes // 4)),
            max_latency=float(max_latency),
            open_frames=max(1, queue_frames // 2),
            open_bytes=max(1, queue_bytes // 2),
            keep_owned=True,
        )
        self._writer = ChunkWriter(
            self.root,
            codec=self._codec,
            level=self._level,
            part_frames=part_frames,
            segment_bytes=segment_bytes,
            durability=durability,
            compress_threads=compress_threads,
            on_written=self._written,
            on_meta=self._appended_meta,
            on_note=self._noted,
            store_tag=store_tag,
            first_segment_id=first_segment_id,
        )
        self._thread = threading.Thread(target=self._run, name="framestore-writer", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- producer side
    def put(
        self,
        frame: np.ndarray,
        key: tuple[int, int] = (0, 0),
        step: StepMeta | None = None,
        stream: int = 0,
        row_shape: str | None = None,
        *,
        owned: bool = False,
    ) -> FrameRef:
        """Accept a frame for storage and return its ref at once.

        Costs one validation and one copy into its stream's open chunk; none with
        ``owned`` (the caller hands a C-contiguous frame over and will not change it: it
        is kept until written, its bytes counted in the queue's bounds as a copy's). ``step``: the
        step's metadata, written with the frame into its chunk (kept even when the frame
        is dropped; a frame of another stream than ``render`` has none). ``stream``: the
        frame's stream index in its episode (its own chunks; docs/FORMAT.md);
        ``row_shape``: such a frame's own shape, as its pointer row keeps it. Raises
        ``InvalidFrame`` for frames that cannot be stored
        losslessly, ``QueueFull`` when the ``block`` policy timed out, and the writer's
        error if the writer has failed.
        """
        if self._closed:
            raise StoreClosed("put() on a closed FrameStorageService")
        key = check_key(key)
        check_frame(frame)
        if frame.nbytes > self._max_bytes:
            self._check_size(frame.nbytes)
        if self._error is not None:
            self.raise_if_failed()
        return self._chunks.place(frame, key, step, stream, row_shape, owned=owned)

    def put_step(self, step: StepMeta) -> None:
        """A step without a frame: its metadata goes into its episode's next chunk.
        Not counted in the queue's bounds (a few hundred bytes)."""
        if self._closed:
            raise StoreClosed("put_step() on a closed FrameStorageService")
        self.raise_if_failed()
        self._chunks.add_step(step)

    def note(self, meta: MetaRecord) -> None:
        """An ``EPISODE``, ``EPISODE_END`` or ``RUN_END`` record for the segments, in order
        with the frames and steps put before it (an episode's end closes its chunks)."""
        if self._closed:
            raise StoreClosed("note() on a closed FrameStorageService")
        self.raise_if_failed()
        chunks = self._chunks
        if meta.stream_key is not None and meta.type != RecordType.EPISODE:
            chunks.close_stream(meta.stream_key)
        chunks.locked(lambda: self._enqueue(meta))

    def write_note(
        self, records: list[bytes], first_id: int, timeout: float | None = None
    ) -> tuple[int, int]:
        """Write a note segment holding ``records`` (an ``rm``'s tombstone) on the
        writer thread, after what was handed off before, at an id no segment of this
        writer takes (``first_id`` at least); returns ``(segment id, size)`` once it is
        sealed, fsynced and in place. The recording goes on meanwhile. Raises the
        note's own error (the recording goes on; nothing of it is left), the writer's
        error if it failed, or ``QueueFull`` when the writer had not taken it up after
        ``timeout`` seconds: it is cancelled then, never written. Once taken up it is
        waited for (one small file)."""
        if self._closed:
            raise StoreClosed("write_note() on a closed FrameStorageService")
        self.raise_if_failed()
        note = NoteSegment(list(records), int(first_id))
        self._chunks.locked(lambda: self._enqueue(note))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not note.done:
                self.raise_if_failed()
                if not self._thread.is_alive():
                    raise StoreClosed("writer stopped before the note segment was written")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    if note.cancel():
                        raise QueueFull("frame writer", timeout or 0.0, message=_note_late(timeout))
                    deadline = remaining = None  # being written: its end is near
                self._cond.wait(remaining if remaining is not None else 1.0)
        if note.error is not None:
            raise note.error
        assert note.segment_id is not None
        return note.segment_id, note.size

    def put_many(
        self,
        frames: Sequence[np.ndarray | None],
        keys: Sequence[tuple[int, int]],
        steps: Sequence[StepMeta | None] | None = None,
        streams: Sequence[int] | None = None,
        row_shapes: Sequence[str | None] | None = None,
        *,
        owned: bool = False,
    ) -> list[FrameRef | None]:
        """``put`` for a batch, under one lock round: the refs in order (``None`` where
        the frame is ``None``; ``owned``: as ``put``'s, for every frame). ``steps``: each row's metadata (rows without a frame are
        written as steps without one). ``streams``: each frame's stream index (default
        0, render), ``row_shapes`` the own shape of each frame of another stream: one
        step's frames of several streams go in together or not at all.

        Everything is checked before anything is placed. Under ``block`` the call waits
        until the whole batch fits (so a ``QueueFull`` leaves nothing placed); under
        ``drop`` each frame that does not fit is dropped (its ref says so). A batch must
        fit in the queue's bounds.
        """
        if self._closed:
            raise StoreClosed("put_many() on a closed FrameStorageService")
        checked = [check_key(k) for k in keys]
        if len(checked) != len(frames):
            raise InvalidInput(f"{len(frames)} frames for {len(checked)} keys")
        for frame in frames:
            if frame is not None:
                check_frame(frame)
        sizes = [f.nbytes for f in frames if f is not None]  # (a list: no generator per row)
        count, total = len(sizes), sum(sizes)
        budget = self.budget
        if count > budget.max_frames or total > budget.max_bytes:
            raise InvalidInput(
                f"a batch of {count} frames ({total} bytes) does not fit the queue "
                f"({budget.max_frames} frames, {budget.max_bytes} bytes); raise queue_frames "
                "or queue_bytes, or record smaller batches"
            )
        metas: Sequence[StepMeta | None] = steps if steps is not None else [None] * len(frames)
        if len(metas) != len(frames):
            raise InvalidInput(f"{len(frames)} frames for {len(metas)} steps")
        indexes: Sequence[int] = streams if streams is not None else [0] * len(frames)
        if len(indexes) != len(frames):
            raise InvalidInput(f"{len(frames)} frames for {len(indexes)} stream indexes")
        self.raise_if_failed()
        return self._chunks.place_many(frames, checked, metas, indexes, row_shapes, owned=owned)

    def hand_off(self, chunk: Chunk) -> None:
        """A chunk built elsewhere (the storage process's, in a ring slot) for the
        writer: counted in the queue as its frames, appended in order."""
        self.budget.take(len(chunk.refs), chunk.nbytes)
        for ref in chunk.refs:
            ref.seq = self._chunks.next_seq
            self._chunks.next_seq += 1
        self._chunks.locked(lambda: self._hand_off(chunk))

    def _check_size(self, nbytes: int) -> None:
        if nbytes > self._max_bytes:
            raise InvalidInput(
                f"frame of {nbytes} bytes is larger than the queue's byte bound "
                f"({self._max_bytes}); raise queue_bytes"
            )

    def _hand_off(self, chunk: Chunk) -> None:
        """The assembler's hand-off: one append and one wake-up per chunk."""
        self._enqueue(chunk)

    def _enqueue(self, item: Chunk | MetaRecord | NoteSegment) -> None:
        with self._cond:
            self._queue.append(item)
            self._queued_items += 1
            self._wakeups += 1
            self._cond.notify_all()

    def _released(self) -> tuple[int, int]:
        return self._frames_out, self._raw_out

    # the budget's Waiter: a producer waiting for room
    def wait(self, seconds: float) -> None:
        """Wait (briefly) for the writer to write something."""
        with self._cond:
            self._cond.wait(min(seconds, _ROOM_POLL_S))

    # ----------------------------------------------------------------- durability
    def wait_written(self, refs: list[FrameRef | None], timeout: float | None = None) -> None:
        """Block until every given (non-dropped) ref is written; closes the open
        chunks first. Raises the writer's error if it failed."""
        if any(r is not None and not r.dropped and r.location is None for r in refs):
            self._write_everything(timeout)

    def _write_everything(self, timeout: float | None) -> None:
        """Hand off every open chunk and wait until everything handed off is appended."""
        self._chunks.close_all()
        with self._cond:
            target = self._queued_items
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._done_items < target:
                self.raise_if_failed()
                if self._stopping and not self._thread.is_alive():
                    raise StoreClosed("writer stopped before the frames were written")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise QueueFull(
                        "frame writer", timeout or 0.0, "waiting for frames to be written"
                    )
                self._cond.wait(remaining if remaining is not None else 1.0)
            self.raise_if_failed()

    def cut(self) -> None:
        """Hand off every open chunk now."""
        self._chunks.close_all()

    def flush(self, timeout: float | None = None) -> None:
        """Return once every frame put so far is written (and fsynced unless ``fast``),
        and every record noted so far appended."""
        t0 = time.perf_counter()
        self._write_everything(timeout)
        if self.durability != "fast":
            try:
                self._writer.fsync()
            except WriterFailed as e:
                # fsync from the caller's thread is safe: the segment fd is only appended
                # to by the writer, and fsync does not move the file position.
                self._fail(e)
                raise
        ms = (time.perf_counter() - t0) * 1000
        with self._cond:
            self._last_flush_ms = ms
            self._max_flush_ms = max(self._max_flush_ms, ms)
        if ms > logcodes.SLOW_FLUSH_MS:
            log.warning(
                "%s queue=frames ms=%.0f threshold_ms=%.0f",
                logcodes.FLUSH_SLOW,
                ms,
                logcodes.SLOW_FLUSH_MS,
            )

    # ----------------------------------------------------------------- info
    def metrics(self) -> ServiceMetrics:
        b = self.budget
        frames, queued_bytes = b.queued()
        with self._cond:
            return ServiceMetrics(
                queue_frames=frames,
                queue_bytes=queued_bytes,
                bound_frames=b.max_frames,
                bound_bytes=b.max_bytes,
                high_water_frames=b.high_water_frames,
                high_water_bytes=b.high_water_bytes,
                frames_in=b.frames_in,
                frames_written=self._frames_out,
                frames_dropped=b.dropped,
                bytes_in=b.bytes_in,
                bytes_out=self._bytes_out,
                chunks_written=self._writer.chunks_written,
                segments_sealed=self._writer.segments_sealed,
                current_segment=seg.segment_id if (seg := self._writer.segment) else None,
                blocked_seconds=b.blocked_seconds,
                blocked_waits=b.waits,
                last_flush_ms=self._last_flush_ms,
                max_flush_ms=self._max_flush_ms,
                error=str(self._error) if self._error else None,
                writer_wakeups=self._wakeups,
            )

    @property
    def error(self) -> BaseException | None:
        return self._error

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Write everything placed, seal the current segment, stop threads, unlock.

        Raises the writer's error, if any, after cleaning up."""
        if self._closed:
            return
        try:
            self._chunks.close_all()
        finally:
            self._closed = True
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            self._thread.join()
            try:
                self._writer.finish(seal=self._error is None)
            except WriterFailed as e:
                self._fail(e)
            finally:
                self._lock.release()
        self.raise_if_failed()

    def __enter__(self) -> FrameStorageService:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        close_on_exit(self.close, failing=exc_type is not None)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            import warnings

            warnings.warn("FrameStorageService was not closed", ResourceWarning, stacklevel=1)

    # ----------------------------------------------------------------- writer thread
    def raise_if_failed(self) -> None:
        """Raise the writer's error, if it failed."""
        err = self._error
        if err is None:
            return
        raise writer_error(err) from err

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()
        log.error("frame writer failed: %s", exc)
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:  # a broken callback must not hide the real error
                log.exception("on_error callback raised")

    def _run(self) -> None:
        """The writer thread: wait for a chunk (or the next latency deadline), submit
        what was handed off, append compressed chunks in order."""
        writer = self._writer
        cond = self._cond
        tick = self._chunks.max_latency
        try:
            while True:
                with cond:
                    if not self._queue and not self._stopping and not writer.busy and tick > 0:
                        cond.wait(tick)
                    items = list(self._queue)
                    self._queue.clear()
                    stopping = self._stopping
                if not stopping:
                    tick = self._chunks.close_stale()  # hands off; seen next round
                for item in items:
                    if type(item) is MetaRecord:
                        writer.add_meta(item)
                    elif type(item) is NoteSegment:
                        writer.add_note(item)
                    else:
                        writer.submit(item)  # type: ignore[arg-type]
                writer.append_ready(wait_all=stopping or not items)
                if stopping and writer.idle and not self._queue:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the producer, never swallowed
            self._fail(e)

    def _written(self, done: Written) -> None:
        """A chunk reached its segment: its frames leave the queue's bounds and a flush
        waiting for it may return."""
        chunk = done.chunk
        if self._on_written is not None:
            self._on_written(chunk)
        if type(chunk.buffer) is np.ndarray:
            self._buffers.put_back(chunk.buffer)
        with self._cond:
            self._frames_out += len(chunk.refs)
            self._raw_out += chunk.nbytes
            self._bytes_out += done.record_bytes
            self._done_items += 1
            self._cond.notify_all()

    def _noted(self, note: NoteSegment) -> None:
        """A note segment is written (or failed): its ``write_note`` may return."""
        with self._cond:
            self._done_items += 1
            self._cond.notify_all()

    def _appended_meta(self, meta: MetaRecord) -> None:
        if self._on_meta is not None:
            self._on_meta(meta)
        with self._cond:
            self._done_items += 1
            self._cond.notify_all()
