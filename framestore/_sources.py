"""Segment sources: where a ``SegmentReader`` gets segment bytes other than the store's
own directory.

The reader reads local segments itself (``pread`` on cached descriptors). A source gives
it a file-like object per segment instead; the reader's checks stay the same (every
record's CRC, the file header, chunk keys), so a source only has to deliver bytes.

``RemoteSegments`` reads the segments of a published store (``framestore publish``)
through fsspec (``s3://``, ``gs://``, ``http(s)://``, a local path...) with ranged reads:
one request per chunk record when its extent is known from the published catalogue (the
record header, payload and CRC in one range), never the whole object. Per segment it
first checks the object's size against the manifest (one metadata request) and reads and
checks the 24-byte file header (one ranged read); both are cached.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from typing import IO, Any, Protocol

from ._format import read_file_header
from .errors import CorruptRecord, SegmentMissing, StoreClosed
from .segments import relative_segment_path

__all__ = ["PositionalFile", "RemoteSegments", "SegmentSource"]


class SegmentSource(Protocol):
    """What a ``SegmentReader`` needs from a place that holds segments."""

    def open_segment(self, segment: int) -> tuple[IO[bytes], int]:
        """A seekable, readable view of a segment (checked file header) and its format
        version. Raises ``SegmentMissing`` when there is no such segment."""
        ...

    def record_bytes(self, segment: int, offset: int) -> int:
        """Bytes of the record starting at ``offset`` (0 when unknown)."""
        ...

    def close(self) -> None: ...


class RemoteSegments:
    """The segments of a published store, read with ranged requests through fsspec.

    Args:
        fs: an fsspec file system.
        root: the published store's path on ``fs`` (no trailing slash).
        sizes: ``{segment id: object size}`` from the manifest.
        extents: ``{(segment, offset): record bytes}`` of the published chunk records
            (a hint for one request per chunk; a wrong hint only costs a second request:
            the reader checks every record's framing and CRC).
        location: how errors name the store (its URL).
    """

    def __init__(
        self,
        fs: Any,
        root: str,
        sizes: Mapping[int, int],
        extents: Mapping[tuple[int, int], int],
        location: str,
    ):
        self._fs = fs
        self._root = root.rstrip("/")
        self._sizes = dict(sizes)
        self._extents = dict(extents)
        self.location = location.rstrip("/")
        self._versions: dict[int, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.requests = 0  # ranged reads made (a measure for tests and the benchmark)

    def url(self, segment: int) -> str:
        return f"{self.location}/{relative_segment_path(segment)}"

    def _path(self, segment: int) -> str:
        return f"{self._root}/{relative_segment_path(segment)}"

    def open_segment(self, segment: int) -> tuple[IO[bytes], int]:
        with self._lock:
            if self._closed:
                raise StoreClosed("read from a closed segment source")
            version = self._versions.get(segment)
        if version is None:
            version = self._check(segment)
        return _RangeFile(self, segment, self._sizes[segment]), version

    def _check(self, segment: int) -> int:
        """Size against the manifest, then the file header; remembered per segment."""
        expected = self._sizes.get(segment)
        if expected is None:
            raise SegmentMissing(segment, f"{self.url(segment)} (not in the manifest)")
        try:
            actual = self._fs.size(self._path(segment))
        except FileNotFoundError:
            raise SegmentMissing(segment, self.url(segment)) from None
        if actual != expected:
            raise CorruptRecord(
                segment,
                min(actual, expected),
                f"published object {self.url(segment)} has {actual} bytes, the manifest "
                f"says {expected} (truncated or replaced)",
            )
        version = read_file_header(_RangeFile(self, segment, expected), segment).version
        with self._lock:
            self._versions[segment] = version
        return version

    def fetch(self, segment: int, start: int, end: int) -> bytes:
        """Bytes ``start <= i < end`` of a segment object: one ranged request.

        Raises:
            CorruptRecord: the answer is not that range (a server that ignores HTTP Range
                sends the whole object: it is refused, not sliced, so that no reader
                downloads a whole segment per chunk unawares).
        """
        with self._lock:
            self.requests += 1
        try:
            data = self._fs.cat_file(self._path(segment), start=start, end=end)
        except FileNotFoundError:
            raise SegmentMissing(segment, self.url(segment)) from None
        want = max(0, min(end, self._sizes[segment]) - start)
        if len(data) != want:
            raise CorruptRecord(
                segment,
                start,
                f"{self.url(segment)}: a ranged read of {want} bytes returned {len(data)} "
                "(does the server honour HTTP Range requests?)",
            )
        return data

    def extent(self, segment: int, offset: int) -> int:
        return self._extents.get((segment, offset), 0)

    def record_bytes(self, segment: int, offset: int) -> int:
        return self.extent(segment, offset)

    def segment_bytes(self) -> int:
        return sum(self._sizes.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._versions.clear()


class PositionalFile(io.RawIOBase):
    """A read-only file whose position is its own (the local ``pread`` view and the
    remote ranged one): subclasses give ``read`` and ``_end`` (the file's size)."""

    _pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _end(self) -> int:
        raise NotImplementedError

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = pos
        elif whence == 1:
            self._pos += pos
        else:
            self._pos = self._end() + pos
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _RangeFile(PositionalFile):
    """A read-only file over one segment object: each ``read`` that is not already
    buffered is one ranged request, widened to the whole record when a record starts at
    the position (so ``read_record``'s header read fetches header, payload and CRC)."""

    def __init__(self, source: RemoteSegments, segment: int, size: int):
        self._source = source
        self._segment = segment
        self._size = size
        self._pos = 0
        self._buf_start = 0
        self._buf = b""

    def _end(self) -> int:
        return self._size

    def read(self, size: int = -1) -> bytes:
        start = self._pos
        end = self._size if size is None or size < 0 else min(self._size, start + size)
        if end <= start:
            return b""
        buf_end = self._buf_start + len(self._buf)
        if not (self._buf_start <= start and end <= buf_end):
            want = max(end, min(self._size, start + self._source.extent(self._segment, start)))
            self._buf = self._source.fetch(self._segment, start, want)
            self._buf_start = start
        data = self._buf[start - self._buf_start : end - self._buf_start]
        self._pos = start + len(data)
        return data
