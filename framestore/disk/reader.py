"""SegmentReader: random access and sequential reads with checksum verification.

Safe to use while a writer appends (it only reads records the database points at, which
are complete), and from several threads (``os.pread`` on shared descriptors, one zstd
decompressor and scratch buffer per thread, a locked chunk cache).

A read decodes only what it needs: a random miss, the zstd part holding its frame (the
whole chunk when it is one zstd frame) up to that frame; a sequential pass, each chunk
once into a reused buffer (docs/ARCHITECTURE.md, "Reading").
"""

from __future__ import annotations

import bisect
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import zstandard

from .._format import (
    FILE_HEADER_SIZE,
    FOREIGN_SEGMENT,
    MAX_RECORD_BYTES,
    RECORD_HEADER_SIZE,
    ChunkHeader,
    Codec,
    RecordType,
    read_file_header,
    read_record,
    store_tag,
)
from .._format.parts import ZstdParts
from ..errors import (
    CorruptRecord,
    FrameNotFound,
    StoreClosed,
    TruncatedRecord,
)
from ._sources import PositionalFile, SegmentSource
from .segments import list_segment_ids, open_segment_fd, segment_path

if TYPE_CHECKING:
    import numpy as np

    from .codecs import PartStream

#: Decoded chunks kept by default, in bytes: a crafted segment of tiny chunks that each
#: decode to the 256 MiB limit must not multiply it by the number of cached chunks.
DEFAULT_CACHE_BYTES = 128 * 1024 * 1024
#: The largest zstd part a random read decodes into its thread's scratch buffer (which
#: the thread keeps); larger ones are decoded whole into the chunk cache instead.
SCRATCH_MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Chunk:
    """A decoded chunk: its header and its frames as read-only arrays.

    ``blocks`` are runs of consecutive frames shaped (k, H, W[, C]), block ``b`` starting
    at slot ``firsts[b]``: one block for a chunk that is one zstd frame, one per part for
    a chunk written in zstd parts (docs/FORMAT.md), decoded each into its own array so
    no frame is copied to join them."""

    segment: int
    offset: int
    header: ChunkHeader
    blocks: tuple[np.ndarray, ...]
    record_bytes: int
    firsts: tuple[int, ...] = (0,)

    @property
    def frames(self) -> np.ndarray:
        """All frames as one array (N, H, W[, C]): a view for a one-block chunk, else a
        copy joining the blocks (take single frames with ``frame`` instead)."""
        if len(self.blocks) == 1:
            return self.blocks[0]
        import numpy as np

        joined = np.concatenate(self.blocks)
        joined.flags.writeable = False
        return joined

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.blocks)

    def frame(self, slot: int) -> np.ndarray:
        """A read-only view of frame ``slot`` (``0 <= slot < header.count``)."""
        if len(self.blocks) == 1:
            return self.blocks[0][slot]
        b = bisect.bisect_right(self.firsts, slot) - 1
        return self.blocks[b][slot - self.firsts[b]]


class _PassBuffers:
    """Decode buffers that sequential passes reuse: a chunk decoded into pages already
    mapped is decoded about twice as fast as into fresh memory, whose every page
    faults (glibc returns freed multi-MiB blocks to the system).

    A buffer handed out is kept in ``_lent``; it is taken again only once nothing but
    this list refers to it (``sys.getrefcount``: every numpy view of it, kept by a
    caller or by the chunk that holds it, refers to it), so frames a caller still holds
    never change. Thread-safe; at most ``MAX_LENT`` buffers are tracked."""

    MAX_LENT = 8

    def __init__(self) -> None:
        self._lent: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        import numpy as np

        with self._lock:
            for i in range(len(self._lent)):
                # 2: the list's reference and getrefcount's argument; nothing else.
                if sys.getrefcount(self._lent[i]) == 2 and self._lent[i].size >= nbytes:
                    buf = self._lent.pop(i)
                    break
            else:
                buf = np.empty(nbytes, dtype=np.uint8)
            self._lent.append(buf)
            if len(self._lent) > self.MAX_LENT:
                del self._lent[0]  # the oldest: still in use or not, no longer recycled
            return buf

    def clear(self) -> None:
        with self._lock:
            self._lent.clear()


