"""The writer side of frame storage: group frames into chunks, compress them on a small
pool, append them in order to segment files (rotating and sealing), fsync as the
durability profile says. Runs on one writer thread; knows nothing of queues.

Chunking keeps ONE open chunk per stream of each episode (its stream key and stream
index: ``render`` and any other stream a step carries have their own chunks): frames of interleaved episodes (a
vector environment recorded through ``Recorder.record_steps``) still make chunks of
consecutive steps of one episode. The open chunks are bounded (count, frames, bytes):
past a bound the biggest is closed. A segment then interleaves chunks of several
episodes; each episode's chunks appear in step order (docs/FORMAT.md).

Segments describe themselves (format version 3): every step's metadata (``StepMeta``)
travels with its frame into the chunk's steps block (a step without a frame, dropped or
never given, into its episode's open chunk all the same, which may then hold no frame);
an episode's ``EPISODE`` record is written into every segment before the episode's first
record there; ``EPISODE_END`` and ``RUN_END`` records follow the chunks before them.
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

from ._format import (
    ChunkHeader,
    Codec,
    RecordType,
    StepMeta,
    pack_chunk,
    pack_meta,
    pack_steps,
)
from ._refs import FrameRef
from .codecs import encode_chunk
from .files import fsync_dir
from .segments import SegmentWriter, next_segment_id, segment_dir, segment_path

#: Most chunks open at once (one per stream): past it the biggest is closed.
MAX_OPEN_CHUNKS = 256
#: Most steps in one chunk (a run of steps without frames closes it here).
MAX_CHUNK_STEPS = 4096
#: zstd level of steps blocks (text columns: level 3 is fast and small).
STEPS_LEVEL = 3


@dataclass(frozen=True, slots=True)
class MetaRecord:
    """An ``EPISODE``, ``EPISODE_END`` or ``RUN_END`` record on its way to the segment:
    its type, the stream key it describes (None for ``RUN_END``) and its JSON fields."""

    type: RecordType
    stream_key: int | None
    fields: dict


@dataclass
class Chunk:
    """Frames (one stream, one shape) and the steps they belong to (with or without a
    frame) on their way into one CHUNK record."""

    key: int  # stream key
    stream: int = 0  # stream index in its episode's EPISODE record (0: render)
    frames: list[np.ndarray] = field(default_factory=list)
    refs: list[FrameRef] = field(default_factory=list)
    steps: list[StepMeta] = field(default_factory=list)
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
        part_frames: zstd chunks of more frames are written in parts of this many
            (``codecs.encode_chunk``); 0: one zstd frame per chunk.
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
        part_frames: int = 0,
        segment_bytes: int,
        durability: str,
        compress_threads: int,
        max_latency: float,
        on_written: Callable[[Written], None],
        open_frames: int | None = None,
        open_bytes: int | None = None,
        store_tag: int = 0,
    ):
        self.root = root
        self._store_tag = store_tag
        self._codec = codec
        self._level = level
        self._chunk_frames = chunk_frames
        self._part_frames = part_frames
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
        # (stream key, stream index) -> its open chunk, oldest first
        self._open: dict[tuple[int, int], Chunk] = {}
        self._open_frames = 0
        self._open_bytes = 0
        self._inflight: deque[tuple[Future, Chunk | MetaRecord]] = deque()
        self._episodes: dict[int, MetaRecord] = {}  # stream key -> its EPISODE record
        self._described: set[int] = set()  # stream keys described in the open segment
        self._next_segment_id = next_segment_id(root)
        self.segment: SegmentWriter | None = None
        self.chunks_written = 0
        self.segments_sealed = 0

    # ----------------------------------------------------------------- feeding
    def add(self, arr: np.ndarray, ref: FrameRef, step: StepMeta | None = None) -> None:
        """Put a frame (and its step's metadata) into its stream's open chunk (closing
        that chunk first when the shape changed); close chunks that are full, or the
        biggest past the bounds."""
        key = (ref.key[0], ref.stream)
        chunk = self._open.get(key)
        if chunk is not None and chunk.frames and chunk.frames[0].shape != arr.shape:
            self._submit(key)
            chunk = None
        if chunk is None:
            chunk = self._open[key] = Chunk(ref.key[0], ref.stream)
        chunk.frames.append(arr)
        chunk.refs.append(ref)
        if step is not None:
            step.has_frame = True
            chunk.steps.append(step)
        chunk.nbytes += arr.nbytes
        chunk.last = time.monotonic()
        self._open_frames += 1
        self._open_bytes += arr.nbytes
        if (
            len(chunk.frames) >= self._chunk_frames
            or chunk.nbytes >= self._chunk_bytes
            or len(chunk.steps) >= MAX_CHUNK_STEPS
        ):
            self._submit(key)
        while self._open and (
            len(self._open) > MAX_OPEN_CHUNKS
            or self._open_frames > self._open_frames_bound
            or self._open_bytes > self._open_bytes_bound
        ):
            self._submit(max(self._open, key=lambda k: self._open[k].nbytes))

    def add_step(self, step: StepMeta) -> None:
        """A step without a frame (dropped, or never given): its metadata joins its
        episode's open chunk (one without frames, if none is open)."""
        key = (step.episode_id, 0)  # steps blocks are stream 0's (docs/FORMAT.md)
        chunk = self._open.get(key)
        if chunk is None:
            chunk = self._open[key] = Chunk(step.episode_id)
        chunk.steps.append(step)
        chunk.last = time.monotonic()
        if len(chunk.steps) >= MAX_CHUNK_STEPS:
            self._submit(key)

    def add_meta(self, meta: MetaRecord) -> None:
        """An episode's description (kept, written into each segment before the
        episode's first record there), its end or the run's end (appended after every
        chunk submitted before it; an episode's end closes its open chunk first)."""
        if meta.type == RecordType.EPISODE:
            # A later EPISODE record of the same episode lists more streams (one was
            # added): it is written again before the episode's next record.
            self._episodes[meta.stream_key] = meta
            self._described.discard(meta.stream_key)
        else:
            for key in [k for k in self._open if k[0] == meta.stream_key]:
                self._submit(key)
        done: Future = Future()
        done.set_result(None)
        self._inflight.append((done, meta))

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
            fut, item = inflight.popleft()
            if isinstance(item, MetaRecord):
                self._append_meta(item)
            else:
                self._append(item, fut.result())

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
    def _submit(self, key: tuple[int, int]) -> None:
        chunk = self._open.pop(key)
        self._open_frames -= len(chunk.frames)
        self._open_bytes -= chunk.nbytes
        self._inflight.append((self._pool.submit(self._encode, chunk.frames, chunk.steps), chunk))

    def _encode(
        self, frames: list[np.ndarray], steps: list[StepMeta]
    ) -> tuple[tuple[int, ...], bytes, bytes]:
        """On a pool thread: each keeps its own zstd compressors and staging buffer
        (compressors are not thread-safe). Returns the frames' lengths and data and the
        steps block."""
        local = self._local
        block = b""
        if steps:
            sc = getattr(local, "sc", None)
            if sc is None:
                sc = local.sc = zstandard.ZstdCompressor(level=STEPS_LEVEL, write_content_size=True)
            block = pack_steps(steps, sc)
        if not frames:
            return (), b"", block
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
        return (*encode_chunk(frames, self._codec, compressor, staging, self._part_frames), block)

    def _append(self, chunk: Chunk, encoded: tuple[tuple[int, ...], bytes, bytes]) -> None:
        lengths, data, block = encoded
        shape: tuple[int, ...] = chunk.frames[0].shape if chunk.frames else ()
        header = ChunkHeader(
            codec=int(self._codec),
            ndim=len(shape),
            height=shape[0] if shape else 0,
            width=shape[1] if shape else 0,
            channels=(shape[2] if len(shape) == 3 else 1) if shape else 0,
            stream_key=chunk.key,
            stream_index=chunk.stream,
            frame_keys=tuple(r.key[1] for r in chunk.refs),
            lengths=lengths,
            steps_length=len(block),
            steps_count=len(chunk.steps) if block else 0,
        )
        record = pack_chunk(header, block, data)
        seg = self._segment_for(len(record), chunk.key)
        offset = seg.append(record, frames=len(chunk.refs))
        if self._durable:
            seg.fsync()
        for slot, ref in enumerate(chunk.refs):
            ref.location = (seg.segment_id, offset, slot)
        self.chunks_written += 1
        self._on_written(Written(chunk, len(record)))

    def _append_meta(self, meta: MetaRecord) -> None:
        seg = self._segment_for(0, meta.stream_key)  # writes an EPISODE record
        if meta.type != RecordType.EPISODE:
            seg.append(pack_meta(meta.type, meta.fields))
        if self._durable:
            seg.fsync()
        if meta.type == RecordType.EPISODE_END:
            self._episodes.pop(meta.stream_key, None)
            self._described.discard(meta.stream_key)

    def _segment_for(self, nbytes: int, key: int | None) -> SegmentWriter:
        """The segment the next record of ``nbytes`` goes into (sealing a full one and
        starting the next), with the ``EPISODE`` record of stream ``key`` written first
        when this segment has none yet."""
        seg = self.segment
        if seg is not None and not seg.empty and seg.size + nbytes > self._segment_bytes:
            seg.seal()
            seg.close()
            self.segments_sealed += 1
            seg = self.segment = None
        if seg is None:
            seg = self.segment = self._open_segment()
            self._described = set()
        if key is not None and key not in self._described:
            episode = self._episodes.get(key)
            if episode is not None:
                seg.append(pack_meta(episode.type, episode.fields))
                self._described.add(key)
        return seg

    def _open_segment(self) -> SegmentWriter:
        sid = self._next_segment_id
        self._next_segment_id += 1
        seg = SegmentWriter(segment_path(self.root, sid), sid, store_tag=self._store_tag)
        if self._durable:
            # fsync of the file alone does not make its new directory entry durable
            fsync_dir(segment_dir(self.root))
        return seg
