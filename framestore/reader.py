"""SegmentReader: random access and sequential reads with checksum verification.

Safe to use while a writer appends (it only reads records the database points at, which
are complete), and from several threads (``os.pread`` on shared descriptors, one zstd
decompressor per thread, a locked chunk cache).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import zstandard

from ._format import (
    FILE_HEADER_SIZE,
    FOREIGN_SEGMENT,
    MAX_RECORD_BYTES,
    RECORD_HEADER_SIZE,
    ChunkHeader,
    RecordType,
    read_file_header,
    read_record,
    store_tag,
)
from ._sources import PositionalFile, SegmentSource
from .errors import (
    CorruptRecord,
    FrameNotFound,
    StoreClosed,
    TruncatedRecord,
)
from .segments import list_segment_ids, open_segment_fd, segment_path

if TYPE_CHECKING:
    import numpy as np

#: Decoded chunks kept by default, in bytes: a crafted segment of tiny chunks that each
#: decode to the 256 MiB limit must not multiply it by the number of cached chunks.
DEFAULT_CACHE_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class Chunk:
    """A decoded chunk: its header and its frames as one read-only array (N, H, W[, C])."""

    segment: int
    offset: int
    header: ChunkHeader
    frames: np.ndarray
    record_bytes: int


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
            store's remote objects, see ``framestore._sources``); the same checks apply.
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
        self._fds: OrderedDict[int, tuple[int, int]] = OrderedDict()  # segment -> fd, version
        self._lock = threading.Lock()
        self._local = threading.local()
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

    def forget(self, segments: Iterable[int] | None = None) -> None:
        """Drop cached chunks and descriptors (all, or of the given segments): after
        compaction deleted files, or to see a segment replaced on disk."""
        with self._lock:
            wanted = None if segments is None else set(segments)
            for key in [k for k in self._cache if wanted is None or k[0] in wanted]:
                self._cached_bytes -= self._cache.pop(key).frames.nbytes
            for seg in [s for s in self._fds if wanted is None or s in wanted]:
                os.close(self._fds.pop(seg)[0])

    # ----------------------------------------------------------------- reading
    def read_chunk(self, segment: int, offset: int) -> Chunk:
        """Decode (or fetch from cache) the chunk whose record starts at ``offset``."""
        key = (int(segment), int(offset))
        if key[0] < 0 or key[1] < 0:
            raise CorruptRecord(segment, offset, "invalid frame pointer (negative)")
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
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
        from .codecs import decode_chunk  # numpy: loaded by the first frame read, not by ls

        frames = decode_chunk(header, data, self._decompressor(), segment=segment, offset=offset)
        chunk = Chunk(segment, offset, header, frames, rec.end - rec.offset)
        with self._lock:
            self.chunks_decoded += 1
            old = self._cache.pop(key, None)
            if old is not None:
                self._cached_bytes -= old.frames.nbytes
            self._cache[key] = chunk
            self._cached_bytes += frames.nbytes
            while len(self._cache) > 1 and (
                len(self._cache) > self._cache_size or self._cached_bytes > self._cache_bytes_max
            ):
                self._cached_bytes -= self._cache.popitem(last=False)[1].frames.nbytes
        return chunk

    def read(
        self, location, *, copy: bool = True, expect_key: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Return the frame at ``location`` (a ``(segment, offset, slot)`` tuple or a
        ``FrameRef``), bit-exact. Corrupt data raises a ``CorruptData`` error naming the
        segment and offset; it is never returned as pixels.

        With ``expect_key=(stream_key, frame_key)`` (the episode id and step a database
        row names) a chunk slot holding another frame raises ``CorruptRecord``: a damaged
        or hostile pointer must not return another step's valid pixels."""
        loc = getattr(location, "location", location)
        if loc is None:
            raise FrameNotFound("frame was not stored (dropped) or is not written yet")
        segment, offset, slot = loc
        return self.frame_of(
            self.read_chunk(segment, offset), slot, copy=copy, expect_key=expect_key
        )

    def frame_of(
        self,
        chunk: Chunk,
        slot: int,
        *,
        copy: bool = True,
        expect_key: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Frame ``slot`` of a chunk ``read_chunk`` returned, checked as ``read`` checks
        it: a sequential reader decodes (or looks up) each chunk once and takes its
        frames here."""
        segment, offset = chunk.segment, chunk.offset
        if not 0 <= slot < chunk.header.count:
            raise FrameNotFound(
                f"segment {segment} at offset {offset}: slot {slot} out of range "
                f"(chunk holds {chunk.header.count} frames)"
            )
        if expect_key is not None:
            have = (chunk.header.stream_key, chunk.header.frame_keys[slot])
            if have != (int(expect_key[0]), int(expect_key[1])):
                raise CorruptRecord(
                    segment,
                    offset,
                    f"slot {slot} holds episode {have[0]} step {have[1]}, not episode "
                    f"{expect_key[0]} step {expect_key[1]} (the frame pointer is wrong)",
                )
        frame = chunk.frames[slot]
        return frame.copy() if copy else frame

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
            self._cache.clear()
            self._cached_bytes = 0
            for fd, _version in self._fds.values():
                os.close(fd)
            self._fds.clear()
        if self.source is not None:
            self.source.close()

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