class _Scratch(threading.local):
    """A thread's decode buffer for random reads of zstd chunks (a part, or a chunk of
    one zstd frame): decoding into pages already mapped costs about 30% less than into
    new memory, whose every page faults. It holds the frames ``first <= slot < first + count`` of
    the chunk ``key`` (as of the reader's ``generation``); reads copy frames out."""

    def __init__(self) -> None:
        self.buffer: np.ndarray | None = None  # numpy loads with the first frame read
        self.key: tuple[int, int] | None = None
        self.generation = -1
        self.header: ChunkHeader | None = None
        self.first = self.count = 0
        self.resume: _Resume | None = None  # read_into's part decoded up to a run's end

    def reserve(self, nbytes: int) -> np.ndarray:
        import numpy as np

        self.key = None  # its content is about to change
        if self.buffer is None or self.buffer.size < nbytes:
            self.buffer = np.empty(nbytes, dtype=np.uint8)
        return self.buffer

    def holds(self, key: tuple[int, int], slot: int, generation: int) -> bool:
        return (
            self.key == key
            and self.generation == generation
            and self.first <= slot < self.first + self.count
        )

    def frame(self, slot: int) -> np.ndarray:
        assert self.header is not None and self.buffer is not None
        fb = self.header.frame_bytes
        start = (slot - self.first) * fb
        return self.buffer[start : start + fb].reshape(self.header.shape)


class _SpareBlocks:
    """Decode buffers of evicted kept parts, reused for the next parts random reads keep
    (``read(keep=True)``): decoding into pages already mapped spares a cold read the
    page faults of fresh memory (glibc gives multi-MiB blocks back to the system when
    they are freed). A buffer is reused only once nothing but this list refers to it
    (``sys.getrefcount``; a caller's view of a kept part refers to its buffer), so a
    frame handed out never changes. Kept parts and spares together stay within the
    reader's ``cache_bytes``. Callers hold the reader's lock."""

    def __init__(self) -> None:
        self._spare: list[np.ndarray] = []
        self.nbytes = 0

    def give(self, block: np.ndarray, room: int) -> None:
        """Take back the buffer of an evicted block if ``room`` bytes allow it."""
        owner = block.base if isinstance(block.base, type(block)) else None
        if owner is None or owner.nbytes > room:
            return
        self._spare.append(owner)
        self.nbytes += owner.nbytes

    def take(self, nbytes: int) -> np.ndarray | None:
        """A spare flat uint8 buffer of exactly ``nbytes`` no one else holds, or None."""
        for i in range(len(self._spare) - 1, -1, -1):
            # 2: the list's reference and getrefcount's argument; nothing else.
            if self._spare[i].nbytes == nbytes and sys.getrefcount(self._spare[i]) == 2:
                self.nbytes -= nbytes
                return self._spare.pop(i)
        return None

    def trim(self, room: int) -> None:
        """Drop the oldest spares until they fit in ``room`` bytes."""
        while self._spare and self.nbytes > room:
            self.nbytes -= self._spare.pop(0).nbytes

    def clear(self) -> None:
        self._spare.clear()
        self.nbytes = 0


@dataclass(frozen=True)
class _Resume:
    """A zstd part ``read_into`` decoded the head of: ``at`` = (chunk key, reader
    generation, part, next slot), and its decoder, which goes on from there."""

    at: tuple[tuple[int, int], int, int, int]
    part: PartStream


@dataclass
class _KeptParts:
    """The decoded zstd parts of one chunk that random reads keep (``read(keep=True)``):
    part ``p`` (frames ``table.first[p] <= slot < table.first[p + 1]``) in ``blocks[p]``,
    read-only; the rest not decoded."""

    header: ChunkHeader
    table: ZstdParts
    blocks: dict[int, np.ndarray]
    nbytes: int = 0

    def frame(self, slot: int) -> np.ndarray | None:
        """A read-only view of frame ``slot`` if its part is kept, else None."""
        part = self.table.part_of(slot)
        block = self.blocks.get(part)
        return None if block is None else block[slot - self.table.first[part]]


class _PreadFile(PositionalFile):
    """A file-like view over a shared descriptor that reads with ``pread``: each user
    keeps its own position, so threads do not race on one file offset."""

    def __init__(self, fd: int):
        self._fd = fd
        self._pos = 0

    def _end(self) -> int:
        return os.fstat(self._fd).st_size

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._end() - self._pos
        data = os.pread(self._fd, size, self._pos)
        self._pos += len(data)
        return data


