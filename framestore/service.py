"""FrameStorageService: the producer enqueues, a writer thread compresses and appends.

The producer's cost per ``put`` is a validation, one copy and an enqueue. Everything
else (chunking, compression in a small pool, appending, fsync, rotation) happens on the
``framestore-writer`` thread and its ``framestore-compress`` pool.
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

from ._bufferpool import BufferPool
from ._chunks import ChunkWriter, MetaRecord, Written
from ._format import StepMeta
from ._lock import StoreLock
from ._refs import FrameRef, check_key, frame_nbytes
from ._serviceargs import DURABILITIES, POLICIES, ServiceMetrics, check_args
from .codecs import check_frame, check_level, codec_from_name
from .errors import (
    FrameStoreError,
    InvalidInput,
    QueueFull,
    StoreClosed,
    WriterFailed,
    writer_error,
)
from .segments import checked_segment_dir

log = logging.getLogger(logcodes.LOGGER_NAME)

__all__ = [
    "DURABILITIES",
    "POLICIES",
    "FrameRef",
    "FrameStorageService",
    "MetaRecord",
    "ServiceMetrics",
    "StepMeta",
    "remove_dead_shared_memory",
]

#: What the writer's queue holds: a frame with its ref and (optionally) its step's
#: metadata; or, without frame and ref, a step without a frame or a metadata record.
QueueItem = tuple[np.ndarray | None, FrameRef | None, StepMeta | MetaRecord | None]


def remove_dead_shared_memory() -> list[tuple[str, int]]:
    """Remove the shared memory blocks (``/dev/shm/framestore_<pid>_...``) of storage
    processes whose producer is dead: what a recorder with ``writer="process"`` leaves
    when its whole process group is SIGKILLed (its resource tracker dies with it).
    Blocks of running recorders are kept. Returns ``(name, bytes)`` of each removed.
    ``recover`` and the start of every process-writer recording call it."""
    from ._ring import remove_dead_blocks

    return remove_dead_blocks()


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
        max_latency: an open chunk is closed after this many seconds without new frames.
        on_error: called (from the writer thread) with the exception if writing fails.
        lock: take the store's writer lock (a second writer gets ``StoreLocked``).
        copy_frames: copy each frame on ``put`` (the default). False: keep the caller's
            array as it is (the storage process's frames live in shared memory); the
            caller must leave it unchanged until ``on_written`` reports its ref.
        on_written: called on the writer thread with the refs of each chunk appended.
        store_tag: the segment file headers' store tag (docs/FORMAT.md; 0: unknown).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        codec: str = "zstd",
        level: int = 3,
        chunk_frames: int = 64,
        part_frames: int = 0,
        chunk_bytes: int = 32 * 1024 * 1024,
        segment_bytes: int = 256 * 1024 * 1024,
        queue_frames: int = 1024,
        queue_bytes: int = 256 * 1024 * 1024,
        policy: str = "block",
        block_timeout: float = 10.0,
        durability: str = "balanced",
        compress_threads: int = 2,
        max_latency: float = 0.5,
        on_error: Callable[[BaseException], None] | None = None,
        lock: bool = True,
        copy_frames: bool = True,
        on_written: Callable[[list[FrameRef]], None] | None = None,
        store_tag: int = 0,
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
        self._chunk_frames = chunk_frames
        self._max_frames = queue_frames
        self._max_bytes = queue_bytes
        self._block_timeout = float(block_timeout)
        self._on_error = on_error
        self._on_written = on_written

        self.root.mkdir(parents=True, exist_ok=True)
        checked_segment_dir(self.root, create=True)  # a real directory, never a link
        self._lock = StoreLock(self.root)
        if lock:
            self._lock.acquire()

        self._cond = threading.Condition()
        self._queue: deque[QueueItem] = deque()
        self._init_state()
        self._pool = BufferPool(queue_bytes, chunk_frames) if copy_frames else None
        # A chunk never holds more than a quarter of the queue's bounds: with small
        # queues, frames must not wait for a chunk that cannot fill while the producer
        # waits for room.
        self._writer = ChunkWriter(
            self.root,
            codec=self._codec,
            level=self._level,
            chunk_frames=max(1, min(chunk_frames, queue_frames // 4)),
            part_frames=part_frames,
            chunk_bytes=max(1, min(chunk_bytes, queue_bytes // 4)),
            segment_bytes=segment_bytes,
            durability=durability,
            compress_threads=compress_threads,
            max_latency=float(max_latency),
            on_written=self._written,
            # Open chunks (one per episode) hold at most half the queue: the other half
            # keeps flowing to compression, so a full queue always drains.
            open_frames=max(1, queue_frames // 2),
            open_bytes=max(1, queue_bytes // 2),
            store_tag=store_tag,
        )
        self._thread = threading.Thread(target=self._run, name="framestore-writer", daemon=True)
        self._thread.start()

    def _init_state(self) -> None:
        """Queue accounting, the durable watermark, lifecycle flags and counters."""
        self._q_frames = 0  # accepted, not yet written (queued + being compressed)
        self._q_bytes = 0
        self._hw_frames = 0
        self._hw_bytes = 0
        self._next_seq = 0
        self._durable_seq = 0  # every frame with seq < this is written
        # Written frames above the watermark: chunks of interleaved episodes are appended
        # out of seq order. Bounded by the queue (an unwritten frame below them holds
        # the watermark, and it is closed into a chunk within max_latency or a cut).
        self._written_above: set[int] = set()
        self._cut_requested = False
        self._stopping = False
        self._closed = False
        self._error: BaseException | None = None
        self._frames_in = 0
        self._frames_written = 0
        self._frames_dropped = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self._blocked_s = 0.0
        self._last_flush_ms = 0.0
        self._max_flush_ms = 0.0
        self._warned_full = False
        self._last_snapshot = time.monotonic()

    # ----------------------------------------------------------------- producer side
    def put(
        self,
        frame: np.ndarray,
        key: tuple[int, int] = (0, 0),
        step: StepMeta | None = None,
        stream: int = 0,
    ) -> FrameRef:
        """Accept a frame for storage and return its ref at once.

        Costs one validation, one copy and an enqueue. ``step``: the step's metadata,
        written with the frame into its chunk (kept even when the frame is dropped; a
        frame of another stream than ``render`` has none). ``stream``: the frame's stream
        index in its episode (its own chunks; docs/FORMAT.md).
        Raises ``InvalidFrame`` for frames that cannot be stored losslessly,
        ``QueueFull`` when the ``block`` policy timed out, and the writer's error if the
        writer has failed.
        """
        if self._closed:
            raise StoreClosed("put() on a closed FrameStorageService")
        key_a, key_b = check_key(key)
        if self.policy == "drop" and self._full(frame_nbytes(frame)):
            # Checked before the copy: under overload, dropping must stay cheap. Bad input
            # is still an error, never hidden as a dropped frame.
            check_frame(frame)
            return self._drop(key, getattr(frame, "shape", None), step, stream)
        arr = self._copy(frame)
        nbytes = arr.nbytes
        if nbytes > self._max_bytes:
            raise InvalidInput(
                f"frame of {nbytes} bytes is larger than the queue's byte bound "
                f"({self._max_bytes}); raise queue_bytes"
            )
        with self._cond:
            self._raise_if_failed()
            if self._full(nbytes):
                if self.policy == "drop":
                    return self._drop(key, arr.shape, step, stream)
                self._wait_for_room(nbytes)
            ref = FrameRef(self._next_seq, (key_a, key_b), arr.shape, stream=stream)
            self._next_seq += 1
            self._queue.append((arr, ref, step))
            self._q_frames += 1
            self._q_bytes += nbytes
            self._frames_in += 1
            self._bytes_in += nbytes
            if self._q_frames > self._hw_frames:
                self._hw_frames = self._q_frames
            if self._q_bytes > self._hw_bytes:
                self._hw_bytes = self._q_bytes
            self._cond.notify_all()
        return ref

    def put_step(self, step: StepMeta) -> None:
        """A step without a frame: its metadata goes into its episode's next chunk.
        Not counted in the queue's bounds (a few hundred bytes; the sink's queue bounds
        the steps in flight)."""
        if self._closed:
            raise StoreClosed("put_step() on a closed FrameStorageService")
        with self._cond:
            self._raise_if_failed()
            self._queue.append((None, None, step))
            self._cond.notify_all()

    def note(self, meta: MetaRecord) -> None:
        """An ``EPISODE``, ``EPISODE_END`` or ``RUN_END`` record for the segments, in order
        with the frames and steps put before it."""
        if self._closed:
            raise StoreClosed("note() on a closed FrameStorageService")
        with self._cond:
            self._raise_if_failed()
            self._queue.append((None, None, meta))
            self._cond.notify_all()

    def put_many(
        self,
        frames: Sequence[np.ndarray | None],
        keys: Sequence[tuple[int, int]],
        steps: Sequence[StepMeta | None] | None = None,
        streams: Sequence[int] | None = None,
    ) -> list[FrameRef | None]:
        """``put`` for a batch, with one lock round and one wake-up of the writer: the
        refs in order (``None`` where the frame is ``None``). ``steps``: each row's
        metadata (rows without a frame are written as steps without one). ``streams``:
        each frame's stream index (default 0, render): one step's frames of several
        streams go in together or not at all.

        Everything is checked before anything is queued. Under ``block`` the call waits
        until the whole batch fits (so a ``QueueFull`` leaves nothing queued); under
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
        count = sum(f is not None for f in frames)
        total = sum(f.nbytes for f in frames if f is not None)
        if count > self._max_frames or total > self._max_bytes:
            raise InvalidInput(
                f"a batch of {count} frames ({total} bytes) does not fit the queue "
                f"({self._max_frames} frames, {self._max_bytes} bytes); raise queue_frames "
                "or queue_bytes, or record smaller batches"
            )
        metas: Sequence[StepMeta | None] = steps if steps is not None else [None] * len(frames)
        if len(metas) != len(frames):
            raise InvalidInput(f"{len(frames)} frames for {len(metas)} steps")
        indexes: Sequence[int] = streams if streams is not None else [0] * len(frames)
        if len(indexes) != len(frames):
            raise InvalidInput(f"{len(frames)} frames for {len(indexes)} stream indexes")
        if self.policy == "drop":
            return self._put_dropping(frames, checked, metas, indexes)
        arrs = [None if f is None else self._copy(f, checked=True) for f in frames]
        with self._cond:
            self._raise_if_failed()
            if self._full_for(count, total):
                # Open chunks may hold half the queue: a batch waiting for room asks the
                # writer to close them, or it could wait for frames that never come.
                self._cut_requested = True
                self._cond.notify_all()
                self._wait_for_room(total, count)
            refs = [
                self._enqueue(a, k, m, i) if a is not None else self._enqueue_step(m)
                for a, k, m, i in zip(arrs, checked, metas, indexes, strict=True)
            ]
            self._cond.notify_all()
        return refs

    def _put_dropping(
        self,
        frames: Sequence[np.ndarray | None],
        keys: list[tuple[int, int]],
        metas: Sequence[StepMeta | None],
        indexes: Sequence[int],
    ) -> list[FrameRef | None]:
        """``put_many`` under ``drop``: frames that do not fit are dropped one by one,
        before their copy when the queue looks full already (dropping stays cheap)."""
        room = self._max_bytes - self._q_bytes
        slots = self._max_frames - self._q_frames
        arrs: list[np.ndarray | None] = []
        for frame in frames:
            fits = frame is not None and slots > 0 and frame.nbytes <= room
            arrs.append(self._copy(frame, checked=True) if fits else None)
            if fits:
                room -= frame.nbytes
                slots -= 1
        refs: list[FrameRef | None] = []
        with self._cond:
            self._raise_if_failed()
            for frame, arr, key, meta, i in zip(frames, arrs, keys, metas, indexes, strict=True):
                if frame is None:
                    refs.append(self._enqueue_step(meta))
                elif arr is None or self._full(arr.nbytes):
                    self._frames_dropped += 1
                    if meta is not None:
                        meta.dropped = True
                    self._enqueue_step(meta)
                    refs.append(FrameRef(None, key, frame.shape, dropped=True, stream=i))
                else:
                    refs.append(self._enqueue(arr, key, meta, i))
            self._cond.notify_all()
        return refs

    def _enqueue_step(self, meta: StepMeta | None) -> None:
        """Queue a step without a frame (lock held); None: nothing to queue."""
        if meta is not None:
            self._queue.append((None, None, meta))

    def _enqueue(
        self, arr: np.ndarray, key: tuple[int, int], meta: StepMeta | None, stream: int = 0
    ) -> FrameRef:
        """Queue one copied frame (lock held, room checked)."""
        nbytes = arr.nbytes
        ref = FrameRef(self._next_seq, key, arr.shape, stream=stream)
        self._next_seq += 1
        self._queue.append((arr, ref, meta))
        self._q_frames += 1
        self._q_bytes += nbytes
        self._frames_in += 1
        self._bytes_in += nbytes
        if self._q_frames > self._hw_frames:
            self._hw_frames = self._q_frames
        if self._q_bytes > self._hw_bytes:
            self._hw_bytes = self._q_bytes
        return ref

    def _copy(self, frame: object, *, checked: bool = False) -> np.ndarray:
        """Validate (unless ``checked``) and copy ``frame`` into a recycled buffer (kept
        as it is without ``copy_frames``)."""
        if not checked:
            check_frame(frame)
        if self._pool is None:
            return frame  # type: ignore[return-value]
        return self._pool.copy(frame)  # type: ignore[arg-type]

    def _full(self, nbytes: int) -> bool:
        return self._q_frames >= self._max_frames or self._q_bytes + nbytes > self._max_bytes

    def _full_for(self, count: int, nbytes: int) -> bool:
        """Whether ``count`` more frames of ``nbytes`` in total would not fit."""
        return self._q_frames + count > self._max_frames or self._q_bytes + nbytes > self._max_bytes

    def _drop(
        self, key: tuple[int, int], shape, step: StepMeta | None, stream: int = 0
    ) -> FrameRef:
        with self._cond:
            self._frames_dropped += 1
            if step is not None:
                step.dropped = True
                self._queue.append((None, None, step))
        return FrameRef(None, key, shape, dropped=True, stream=stream)

    def _wait_for_room(self, nbytes: int, count: int = 1) -> None:
        start = time.monotonic()
        deadline = start + self._block_timeout
        try:
            while self._full_for(count, nbytes):
                self._raise_if_failed()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QueueFull(
                        "frame queue",
                        self._block_timeout,
                        f"{self._q_frames}/{self._max_frames} frames, "
                        f"{self._q_bytes}/{self._max_bytes} bytes",
                    )
                self._cond.wait(remaining)
        finally:
            self._blocked_s += time.monotonic() - start

    # ----------------------------------------------------------------- durability
    def wait_written(self, refs: list[FrameRef | None], timeout: float | None = None) -> None:
        """Block until every given (non-dropped) ref is written; closes an open chunk
        if one of them is still in it. Raises the writer's error if it failed."""
        last = -1
        for r in refs:
            if r is not None and r.seq is not None and r.seq > last:
                last = r.seq
        if last >= 0:
            self._wait_seq(last + 1, timeout)
            if self.durability == "durable":
                return  # every chunk was fsynced before it counted as written

    def _wait_seq(self, seq: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._durable_seq < seq:
                self._raise_if_failed()
                if self._stopping and not self._thread.is_alive():
                    raise StoreClosed("writer stopped before the frames were written")
                self._cut_requested = True
                self._cond.notify_all()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise QueueFull(
                        "frame writer", timeout or 0.0, "waiting for frames to be written"
                    )
                self._cond.wait(remaining if remaining is not None else 1.0)
            self._raise_if_failed()

    def cut(self) -> None:
        """Close every open chunk now (a producer that waits for room asks for it)."""
        with self._cond:
            self._cut_requested = True
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Return once every frame put so far is written (and fsynced unless ``fast``)."""
        t0 = time.perf_counter()
        with self._cond:
            target = self._next_seq
        self._wait_seq(target, timeout)
        if self.durability != "fast":
            self._run_on_writer(self._writer.fsync)
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

    def _run_on_writer(self, fn: Callable[[], object]) -> None:
        # fsync from the caller's thread is safe: the segment fd is only appended to by
        # the writer, and fsync does not move the file position.
        try:
            fn()
        except WriterFailed as e:
            self._fail(e)
            raise

    # ----------------------------------------------------------------- info
    def metrics(self) -> ServiceMetrics:
        with self._cond:
            return ServiceMetrics(
                queue_frames=self._q_frames,
                queue_bytes=self._q_bytes,
                bound_frames=self._max_frames,
                bound_bytes=self._max_bytes,
                high_water_frames=self._hw_frames,
                high_water_bytes=self._hw_bytes,
                frames_in=self._frames_in,
                frames_written=self._frames_written,
                frames_dropped=self._frames_dropped,
                bytes_in=self._bytes_in,
                bytes_out=self._bytes_out,
                chunks_written=self._writer.chunks_written,
                segments_sealed=self._writer.segments_sealed,
                current_segment=seg.segment_id if (seg := self._writer.segment) else None,
                blocked_seconds=self._blocked_s,
                last_flush_ms=self._last_flush_ms,
                max_flush_ms=self._max_flush_ms,
                error=str(self._error) if self._error else None,
            )

    @property
    def error(self) -> BaseException | None:
        return self._error

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Write everything queued, seal the current segment, stop threads, unlock.

        Raises the writer's error, if any, after cleaning up."""
        if self._closed:
            return
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
        self._raise_if_failed()

    def __enter__(self) -> FrameStorageService:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except FrameStoreError:
                pass  # the original exception is the one the caller should see

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            import warnings

            warnings.warn("FrameStorageService was not closed", ResourceWarning, stacklevel=1)

    # ----------------------------------------------------------------- writer thread
    def _raise_if_failed(self) -> None:
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
        """The writer thread: take queued frames, hand them to the chunk writer, append
        finished chunks; close the open chunk when asked (a flush, a wait for frames),
        when stopping, or once it has waited ``max_latency``."""
        writer = self._writer
        try:
            while True:
                batch, cut, stopping = self._take_batch()
                self._log_queue_state()
                for arr, ref, meta in batch:
                    if ref is not None:
                        writer.add(arr, ref, meta)  # type: ignore[arg-type]
                    elif type(meta) is MetaRecord:
                        writer.add_meta(meta)
                    else:
                        writer.add_step(meta)  # type: ignore[arg-type]
                if cut or stopping:
                    writer.close_chunk()
                else:
                    writer.close_stale()
                writer.append_ready(wait_all=cut or stopping or not batch)
                if stopping and writer.idle:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the producer, never swallowed
            self._fail(e)

    def _take_batch(self) -> tuple[list[QueueItem], bool, bool]:
        """Wait for work, then take up to 256 queued frames. Returns them, whether a cut
        was requested (and the queue is empty) and whether to stop (likewise)."""
        with self._cond:
            if (
                not self._queue
                and not self._stopping
                and not self._cut_requested
                and not self._writer.busy
            ):
                timeout = self._writer.seconds_until_stale()
                timeout = 1.0 if timeout is None else timeout
                if timeout > 0:
                    self._cond.wait(timeout)
            batch = []
            while self._queue and len(batch) < 256:
                batch.append(self._queue.popleft())
            cut = self._cut_requested and not self._queue
            if cut:
                self._cut_requested = False
            return batch, cut, self._stopping and not self._queue

    def _written(self, done: Written) -> None:
        """A chunk reached its segment: its frames leave the queue's bounds and the
        durable watermark moves past them."""
        chunk = done.chunk
        with self._cond:
            self._q_frames -= len(chunk.refs)
            self._q_bytes -= chunk.nbytes
            if self._pool is not None and chunk.frames:
                self._pool.recycle(chunk.frames, self._writer.open_streams)
            self._frames_written += len(chunk.refs)
            self._bytes_out += done.record_bytes
            above = self._written_above
            above.update(r.seq for r in chunk.refs)
            seq = self._durable_seq
            while seq in above:
                above.remove(seq)
                seq += 1
            self._durable_seq = seq
            self._cond.notify_all()
        if self._on_written is not None:
            self._on_written(chunk.refs)

    def _log_queue_state(self) -> None:
        fill = max(self._q_frames / self._max_frames, self._q_bytes / self._max_bytes)
        if fill >= logcodes.QUEUE_WARN_FRACTION:
            if not self._warned_full:
                self._warned_full = True
                log.warning(
                    "%s queue=frames queue_depth=%d queue_bytes=%d bound=%d bound_bytes=%d policy=%s",
                    logcodes.QUEUE_HIGH,
                    self._q_frames,
                    self._q_bytes,
                    self._max_frames,
                    self._max_bytes,
                    self.policy,
                )
        elif fill < logcodes.QUEUE_REARM_FRACTION:
            self._warned_full = False
        now = time.monotonic()
        if now - self._last_snapshot >= 5.0:
            self._last_snapshot = now
            log.info(
                "%s queue=frames queue_depth=%d queue_bytes=%d high_water=%d bound=%d "
                "frames_written=%d frames_dropped=%d",
                logcodes.QUEUE_SNAPSHOT,
                self._q_frames,
                self._q_bytes,
                self._hw_frames,
                self._max_frames,
                self._frames_written,
                self._frames_dropped,
            )
