"""The writer side of frame storage: group frames into chunks, compress them on a small
pool, append them in order to segment files (rotating and sealing), fsync as the
durability profile says. Runs on one writer thread; knows nothing of queues.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import zstandard

from ._format import ChunkHeader, Codec, RecordType, pack_record
from ._refs import FrameRef
from .codecs import encode_chunk
from .files import fsync_dir
from .segments import SegmentWriter, next_segment_id, segment_dir, segment_path


@dataclass
class Chunk:
    """Frames (one stream, one shape) on their way into one CHUNK record."""

    frames: list[np.ndarray] = field(default_factory=list)
    refs: list[FrameRef] = field(default_factory=list)
    nbytes: int = 0
    since: float = field(default_factory=time.monotonic)

    def fits(self, arr: np.ndarray, ref: FrameRef) -> bool:
        return self.refs[0].key[0] == ref.key[0] and self.frames[0].shape == arr.shape


@dataclass(frozen=True)
class Written:
    """A chunk appended to a segment: its frames are located and (per profile) durable."""

    chunk: Chunk
    record_bytes: int


class ChunkWriter:
    """Chunks, compresses and appends frames for one store (see the module docstring).

    Args:
        root: the store directory.
        codec, level: how chunks are encoded.
        chunk_frames, chunk_bytes: a chunk is closed at this many frames or raw bytes.
        segment_bytes: a segment is sealed and a new one started beyond this size.
        durability: ``durable`` fsyncs each chunk (and a new segment's directory).
        compress_threads: size of the compression pool (zstandard releases the GIL).
        max_latency: an open chunk is closed after this many seconds without new frames.
        on_written: called on the writer thread for every appended chunk, in order.
    """

    def __init__(
        self,
        root: os.PathLike | str,
        *,
        codec: Codec,
        level: int,
        chunk_frames: int,
        chunk_bytes: int,
        segment_bytes: int,
        durability: str,
        compress_threads: int,
        max_latency: float,
        on_written: Callable[[Written], None],
    ):
        self.root = root
        self._codec = codec
        self._level = level
        self._chunk_frames = chunk_frames
        self._chunk_bytes = chunk_bytes
        self._segment_bytes = segment_bytes
        self._durable = durability == "durable"
        self._max_latency = max_latency
        self._on_written = on_written
        self._threads = compress_threads
        self._pool = ThreadPoolExecutor(
            max_workers=compress_threads, thread_name_prefix="framestore-compress"
        )
        self._local = threading.local()
        self._pending: Chunk | None = None
        self._inflight: deque[tuple[Future, Chunk]] = deque()
        self._next_segment_id = next_segment_id(root)
        self.segment: SegmentWriter | None = None
        self.chunks_written = 0
        self.segments_sealed = 0

    # ----------------------------------------------------------------- feeding
    def add(self, arr: np.ndarray, ref: FrameRef) -> None:
        """Put a frame into the open chunk (closing it first when it cannot take it)."""
        pending = self._pending
        if pending is not None and not pending.fits(arr, ref):
            self._submit()
            pending = None
        if pending is None:
            pending = self._pending = Chunk()
        pending.frames.append(arr)
        pending.refs.append(ref)
        pending.nbytes += arr.nbytes
        if len(pending.frames) >= self._chunk_frames or pending.nbytes >= self._chunk_bytes:
            self._submit()

    def close_chunk(self) -> None:
        """Submit the open chunk, however small."""
        if self._pending is not None:
            self._submit()

    def seconds_until_stale(self) -> float | None:
        """Seconds before the open chunk has waited ``max_latency`` (None: no open chunk)."""
        if self._pending is None:
            return None
        return self._max_latency - (time.monotonic() - self._pending.since)

    @property
    def idle(self) -> bool:
        """Nothing open and nothing being compressed."""
        return self._pending is None and not self._inflight

    @property
    def busy(self) -> bool:
        """Chunks are being compressed."""
        return bool(self._inflight)

    def append_ready(self, *, wait_all: bool) -> None:
        """Append compressed chunks in order: those done (and, to bound the pool's
        backlog, the oldest), or all of them with ``wait_all``."""
        inflight = self._inflight
        while inflight and (wait_all or inflight[0][0].done() or len(inflight) > self._threads + 1):
            fut, chunk = inflight.popleft()
            self._append(chunk, fut.result())

    # ----------------------------------------------------------------- segments
    def fsync(self) -> None:
        if self.segment is not None:
            self.segment.fsync()

    def finish(self, *, seal: bool) -> None:
        """Stop the pool; seal (or, when empty, delete) the open segment when ``seal``."""
        for fut, _ in self._inflight:
            fut.cancel()
        self._pool.shutdown(wait=True)
        seg = self.segment
        if seg is None:
            return
        try:
            if seal:
                if seg.empty:
                    seg.discard()
                else:
                    seg.seal()
                    self.segments_sealed += 1
        finally:
            seg.close()

    # ----------------------------------------------------------------- internals
    def _submit(self) -> None:
        chunk, self._pending = self._pending, None
        self._inflight.append((self._pool.submit(self._encode, chunk.frames), chunk))

    def _encode(self, frames: list[np.ndarray]) -> tuple[tuple[int, ...], bytes]:
        """On a pool thread: each keeps its own zstd compressor and staging buffer
        (compressors are not thread-safe)."""
        local = self._local
        compressor = staging = None
        if self._codec == Codec.ZSTD:
            compressor = getattr(local, "zc", None)
            if compressor is None:
                compressor = zstandard.ZstdCompressor(level=self._level, write_content_size=True)
                local.zc = compressor
            need = len(frames) * frames[0].nbytes
            staging = getattr(local, "staging", None)
            if staging is None or staging.size < need:
                staging = local.staging = np.empty(need, dtype=np.uint8)
        return encode_chunk(frames, self._codec, compressor, staging)

    def _append(self, chunk: Chunk, encoded: tuple[tuple[int, ...], bytes]) -> None:
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
        seg = self.segment
        if seg is not None and not seg.empty and seg.size + len(record) > self._segment_bytes:
            seg.seal()
            seg.close()
            self.segments_sealed += 1
            seg = self.segment = None
        if seg is None:
            seg = self.segment = self._open_segment()
        offset = seg.append(record, frames=len(chunk.refs))
        if self._durable:
            seg.fsync()
        for slot, ref in enumerate(chunk.refs):
            ref.location = (seg.segment_id, offset, slot)
        self.chunks_written += 1
        self._on_written(Written(chunk, len(record)))

    def _open_segment(self) -> SegmentWriter:
        sid = self._next_segment_id
        self._next_segment_id += 1
        seg = SegmentWriter(segment_path(self.root, sid), sid)
        if self._durable:
            # fsync of the file alone does not make its new directory entry durable
            fsync_dir(segment_dir(self.root))
        return seg