class SegmentReader:
    """Reads frames from a store's segments.

    Args:
        root: the store directory.
        cache_chunks: decoded chunks kept (LRU), so sequential replay decodes each once.
        cache_bytes: and at most this many bytes of them (the newest chunk is always
            kept, so memory stays below ``cache_bytes`` + two chunks at the chunk limit).
        max_record_bytes: records claiming more are refused unread.
        source: where segments come from instead of ``root/segments`` (a published
            store's remote objects, see ``framestore.disk._sources``); the same checks apply.
        store_id_of: ``store_id_of(segment)`` is the id of the store that wrote the
            segment, when known: a version-3 file whose header's store tag is another
            store's is refused (``CorruptRecord``), so a foreign file under a segment's
            name never passes for this store's (docs/FORMAT.md, "File header").
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        cache_chunks: int = 8,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_record_bytes: int = MAX_RECORD_BYTES,
        max_open_files: int = 32,
        source: SegmentSource | None = None,
        store_id_of: Callable[[int], str | None] | None = None,
    ):
        self.root = Path(root)
        self.source = source
        self._store_id_of = store_id_of
        self._cache_size = max(1, cache_chunks)
        self._cache_bytes_max = max(1, cache_bytes)
        self._cached_bytes = 0
        self._max_record = max_record_bytes
        self._max_open = max_open_files
        self._cache: OrderedDict[tuple[int, int], Chunk] = OrderedDict()
        # parts random reads keep (read(keep=True)), within the same byte budget
        self._kept: OrderedDict[tuple[int, int], _KeptParts] = OrderedDict()
        self._kept_bytes = 0
        self._spare = _SpareBlocks()  # buffers of evicted kept parts, reused
        self._fds: OrderedDict[int, tuple[int, int]] = OrderedDict()  # segment -> fd, version
        self._lock = threading.Lock()
        self._local = threading.local()
        self._scratch = _Scratch()
        self._pass_buffers = _PassBuffers()
        self._generation = 0  # moved by forget(): scratch buffers holding older data are stale
        self._closed = False
        self.chunks_decoded = 0

    # ----------------------------------------------------------------- files
    def _check_tag(self, segment: int, tag: int) -> None:
        """Refuse a file tagged by another store than the one that wrote ``segment``."""
        if not tag or self._store_id_of is None:
            return
        owner = self._store_id_of(segment)
        if owner is not None and store_tag(owner) != tag:
            raise CorruptRecord(segment, 0, FOREIGN_SEGMENT)

    def _fd(self, segment: int) -> tuple[int, int]:
        """An open descriptor of a segment and its format version."""
        with self._lock:
            if self._closed:
                raise StoreClosed("read from a closed SegmentReader")
            hit = self._fds.get(segment)
            if hit is not None:
                self._fds.move_to_end(segment)
                return hit
        # Never a symlink planted under a segment's name, never a FIFO (SegmentMissing,
        # CorruptRecord).
        fd = open_segment_fd(segment_path(self.root, segment), segment)
        try:
            header = read_file_header(_PreadFile(fd), segment)
            self._check_tag(segment, header.store_tag)
            version = header.version
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            old = self._fds.get(segment)
            if old is not None:
                os.close(fd)
                return old
            self._fds[segment] = (fd, version)
            while len(self._fds) > self._max_open:
                _, (victim, _v) = self._fds.popitem(last=False)
                os.close(victim)
            return fd, version

    def _open(self, segment: int) -> tuple[IO[bytes], int]:
        """A file-like view of a segment and its format version, from the source when
        there is one, else from a cached local descriptor."""
        if self.source is not None:
            return self.source.open_segment(segment)
        fd, version = self._fd(segment)
        return _PreadFile(fd), version

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "zd", None)
        if d is None:
            d = self._local.zd = zstandard.ZstdDecompressor()
        return d

    def _resume_decompressor(self) -> zstandard.ZstdDecompressor:
        """This thread's decompressor for ``read_into``'s one suspended part at a time."""
        d = getattr(self._local, "zr", None)
        if d is None:
            d = self._local.zr = zstandard.ZstdDecompressor()
        return d

    def forget(self, segments: Iterable[int] | None = None) -> None:
        """Drop cached chunks and descriptors (all, or of the given segments): after
        compaction deleted files, or to see a segment replaced on disk."""
        with self._lock:
            wanted = None if segments is None else set(segments)
            self._generation += 1
            for key in [k for k in self._cache if wanted is None or k[0] in wanted]:
                self._cached_bytes -= self._cache.pop(key).nbytes
            for key in [k for k in self._kept if wanted is None or k[0] in wanted]:
                self._kept_bytes -= self._kept.pop(key).nbytes
            self._spare.clear()
            for seg in [s for s in self._fds if wanted is None or s in wanted]:
                os.close(self._fds.pop(seg)[0])

    # ----------------------------------------------------------------- reading
    def read_chunk(self, segment: int, offset: int, *, keep: bool = True) -> Chunk:
        """Decode (or fetch from cache) the chunk whose record starts at ``offset``.

        ``keep=False`` leaves a decoded chunk out of the cache: a sequential pass reads
        each chunk once, and memory freed as soon as its frames are dropped is reused
        while still in the CPU's caches (decoding into 8 cached chunks' worth of
        fresh memory made decompression about half as fast)."""
        key = self._key(segment, offset)
        hit = self._cached(key)
        if hit is not None:
            return hit
        return self._decode(key, *self._record(*key), keep=keep)

    def _decode(
        self, key: tuple[int, int], header: ChunkHeader, data: memoryview, record_bytes: int,
        *, keep: bool = True,
    ) -> Chunk:  # fmt: skip
        """Decode a whole chunk (each zstd part into its own block); cache it (``keep``)."""
        # numpy: loaded by the first frame read, not by ls
        from .codecs import decode_chunk, decode_parts, zstd_parts

        segment, offset = key
        dz = self._decompressor()
        parts = None
        if header.codec == Codec.ZSTD:
            parts = zstd_parts(header, data, segment=segment, offset=offset)
        if not keep and header.codec == Codec.ZSTD and not self._too_big(header):
            out = self._pass_buffers.take(header.count * header.frame_bytes)
            frames = decode_chunk(
                header, data, dz, out=out, parts=parts, segment=segment, offset=offset
            )
            chunk = Chunk(segment, offset, header, (frames,), record_bytes)
        elif parts is None:
            frames = decode_chunk(header, data, dz, segment=segment, offset=offset)
            chunk = Chunk(segment, offset, header, (frames,), record_bytes)
        else:
            blocks = decode_parts(header, data, dz, parts, segment=segment, offset=offset)
            chunk = Chunk(segment, offset, header, tuple(blocks), record_bytes, parts.first[:-1])
        if keep:
            return self._keep(key, chunk)
        with self._lock:
            self.chunks_decoded += 1
        return chunk

    def _read_part(
        self,
        key: tuple[int, int],
        slot: int,
        *,
        copy: bool,
        expect_key: tuple[int, int] | None,
        expect_stream: int | None = None,
        keep: bool = False,
    ) -> np.ndarray:
        """Frame ``slot`` of the chunk at ``key`` when it is not cached: the record is
        read and checked (CRC), then only what ``slot`` needs is decoded into this
        thread's scratch buffer: in a zstd chunk, the part holding the frame (the whole
        chunk when it was written as one zstd frame), up to the frame the first time the
        part is read and whole the next time (neighbours read one by one decode a part
        at most twice). Chunks of other codecs are decoded whole and cached. ``keep``:
        the part is decoded whole into memory of its own and kept (``_keep_part``)."""
        from .codecs import decode_part, zstd_parts  # numpy: by the first frame read

        segment, offset = key
        header, data, record_bytes = self._record(segment, offset)
        parts = None
        if header.codec == Codec.ZSTD and 0 <= slot < header.count:
            parts = zstd_parts(header, data, segment=segment, offset=offset)
            if parts is None:
                parts = ZstdParts((0, header.count), (0, len(data)))
            part = parts.part_of(slot)
            first, end = parts.first[part], parts.first[part + 1]
        if parts is None or (end - first) * header.frame_bytes > SCRATCH_MAX_BYTES:
            chunk = self._decode(key, header, data, record_bytes)
            return self.frame_of(
                chunk, slot, copy=copy, expect_key=expect_key, expect_stream=expect_stream
            )
        self._check_slot(header, segment, offset, slot, expect_key, expect_stream)
        if keep:
            block = decode_part(
                header, data, self._decompressor(), parts, part,
                out=self._part_buffer(key, (end - first) * header.frame_bytes),
                segment=segment, offset=offset,
            )  # fmt: skip
            block.flags.writeable = False
            self._keep_part(key, header, parts, part, block)
            frame = block[slot - first]
            return frame.copy() if copy else frame
        scratch = self._scratch
        again = scratch.key == key and scratch.first == first  # read before: all of it
        stop = end if again else slot + 1
        with self._lock:
            generation = self._generation
        buffer = scratch.reserve((end - first) * header.frame_bytes)
        decode_part(
            header, data, self._decompressor(), parts, part, stop, out=buffer,
            segment=segment, offset=offset,
        )  # fmt: skip
        scratch.key, scratch.generation, scratch.header = key, generation, header
        scratch.first, scratch.count = first, stop - first
        with self._lock:
            self.chunks_decoded += 1
        return _owned(scratch.frame(slot), copy)

    @staticmethod
    def _too_big(header: ChunkHeader) -> bool:
        """Whether a chunk decodes to more than a reused buffer may hold."""
        return header.count * header.frame_bytes > SCRATCH_MAX_BYTES

    @staticmethod
    def _key(segment: int, offset: int) -> tuple[int, int]:
        key = (int(segment), int(offset))
        if key[0] < 0 or key[1] < 0:
            raise CorruptRecord(segment, offset, "invalid frame pointer (negative)")
        return key

    def _cached(self, key: tuple[int, int]) -> Chunk | None:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def _record(self, segment: int, offset: int) -> tuple[ChunkHeader, memoryview, int]:
        """The chunk record at ``offset``, CRC checked: its header, codec data and size."""
        fp, version = self._open(segment)
        if offset < FILE_HEADER_SIZE:
            raise CorruptRecord(segment, offset, "frame pointer before the first record")
        rec = read_record(fp, offset, segment=segment, max_length=self._max_record)
        if rec is None:
            # A pointer past the end of the file: the segment lost its tail (data loss, not
            # a missing key), so it is reported like any other torn record.
            raise TruncatedRecord(segment, offset, RECORD_HEADER_SIZE, 0)
        if rec.type != RecordType.CHUNK:
            raise CorruptRecord(segment, offset, f"expected a chunk record, found type {rec.type}")
        header = ChunkHeader.unpack(rec.payload, version=version, segment=segment, offset=offset)
        data = memoryview(rec.payload)[header.data_offset :]
        return header, data, rec.end - rec.offset

    def _keep(self, key: tuple[int, int], chunk: Chunk) -> Chunk:
        """Cache a decoded chunk, evicting the oldest past the bounds."""
        with self._lock:
            self.chunks_decoded += 1
            old = self._cache.pop(key, None)
            if old is not None:
                self._cached_bytes -= old.nbytes
            self._cache[key] = chunk
            self._cached_bytes += chunk.nbytes
            while len(self._cache) > 1 and (
                len(self._cache) > self._cache_size or self._cached_bytes > self._cache_bytes_max
            ):
                self._cached_bytes -= self._cache.popitem(last=False)[1].nbytes
        return chunk

    def _part_buffer(self, key: tuple[int, int], nbytes: int) -> np.ndarray:
        """Memory for a part about to be kept for chunk ``key``: the kept parts of the
        chunks used longest ago are evicted first while the new one would not fit in
        ``cache_bytes`` (``key``'s own stay), and a buffer they leave that no one holds
        is reused (``_SpareBlocks``); else new memory."""
        with self._lock:
            while self._kept_bytes + nbytes > self._cache_bytes_max and any(
                k != key for k in self._kept
            ):
                old = next(k for k in self._kept if k != key)
                self._evict_kept(old)
            buf = self._spare.take(nbytes)
        if buf is None:
            import numpy as np

            buf = np.empty(nbytes, dtype=np.uint8)
        return buf

    def _evict_kept(self, key: tuple[int, int]) -> None:
        """Drop chunk ``key``'s kept parts; their buffers become spares while the kept
        parts and spares fit in ``cache_bytes``. Holds the lock."""
        entry = self._kept.pop(key)
        self._kept_bytes -= entry.nbytes
        for block in entry.blocks.values():
            self._spare.give(block, self._cache_bytes_max - self._kept_bytes - self._spare.nbytes)

    def _keep_part(
        self,
        key: tuple[int, int],
        header: ChunkHeader,
        table: ZstdParts,
        part: int,
        block: np.ndarray,
    ) -> None:
        """Keep a decoded part, evicting the parts of the chunks used longest ago while
        the kept parts exceed ``cache_bytes`` (the newest chunk's always stay)."""
        with self._lock:
            self.chunks_decoded += 1
            entry = self._kept.get(key)
            if entry is None:
                entry = self._kept[key] = _KeptParts(header, table, {})
            self._kept.move_to_end(key)
            if part not in entry.blocks:
                entry.blocks[part] = block
                entry.nbytes += block.nbytes
                self._kept_bytes += block.nbytes
            while len(self._kept) > 1 and self._kept_bytes > self._cache_bytes_max:
                self._evict_kept(next(iter(self._kept)))
            self._spare.trim(self._cache_bytes_max - self._kept_bytes)

    def read(
        self,
        location,
        *,
        copy: bool = True,
        expect_key: tuple[int, int] | None = None,
        expect_stream: int | None = None,
        keep: bool = False,
    ) -> np.ndarray:
        """Return the frame at ``location`` (a ``(segment, offset, slot)`` tuple or a
        ``FrameRef``), bit-exact. Corrupt data raises a ``CorruptData`` error naming the
        segment and offset; it is never returned as pixels.

        With ``expect_key=(stream_key, frame_key)`` (the episode id and step a database
        row names) a chunk slot holding another frame raises ``CorruptRecord``: a damaged
        or hostile pointer must not return another step's valid pixels. With
        ``expect_stream`` (a stream index, docs/FORMAT.md "Several streams") so does a
        chunk of another stream than that one or render (a frame stored once for both).

        A miss decodes only what the frame needs, whatever its stream (``_read_part``).
        ``keep=True`` is for readers that come back to the same chunks at random (a
        training dataset's workers): a miss decodes the frame's zstd part whole and keeps
        it within ``cache_bytes``, so each part is decoded once while it stays; with
        ``copy=False`` a kept frame comes back as a read-only view, not a copy."""
        loc = getattr(location, "location", location)
        if loc is None:
            raise FrameNotFound("frame was not stored (dropped) or is not written yet")
        segment, offset, slot = loc
        key = self._key(segment, offset)
        hit = self._cached(key)
        if hit is not None:
            return self.frame_of(
                hit, slot, copy=copy, expect_key=expect_key, expect_stream=expect_stream
            )
        if keep:
            with self._lock:
                kept = self._kept.get(key)
                frame = (
                    None if kept is None or not 0 <= slot < kept.header.count else kept.frame(slot)
                )
                if frame is not None:
                    self._kept.move_to_end(key)
            if frame is not None:
                assert kept is not None
                self._check_slot(kept.header, segment, offset, slot, expect_key, expect_stream)
                return frame.copy() if copy else frame
        else:
            scratch = self._scratch
            if scratch.holds(key, slot, self._generation):
                assert scratch.header is not None
                self._check_slot(scratch.header, segment, offset, slot, expect_key, expect_stream)
                return _owned(scratch.frame(slot), copy)
        return self._read_part(
            key, slot, copy=copy, expect_key=expect_key, expect_stream=expect_stream, keep=keep
        )

    def frame_of(
        self,
        chunk: Chunk,
        slot: int,
        *,
        copy: bool = True,
        expect_key: tuple[int, int] | None = None,
        expect_stream: int | None = None,
    ) -> np.ndarray:
        """Frame ``slot`` of a chunk ``read_chunk`` returned, checked as ``read`` checks
        it: a sequential reader decodes (or looks up) each chunk once and takes its
        frames here."""
        self._check_slot(chunk.header, chunk.segment, chunk.offset, slot, expect_key, expect_stream)
        frame = chunk.frame(slot)
        return frame.copy() if copy else frame

    def read_into(
        self,
        location,
        out: np.ndarray,
        *,
        expect_keys: tuple[int, Sequence[int]] | None = None,
        expect_stream: int | None = None,
    ) -> None:
        """Decode ``len(out)`` consecutive frames of one chunk, from the slot of
        ``location`` (``(segment, offset, slot)``) on, into ``out``: a writable
        C-contiguous uint8 array shaped ``(count, *frame shape)``, e.g. a slice of a
        batch. The record is read and checked once; the zstd parts are decoded straight
        into ``out`` (no copy between the decode and the caller's memory): a run that
        ends inside a part keeps that part's decoder (one per thread, with its own
        decompressor) and the next run, starting at the next frame, goes on with it, so a
        pass cut into batches decodes each part once; a run starting inside a part no
        decoder stopped at decodes the part whole into this thread's scratch buffer and
        copies its frames. Other codecs are decoded whole and cached.

        ``expect_keys=(stream_key, frame_keys)`` checks every frame's keys as
        ``expect_key`` does for ``read``; ``expect_stream`` as for ``read``. Raises
        ``ValueError`` when ``out`` does not have the chunk's frame shape."""
        from .codecs import zstd_parts  # numpy: by the first read

        segment, offset, first = location
        key = self._key(segment, offset)
        count = len(out)
        header, data, record_bytes = self._record(*key)
        stop = first + count
        self._check_run(header, segment, offset, first, count, expect_keys, expect_stream)
        _check_out(out, header)
        if count == 0:
            return
        fb = header.frame_bytes
        flat = out.reshape(-1).view("u1")
        hit = self._cached(key)
        parts = None
        if hit is None and header.codec == Codec.ZSTD:
            parts = zstd_parts(header, data, segment=segment, offset=offset)
            if parts is None:
                parts = ZstdParts((0, header.count), (0, len(data)))
        if parts is None or any(
            (parts.first[p + 1] - parts.first[p]) * fb > SCRATCH_MAX_BYTES
            for p in range(parts.part_of(first), parts.part_of(stop - 1) + 1)
        ):
            chunk = hit or self._decode(key, header, data, record_bytes)
            for i in range(count):
                flat[i * fb : (i + 1) * fb] = chunk.frame(first + i).reshape(-1)
            return
        self._decode_parts_into(key, header, data, parts, first, stop, flat)

    def _decode_parts_into(
        self,
        key: tuple[int, int],
        header: ChunkHeader,
        data: memoryview,
        parts: ZstdParts,
        first: int,
        stop: int,
        flat: np.ndarray,
    ) -> None:
        """``read_into``'s zstd path: slots ``first <= slot < stop`` part by part into
        ``flat`` (their bytes): whole parts decoded in place, a part's head by a decoder
        kept for the run that goes on with it, other pieces through the scratch buffer."""
        from .codecs import PartStream, decode_part

        segment, offset = key
        fb = header.frame_bytes
        dz = self._decompressor()
        for part in range(parts.part_of(first), parts.part_of(stop - 1) + 1):
            p0, p1 = parts.first[part], parts.first[part + 1]
            a, b = max(p0, first), min(p1, stop)
            dst = flat[(a - first) * fb : (b - first) * fb]
            if a == p0 and b == p1:  # the whole part: decoded where the caller wants it
                decode_part(header, data, dz, parts, part, out=dst, segment=segment, offset=offset)
                with self._lock:
                    self.chunks_decoded += 1
                continue
            scratch = self._scratch
            with self._lock:
                generation = self._generation
            resumed = scratch.resume
            scratch.resume = None
            if resumed is not None and resumed.at == (key, generation, part, a):
                # The rest of a part the last run ended inside: its decoder goes on into
                # this run's memory (a pass cut into batches decodes each part once).
                resumed.part.read_into(dst, end=b == p1)
                if b < p1:
                    scratch.resume = _Resume((key, generation, part, b), resumed.part)
                continue
            if a == p0:  # the head of a part: decoded here, the decoder kept for the rest
                # Its own decompressor: a suspended stream shares its decompressor's
                # context, which any other decode in between would reset.
                stream = PartStream(
                    header, data, self._resume_decompressor(), parts, part,
                    segment=segment, offset=offset,
                )  # fmt: skip
                stream.read_into(dst, end=False)
                scratch.resume = _Resume((key, generation, part, b), stream)
                with self._lock:
                    self.chunks_decoded += 1
                continue
            if not (scratch.holds(key, a, generation) and scratch.holds(key, b - 1, generation)):
                buffer = scratch.reserve((p1 - p0) * fb)
                decode_part(
                    header, data, dz, parts, part, out=buffer, segment=segment, offset=offset
                )
                scratch.key, scratch.generation, scratch.header = key, generation, header
                scratch.first, scratch.count = p0, p1 - p0
                with self._lock:
                    self.chunks_decoded += 1
            src = scratch.buffer
            assert src is not None
            dst[:] = src[(a - p0) * fb : (b - p0) * fb]

    @classmethod
    def _check_run(
        cls,
        header: ChunkHeader,
        segment: int,
        offset: int,
        first: int,
        count: int,
        expect_keys: tuple[int, Sequence[int]] | None,
        expect_stream: int | None,
    ) -> None:
        """``_check_slot`` for the slots ``first <= slot < first + count``."""
        cls._check_slot(header, segment, offset, first, None, expect_stream)
        if count:
            cls._check_slot(header, segment, offset, first + count - 1, None, expect_stream)
        if expect_keys is None:
            return
        stream_key, keys = expect_keys
        want = [int(k) for k in keys]
        have = header.frame_keys[first : first + count]
        if len(want) != count or header.stream_key != int(stream_key) or list(have) != want:
            bad = next((i for i in range(count) if i >= len(want) or have[i] != want[i]), 0)
            cls._check_slot(
                header, segment, offset, first + bad, None if bad >= len(want) else
                (int(stream_key), want[bad]), expect_stream,
            )  # fmt: skip
            raise CorruptRecord(
                segment, offset, f"slots {first}..{first + count} hold other frames"
            )

    @staticmethod
    def _check_slot(
        header: ChunkHeader,
        segment: int,
        offset: int,
        slot: int,
        expect_key: tuple[int, int] | None,
        expect_stream: int | None = None,
    ) -> None:
        """Raise unless ``slot`` is in the chunk and (with ``expect_key``) holds that
        stream key and frame key, in a chunk of stream ``expect_stream`` or render's."""
        if expect_stream is not None and header.stream_index not in (expect_stream, 0):
            raise CorruptRecord(
                segment,
                offset,
                f"a chunk of stream index {header.stream_index}, not of stream index "
                f"{expect_stream} (the frame pointer is wrong)",
            )
        if not 0 <= slot < header.count:
            raise FrameNotFound(
                f"segment {segment} at offset {offset}: slot {slot} out of range "
                f"(chunk holds {header.count} frames)"
            )
        if expect_key is not None:
            have = (header.stream_key, header.frame_keys[slot])
            if have != (int(expect_key[0]), int(expect_key[1])):
                raise CorruptRecord(
                    segment,
                    offset,
                    f"slot {slot} holds episode {have[0]} step {have[1]}, not episode "
                    f"{expect_key[0]} step {expect_key[1]} (the frame pointer is wrong)",
                )

    def iter_frames(self, locations: Iterable, *, copy: bool = True) -> Iterator[np.ndarray]:
        """Frames for ``locations`` in order; each chunk is decoded once while consecutive."""
        for loc in locations:
            yield self.read(loc, copy=copy)

    # ----------------------------------------------------------------- whole segments
    def segment_ids(self) -> list[int]:
        return list_segment_ids(self.root)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._generation += 1
        self._pass_buffers.clear()
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0
            self._kept.clear()
            self._kept_bytes = 0
            self._spare.clear()
            for fd, _version in self._fds.values():
                os.close(fd)
            self._fds.clear()
        if self.source is not None:
            self.source.close()

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _owned(frame: np.ndarray, copy: bool) -> np.ndarray:
    """A copy of a frame in a scratch buffer (which the next read overwrites): writable
    when asked for a copy, else read-only like a view into a cached chunk."""
    out = frame.copy()
    if not copy:
        out.flags.writeable = False
    return out


def _check_out(out: np.ndarray, header: ChunkHeader) -> None:
    """``read_into``'s ``out``: writable C-contiguous bytes shaped as the chunk's frames."""
    if (
        out.dtype.itemsize != 1
        or out.shape[1:] != header.shape
        or not (out.flags.c_contiguous and out.flags.writeable)
    ):
        raise ValueError(
            f"out is {out.dtype} {out.shape}, not writable uint8 frames {header.shape}"
        )
