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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zstandard

from telemetry import logcodes

from ._format import ChunkHeader, Codec, RecordType, pack_record
from ._lock import StoreLock
from ._segments import (
    SEGMENT_DIR,
    SegmentWriter,
    list_partials,
    list_segment_ids,
    parse_segment_name,
    segment_path,
)
from .codecs import check_frame, check_level, codec_from_name, encode_chunk
from .errors import (
    DiskFull,
    FrameStoreError,
    InvalidInput,
    QueueFull,
    StoreClosed,
    WriterFailed,
)
from .files import fsync_dir

log = logging.getLogger(logcodes.LOGGER_NAME)

POLICIES = ("block", "drop")
DURABILITIES = ("durable", "balanced", "fast")
MAX_KEY_A = 2**64 - 1
MAX_KEY_B = 2**32 - 1


class FrameRef:
    """A pointer to one stored frame.

    ``put`` returns it at once; the writer fills in ``location`` ``(segment, offset,
    slot)`` when the frame's chunk is appended. A located ref is persistent: it stays
    valid after ``close()`` and reopening the store (``FrameRef.at(*location)``).
    ``dropped`` is True when the ``drop`` policy discarded the frame.
    """

    __slots__ = ("seq", "key", "shape", "dropped", "location")

    def __init__(
        self,
        seq: int | None,
        key: tuple[int, int],
        shape: tuple[int, ...] | None,
        dropped: bool = False,
        location: tuple[int, int, int] | None = None,
    ):
        self.seq = seq
        self.key = key
        self.shape = shape
        self.dropped = dropped
        self.location = location

    @classmethod
    def at(cls, segment: int, offset: int, slot: int) -> FrameRef:
        return cls(None, (0, 0), None, location=(int(segment), int(offset), int(slot)))

    @property
    def written(self) -> bool:
        return self.location is not None

    def __repr__(self) -> str:
        state = "dropped" if self.dropped else (self.location or "pending")
        return f"FrameRef(key={self.key}, {state})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrameRef):
            return NotImplemented
        if self.location is not None or other.location is not None:
            return self.location == other.location
        return self is other

    def __hash__(self) -> int:
        return hash(self.location) if self.location is not None else id(self)


@dataclass(frozen=True)
class ServiceMetrics:
    """A snapshot of the writer's state, cheap to take from any thread."""

    queue_frames: int
    queue_bytes: int
    bound_frames: int
    bound_bytes: int
    high_water_frames: int
    high_water_bytes: int
    frames_in: int
    frames_written: int
    frames_dropped: int
    bytes_in: int
    bytes_out: int
    chunks_written: int
    segments_sealed: int
    current_segment: int | None
    blocked_seconds: float
    last_flush_ms: float
    max_flush_ms: float
    error: str | None

    @property
    def compression_ratio(self) -> float:
        return self.bytes_in / self.bytes_out if self.bytes_out else 0.0


@dataclass
class _Pending:
    frames: list[np.ndarray]
    refs: list[FrameRef]
    nbytes: int


