"""The writer side of frame storage: group frames into chunks, compress them on a small
pool, append them in order to segment files (rotating and sealing), fsync as the
durability profile says. Runs on one writer thread; knows nothing of queues.

Chunking keeps ONE open chunk per stream (episode): frames of interleaved episodes (a
vector environment recorded through ``Recorder.record_steps``) still make chunks of
consecutive steps of one episode. The open chunks are bounded (count, frames, bytes):
past a bound the biggest is closed. A segment then interleaves chunks of several
episodes; each episode's chunks appear in step order (docs/FORMAT.md).
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

#: Most chunks open at once (one per stream): past it the biggest is closed.
MAX_OPEN_CHUNKS = 256


@dataclass
class Chunk:
    """Frames (one stream, one shape) on their way into one CHUNK record."""

    frames: list[np.ndarray] = field(default_factory=list)
    refs: list[FrameRef] = field(default_factory=list)
    nbytes: int = 0
    last: float = field(default_factory=time.monotonic)  # when its last frame came


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
        open_frames, open_bytes: bounds on the frames held by all open chunks together
            (the biggest open chunk is closed past them).
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
        open_frames: int | None = None,
        open_bytes: int | None = None,
    ):
        self.root = root
        self._codec = codec
        self._level = level
        self._chunk_frames = chunk_frames
        self._chunk_bytes = chunk_bytes
        self._open_frames_bound = open_frames or chunk_frames
        self._open_bytes_bound = open_bytes or chunk_bytes
        self._segment_bytes = segment_bytes
        self._durable = durability == "durable"
        self._max_latency = max_latency
        self._on_written = on_written
        self._threads = compress_threads
        self._pool = ThreadPoolExecutor(
            max_workers=compress_threads, thread_name_prefix="framestore-compress"
        )
        self._local = threading.local()
        self._open: dict[int, Chunk] = {}  # stream key -> its open chunk, oldest first
        self._open_frames = 0
        self._open_bytes = 0
        self._inflight: deque[tuple[Future, Chunk]] = deque()
        self._next_segment_id = next_segment_id(root)
        self.segment: SegmentWriter | None = None
        self.chunks_written = 0
        self.segments_sealed = 0

    # ----------------------------------------------------------------- feeding
    def add(self, arr: np.ndarray, ref: FrameRef) -> None:
        """Put a frame into its stream's open chunk (closing that chunk first when the
        shape changed); close chunks that are full, or the biggest past the bounds."""
        key = ref.key[0]
        chunk = self._open.get(key)
        if chunk is not None and chunk.frames[0].shape != arr.shape:
            self._submit(key)
            chunk = None
        if chunk is None:
            chunk = self._open[key] = Chunk()
        chunk.frames.append(arr)
        chunk.refs.append(ref)
        chunk.nbytes += arr.nbytes
        chunk.last = time.monotonic()
        self._open_frames += 1
        self._open_bytes += arr.nbytes
        if len(chunk.frames) >= self._chunk_frames or chunk.nbytes >= self._chunk_bytes:
            self._submit(key)
        while self._open and (
            len(self._open) > MAX_OPEN_CHUNKS
            or self._open_frames > self._open_frames_bound
            or self._open_bytes > self._open_bytes_bound
        ):
            self._submit(max(self._open, key=lambda k: self._open[k].nbytes))

    def close_chunk(self) -> None:
        """Submit every open chunk, however small (oldest first)."""
        for key in list(self._open):
            self._submit(key)

    def close_stale(self) -> None:
        """Submit the open chunks that got no frame for ``max_latency`` seconds."""
        if not self._open:
            return
        cutoff = time.monotonic() - self._max_latency
        for key in [k for k, c in self._open.items() if c.last <= cutoff]:
            self._submit(key)

    def seconds_until_stale(self) -> float | None:
        """Seconds before some open chunk has waited ``max_latency`` without a new frame
        (None: no open chunk)."""
        if not self._open:
            return None
        oldest = min(c.last for c in self._open.values())
        return self._max_latency - (time.monotonic() - oldest)

    @property
    def idle(self) -> bool:
        """Nothing open and nothing being compressed."""
        return not self._open and not self._inflight

    @property
    def open_streams(self) -> int:
        """Streams (episodes) with an open chunk."""
        return len(self._open)

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
    def _submit(self, key: int) -> None:
        chunk = self._open.pop(key)
        self._open_frames -= len(chunk.frames)
        self._open_bytes -= chunk.nbytes
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
