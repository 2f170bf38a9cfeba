"""The writer side of frame storage: compress the chunks the producer side handed off on
a small pool, append them in order to segment files (rotating and sealing), fsync as the
durability profile says. Runs on one writer thread; knows nothing of queues.

Chunks arrive whole (``_openchunks.ChunkAssembler`` builds them on the producer side,
one open chunk per (episode, stream index), its frames already in one contiguous
buffer, or the frames the producer handed over, kept as they are): the compressor
reads that buffer, or streams those frames into zstd one by one, with no gather copy. A segment interleaves
chunks of several episodes; each episode's chunks appear in step order (docs/FORMAT.md).

Segments describe themselves (format version 3): every step's metadata (``StepMeta``)
travels in its stream-0 chunk's steps block (a step without a frame, dropped or never
given, all the same: such a chunk may hold no frame); an episode's ``EPISODE`` record is
written into every segment before the episode's first record there; ``EPISODE_END`` and
``RUN_END`` records follow the chunks submitted before them.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import zstandard

from .._format import (
    ChunkHeader,
    Codec,
    RecordType,
    pack_chunk,
    pack_meta,
)
from .._format.steps import StepMeta, pack_steps
from ..disk._refs import FrameRef
from ..disk.codecs import encode_chunk
from ..disk.segments import (
    SegmentWriter,
    next_segment_id,
    segment_dir,
    segment_path,
    write_note_segment,
)
from ..files import fsync_dir

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
    event: object = None  # the telemetry event the sink gets once the record is appended


@dataclass(slots=True)
class NoteSegment:
    """A note segment (an ``rm``'s tombstone: ``DELETED`` records) for the writer to
    write, in order with the chunks handed off before it, at the writer's next segment
    id or ``first_id`` if that is higher (ids a merge or a killed gc reserved). The
    writer fills in ``segment_id`` and ``size``, or ``error``; ``done`` then.

    Until the writer takes it up (``claim``), its caller may ``cancel`` it: the writer
    then skips it, and nothing of it is ever written."""

    records: list[bytes]
    first_id: int
    segment_id: int | None = None
    size: int = 0
    error: BaseException | None = None
    done: bool = False
    cancelled: bool = False
    _claimed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """The writer's: whether to write it (False: it was cancelled)."""
        with self._lock:
            self._claimed = not self.cancelled
            return self._claimed

    def cancel(self) -> bool:
        """The caller's: whether it is cancelled (False: the writer is writing it, or
        wrote it)."""
        with self._lock:
            if not self._claimed:
                self.cancelled = True
            return self.cancelled


@dataclass(slots=True)
class Chunk:
    """Frames of one stream (one episode's stream index, one shape), contiguous in one
    buffer, and the steps they belong to (with or without a frame; stream 0 only), on
    their way into one CHUNK record."""

    key: int  # stream key (the episode id)
    stream_index: int
    #: (N, *shape), C-contiguous (a buffer the frames were copied into), or N
    #: C-contiguous frames handed over by the producer (``owned``); None: steps only
    frames: np.ndarray | list[np.ndarray] | None
    refs: list[FrameRef]
    steps: list[StepMeta]
    buffer: object = None  # the placement's handle of the buffer, freed once written
    #: Each frame's own shape (``"4x84x84"``) for a stream other than render, whose
    #: frames may be stored in another layout (``_format.stored_shape``).
    row_shapes: list[str] | None = None

    @property
    def nbytes(self) -> int:
        frames = self.frames
        if frames is None:
            return 0
        if isinstance(frames, np.ndarray):
            return frames.nbytes
        return len(frames) * frames[0].nbytes  # one shape per chunk

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape of each frame (``()`` for a chunk of steps only)."""
        frames = self.frames
        if frames is None:
            return ()
        return frames.shape[1:] if isinstance(frames, np.ndarray) else frames[0].shape


@dataclass(frozen=True)
class Written:
    """A chunk appended to a segment: its frames are located and (per profile) durable."""

    chunk: Chunk
    record_bytes: int


class ChunkWriter:
    """Compresses and appends the chunks handed to it (see the module docstring).

    Args:
        root: the store directory.
        codec, level: how chunks are encoded.
        part_frames: zstd chunks of more frames are written in parts of this many
            (``codecs.encode_chunk``); 0: one zstd frame per chunk.
        segment_bytes: a segment is sealed and a new one started beyond this size.
        durability: ``durable`` fsyncs each chunk (and a new segment's directory).
        compress_threads: size of the compression pool (zstandard releases the GIL).
        on_written: called on the writer thread for every appended chunk, in order.
        on_meta: called on the writer thread for every appended ``MetaRecord``.
        on_note: called on the writer thread for every ``NoteSegment`` written (or
            failed: a tombstone that cannot be written fails its ``rm``, not the
            recording).
        store_tag: the segment file headers' store tag.
        first_segment_id: the lowest id its segments take (above the ids a killed
            ``gc`` reserved: ``bookkeeping.free_segment_id``); at least one above
            every segment file.
    """

    def __init__(
        self,
        root: os.PathLike | str,
        *,
        codec: Codec,
        level: int,
        part_frames: int = 0,
        segment_bytes: int,
        durability: str,
        compress_threads: int,
        on_written: Callable[[Written], None],
        on_meta: Callable[[MetaRecord], None] | None = None,
        on_note: Callable[[NoteSegment], None] | None = None,
        store_tag: int = 0,
        first_segment_id: int = 0,
    ):
        self.root = root
        self._on_note = on_note
        self._store_tag = store_tag
        self._codec = codec
        self._level = level
        self._part_frames = part_frames
        self._segment_bytes = segment_bytes
        self._durable = durability == "durable"
        self._on_written = on_written
        self._on_meta = on_meta
        self._threads = compress_threads
        self._pool = ThreadPoolExecutor(
            max_workers=compress_threads, thread_name_prefix="framestore-compress"
        )
        self._local = threading.local()
        self._inflight: deque[tuple[Future, Chunk | MetaRecord | NoteSegment]] = deque()
        self._episodes: dict[int, MetaRecord] = {}  # stream key -> its EPISODE record
        self._described: set[int] = set()  # stream keys described in the open segment
        self._next_segment_id = max(next_segment_id(root), first_segment_id)
        self.segment: SegmentWriter | None = None
        self.chunks_written = 0
        self.segments_sealed = 0

    # ----------------------------------------------------------------- feeding
    def submit(self, chunk: Chunk) -> None:
        """Start compressing ``chunk`` (appended in submission order)."""
        self._inflight.append((self._pool.submit(self._encode, chunk), chunk))

    def add_meta(self, meta: MetaRecord) -> None:
        """An episode's description (kept, written into each segment before the
        episode's first record there), its end or the run's end (appended after every
        chunk submitted before it)."""
        if meta.type == RecordType.EPISODE:
            # A later EPISODE record of the same episode lists more streams (one was
            # added): it is written again before the episode's next record.
            self._episodes[meta.stream_key] = meta
            self._described.discard(meta.stream_key)
        done: Future = Future()
        done.set_result(None)
        self._inflight.append((done, meta))

    def add_note(self, note: NoteSegment) -> None:
        """A note segment, written after every chunk submitted before it."""
        done: Future = Future()
        done.set_result(None)
        self._inflight.append((done, note))

    @property
    def idle(self) -> bool:
        """Nothing being compressed or waiting to be appended."""
        return not self._inflight

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
            elif isinstance(item, NoteSegment):
                self._write_note(item)
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
    def _encode(self, chunk: Chunk) -> tuple[tuple[int, ...], bytes, bytes]:
        """On a pool thread: each keeps its own zstd compressors (they are not
        thread-safe). Returns the frames' lengths and data and the steps block."""
        local = self._local
        block = b""
        if chunk.steps:
            sc = getattr(local, "sc", None)
            if sc is None:
                sc = local.sc = zstandard.ZstdCompressor(level=STEPS_LEVEL, write_content_size=True)
            block = pack_steps(chunk.steps, sc)
        frames = chunk.frames
        if frames is None:
            return (), b"", block
        compressor = None
        if self._codec == Codec.ZSTD:
            compressor = getattr(local, "zc", None)
            if compressor is None:
                compressor = zstandard.ZstdCompressor(level=self._level, write_content_size=True)
                local.zc = compressor
        return (*encode_chunk(frames, self._codec, compressor, self._part_frames), block)

    def _append(self, chunk: Chunk, encoded: tuple[tuple[int, ...], bytes, bytes]) -> None:
        lengths, data, block = encoded
        shape = chunk.frame_shape
        header = ChunkHeader(
            codec=int(self._codec),
            ndim=len(shape),
            height=shape[0] if shape else 0,
            width=shape[1] if shape else 0,
            channels=(shape[2] if len(shape) == 3 else 1) if shape else 0,
            stream_key=chunk.key,
            stream_index=chunk.stream_index,
            frame_keys=tuple([r.key[1] for r in chunk.refs]),
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
        if self._on_meta is not None:
            self._on_meta(meta)

    def _write_note(self, note: NoteSegment) -> None:
        """A note segment of its own (sealed, fsynced, renamed into place; the
        directory fsynced), at an id no segment of this writer will take; nothing for
        a cancelled one."""
        if not note.claim():
            note.done = True
            if self._on_note is not None:
                self._on_note(note)
            return
        sid = max(self._next_segment_id, note.first_id)
        try:
            note.size = write_note_segment(self.root, sid, note.records, self._store_tag)
            note.segment_id = sid
        except Exception as e:  # noqa: BLE001 - the rm's error, handed to its caller
            note.error = e
        # the id is spent either way: a partial file may be left under it
        self._next_segment_id = sid + 1
        note.done = True
        if self._on_note is not None:
            self._on_note(note)

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