class FrameStorageService:
    """Stores frames in append-only segment files under ``root/segments``.

    Args:
        root: the store directory (created if missing). The service takes its writer lock.
        codec: ``"zstd"`` (default), ``"png"`` or ``"raw"``; all lossless.
        level: zstd level (-7..22).
        chunk_frames: frames compressed together in one chunk.
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
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        codec: str = "zstd",
        level: int = 3,
        chunk_frames: int = 64,
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
    ):
        self._codec = codec_from_name(codec)
        self._level = check_level(self._codec, level)
        if policy not in POLICIES:
            raise InvalidInput(
                f"unknown queue policy {policy!r}; choose one of {', '.join(POLICIES)}"
            )
        if durability not in DURABILITIES:
            raise InvalidInput(
                f"unknown durability profile {durability!r}; choose one of {', '.join(DURABILITIES)}"
            )
        for name, value in (
            ("chunk_frames", chunk_frames),
            ("queue_frames", queue_frames),
            ("queue_bytes", queue_bytes),
            ("segment_bytes", segment_bytes),
            ("chunk_bytes", chunk_bytes),
            ("compress_threads", compress_threads),
        ):
            if not isinstance(value, int) or value < 1:
                raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
        if chunk_frames > 65535:
            raise InvalidInput("chunk_frames must be at most 65535")
        self.root = Path(root)
        self.codec = codec
        self.level = level
        self.policy = policy
        self.durability = durability
        self._chunk_frames = chunk_frames
        self._chunk_bytes = chunk_bytes
        self._segment_bytes = segment_bytes
        self._max_frames = queue_frames
        self._max_bytes = queue_bytes
        self._block_timeout = float(block_timeout)
        self._max_latency = float(max_latency)
        self._on_error = on_error

        (self.root / SEGMENT_DIR).mkdir(parents=True, exist_ok=True)
        self._lock = StoreLock(self.root)
        if lock:
            self._lock.acquire()

        self._cond = threading.Condition()
        self._queue: deque[tuple[np.ndarray, FrameRef]] = deque()
        self._q_frames = 0  # accepted, not yet written (queued + being compressed)
        self._q_bytes = 0
        self._hw_frames = 0
        self._hw_bytes = 0
        self._next_seq = 0
        self._durable_seq = 0  # every frame with seq < this is written
        self._cut_requested = False
        self._stopping = False
        self._closed = False
        self._error: BaseException | None = None
        self._frames_in = 0
        self._frames_written = 0
        self._frames_dropped = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self._chunks = 0
        self._sealed = 0
        self._blocked_s = 0.0
        self._last_flush_ms = 0.0
        self._max_flush_ms = 0.0
        self._warned_full = False
        self._last_snapshot = time.monotonic()

        existing = list_segment_ids(self.root) + [
            i
            for p in list_partials(self.root)
            if (i := parse_segment_name(p.name.removesuffix(".partial"))) is not None
        ]
        self._next_segment_id = max(existing, default=0) + 1
        self._segment: SegmentWriter | None = None

        self._local = threading.local()
        self._free: dict[tuple[int, ...], deque[np.ndarray]] = {}  # recycled frame buffers
        self._pool = ThreadPoolExecutor(
            max_workers=compress_threads, thread_name_prefix="framestore-compress"
        )
        self._thread = threading.Thread(target=self._run, name="framestore-writer", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- producer side
    def put(self, frame: np.ndarray, key: tuple[int, int] = (0, 0)) -> FrameRef:
        """Accept a frame for storage and return its ref at once.

        Costs one validation, one copy and an enqueue. Raises ``InvalidFrame`` for frames
        that cannot be stored losslessly, ``QueueFull`` when the ``block`` policy timed
        out, and the writer's error if the writer has failed.
        """
        if self._closed:
            raise StoreClosed("put() on a closed FrameStorageService")
        key_a, key_b = _check_key(key)
        if self.policy == "drop" and self._full(frame_nbytes(frame)):
            # Checked before the copy: under overload, dropping must stay cheap. Bad input
            # is still an error, never hidden as a dropped frame.
            check_frame(frame)
            return self._drop(key, getattr(frame, "shape", None))
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
                    return self._drop(key, arr.shape)
                self._wait_for_room(nbytes)
            ref = FrameRef(self._next_seq, (key_a, key_b), arr.shape)
            self._next_seq += 1
            self._queue.append((arr, ref))
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

    def _copy(self, frame: object) -> np.ndarray:
        """Validate and copy ``frame`` into a recycled buffer of its shape when one is
        free: fresh 100-700 KB allocations fault in new pages on every step, which
        costs the producer far more than the copy itself."""
        check_frame(frame)
        pool = self._free.get(frame.shape)  # type: ignore[union-attr]
        buf = None
        if pool:
            try:
                buf = pool.pop()
            except IndexError:  # the writer thread emptied it meanwhile
                buf = None
        if buf is None:
            buf = np.empty(frame.shape, dtype=np.uint8)  # type: ignore[union-attr]
        np.copyto(buf, frame)
        return buf

    def _recycle(self, frames: list[np.ndarray]) -> None:
        """Keep written frames' buffers for reuse (bounded: two chunks' worth, a quarter
        of the queue's bytes, and only the current shape)."""
        shape = frames[0].shape
        pool = self._free.get(shape)
        if pool is None:
            self._free = {shape: deque()}  # a new shape: let the old buffers go
            pool = self._free[shape]
        room = min(2 * self._chunk_frames, self._max_bytes // 4 // max(1, frames[0].nbytes))
        for f in frames:
            if len(pool) >= room:
                break
            pool.append(f)

    def _full(self, nbytes: int) -> bool:
        return self._q_frames >= self._max_frames or self._q_bytes + nbytes > self._max_bytes

    def _drop(self, key: tuple[int, int], shape) -> FrameRef:
        with self._cond:
            self._frames_dropped += 1
        return FrameRef(None, key, shape, dropped=True)

    def _wait_for_room(self, nbytes: int) -> None:
        start = time.monotonic()
        deadline = start + self._block_timeout
        try:
            while self._full(nbytes):
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

    def flush(self, timeout: float | None = None) -> None:
        """Return once every frame put so far is written (and fsynced unless ``fast``)."""
        t0 = time.perf_counter()
        with self._cond:
            target = self._next_seq
        self._wait_seq(target, timeout)
        if self.durability != "fast":
            self._run_on_writer(lambda: self._segment.fsync() if self._segment else None)
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
                chunks_written=self._chunks,
                segments_sealed=self._sealed,
                current_segment=self._segment.segment_id if self._segment else None,
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
        self._pool.shutdown(wait=True)
        try:
            if self._segment is not None and self._error is None:
                if self._segment.empty:
                    self._segment.discard()
                else:
                    self._segment.seal()
                    self._sealed += 1
        except WriterFailed as e:
            self._fail(e)
        finally:
            if self._segment is not None:
                self._segment.close()
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
        if isinstance(err, DiskFull):  # keep the specific type: callers catch DiskFull
            raise DiskFull(err.path, "the frame writer stopped") from err
        raise WriterFailed(f"frame writer failed: {err}") from err

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
        pending: _Pending | None = None
        pending_since = 0.0
        inflight: deque[tuple[Future, _Pending]] = deque()
        # A chunk never holds more than a quarter of the queue's bounds: with small
        # queues, frames must not wait for a chunk that cannot fill while the producer
        # waits for room.
        chunk_frames = max(1, min(self._chunk_frames, self._max_frames // 4))
        chunk_bytes = max(1, min(self._chunk_bytes, self._max_bytes // 4))
        try:
            while True:
                with self._cond:
                    if (
                        not self._queue
                        and not self._stopping
                        and not self._cut_requested
                        and not inflight
                    ):
                        timeout = (
                            self._max_latency - (time.monotonic() - pending_since)
                            if pending
                            else 1.0
                        )
                        if timeout > 0:
                            self._cond.wait(timeout)
                    batch = []
                    while self._queue and len(batch) < 256:
                        batch.append(self._queue.popleft())
                    cut = self._cut_requested and not self._queue
                    if cut:
                        self._cut_requested = False
                    stopping = self._stopping and not self._queue
                self._log_queue_state()
                for arr, ref in batch:
                    if pending is not None and not self._fits(pending, arr, ref):
                        inflight.append((self._submit(pending), pending))
                        pending = None
                    if pending is None:
                        pending = _Pending([], [], 0)
                        pending_since = time.monotonic()
                    pending.frames.append(arr)
                    pending.refs.append(ref)
                    pending.nbytes += arr.nbytes
                    if len(pending.frames) >= chunk_frames or pending.nbytes >= chunk_bytes:
                        inflight.append((self._submit(pending), pending))
                        pending = None
                idle_too_long = (
                    pending is not None and time.monotonic() - pending_since >= self._max_latency
                )
                if pending is not None and (cut or stopping or (idle_too_long and not batch)):
                    inflight.append((self._submit(pending), pending))
                    pending = None
                # Append finished chunks in order; wait for all when a cut or stop asks.
                wait_all = cut or stopping or not batch
                while inflight and (
                    wait_all or inflight[0][0].done() or len(inflight) > self._pool._max_workers + 1
                ):
                    fut, chunk = inflight.popleft()
                    self._append(chunk, fut.result())
                if stopping and pending is None and not inflight:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the producer, never swallowed
            for fut, _ in inflight:
                fut.cancel()
            self._fail(e)

    def _fits(self, pending: _Pending, arr: np.ndarray, ref: FrameRef) -> bool:
        first = pending.refs[0]
        return first.key[0] == ref.key[0] and pending.frames[0].shape == arr.shape

    def _submit(self, chunk: _Pending) -> Future:
        return self._pool.submit(self._encode, chunk.frames)

    def _encode(self, frames: list[np.ndarray]) -> tuple[tuple[int, ...], bytes]:
        compressor = None
        if self._codec == Codec.ZSTD:
            compressor = getattr(self._local, "zc", None)
            if compressor is None:
                compressor = zstandard.ZstdCompressor(level=self._level, write_content_size=True)
                self._local.zc = compressor
        staging = None
        if self._codec == Codec.ZSTD:
            need = len(frames) * frames[0].nbytes
            staging = getattr(self._local, "staging", None)
            if staging is None or staging.size < need:
                staging = self._local.staging = np.empty(need, dtype=np.uint8)
        return encode_chunk(frames, self._codec, compressor, staging)

    def _append(self, chunk: _Pending, encoded: tuple[tuple[int, ...], bytes]) -> None:
        lengths, data = encoded
        first = chunk.frames[0]
        header = ChunkHeader(
            codec=int(self._codec),
            ndim=first.ndim,
            height=first.shape[0],
            width=first.shape[1],
            channels=first.shape[2] if first.ndim == 3 else 1,
            stream_key=chunk.refs[0].key[0],
            frame_keys=tuple(r.key[1] for r in chunk.refs),
            lengths=lengths,
        )
        record = pack_record(RecordType.CHUNK, header.pack(), data)
        seg = self._segment
        if seg is not None and not seg.empty and seg.size + len(record) > self._segment_bytes:
            seg.seal()
            seg.close()
            with self._cond:
                self._sealed += 1
            seg = self._segment = None
        if seg is None:
            seg = self._segment = self._open_segment()
        offset = seg.append(record, frames=len(chunk.refs))
        if self.durability == "durable":
            seg.fsync()
        for slot, ref in enumerate(chunk.refs):
            ref.location = (seg.segment_id, offset, slot)
        with self._cond:
            self._q_frames -= len(chunk.refs)
            self._q_bytes -= chunk.nbytes
            self._recycle(chunk.frames)
            self._frames_written += len(chunk.refs)
            self._bytes_out += len(record)
            self._chunks += 1
            self._durable_seq = chunk.refs[-1].seq + 1
            self._cond.notify_all()

    def _open_segment(self) -> SegmentWriter:
        sid = self._next_segment_id
        self._next_segment_id += 1
        seg = SegmentWriter(segment_path(self.root, sid), sid)
        if self.durability == "durable":
            # fsync of the file alone does not make its new directory entry durable
            fsync_dir(self.root / SEGMENT_DIR)
        return seg

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


def frame_nbytes(frame: object) -> int:
    return int(getattr(frame, "nbytes", 0) or 0)


def _check_key(key: object) -> tuple[int, int]:
    try:
        a, b = key  # type: ignore[misc]
        a, b = int(a), int(b)
    except (TypeError, ValueError):
        raise InvalidInput(f"frame key must be a pair of integers, got {key!r}") from None
    if not (0 <= a <= MAX_KEY_A and 0 <= b <= MAX_KEY_B):
        raise InvalidInput(f"frame key {key!r} out of range (0..2**64-1, 0..2**32-1)")
    return a, b
