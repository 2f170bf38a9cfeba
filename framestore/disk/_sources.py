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

Every byte of a published store is read through ``ObjectReader``, with bounds a hostile
store or server cannot lift: a read returns at most the bytes asked for (a caller that
expects N asks for N + 1 and so tells "more" from "exactly N", never reading the rest of
an endless answer), each request ends within a time limit (``timeout``: a stalled server
is one error, not minutes), and in a local directory only regular files are opened,
never through a link, never blocking on a FIFO.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
from collections.abc import Mapping
from typing import IO, Any, Protocol

from .._format import read_file_header
from ..errors import CorruptRecord, SegmentMissing, StoreClosed
from .segments import relative_segment_path

__all__ = [
    "DEFAULT_TIMEOUT",
    "ObjectReader",
    "ObjectUnreadable",
    "PositionalFile",
    "RemoteSegments",
    "SegmentSource",
]

#: Seconds one request to a published store may take (``timeout``), unless told.
DEFAULT_TIMEOUT = 30.0
_BLOCK = 8 * 1024 * 1024  # bytes asked for at a time when streaming an answer


class ObjectUnreadable(OSError):
    """An object of a published store cannot be read within the bounds: a link or not a
    regular file (local), no answer within the timeout, a server error. ``detail`` says
    which, for people (never a URL's credentials)."""

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(detail)


class ObjectReader:
    """Bounded reads of a published store's objects (see the module docstring).

    Args:
        fs: the fsspec file system; ``root``: the store's path on it.
        local: a local directory (read with ``os`` calls, never through a link).
        timeout: seconds each request may take.
    """

    def __init__(self, fs: Any, root: str, *, local: bool, timeout: float = DEFAULT_TIMEOUT):
        self.fs = fs
        self.root = root.rstrip("/")
        self.local = local
        self.timeout = timeout
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        self._http = not local and any(p in ("http", "https") for p in protocols)
        self._async = not local and bool(getattr(fs, "async_impl", False))

    def read(self, name: str, start: int, size: int) -> bytes:
        """At most ``size`` bytes of object ``name`` from ``start`` (fewer at its end).

        Raises:
            FileNotFoundError: no such object.
            ObjectUnreadable: see the class.
        """
        if size <= 0:
            return b""
        path = f"{self.root}/{name}"
        if self.local:
            return _read_local(path, start, size)
        if self._http:
            return self._sync(_http_read, self.fs, path, start, size)
        if self._async:
            return self._sync(self.fs._cat_file, path, start=start, end=start + size)
        return self.fs.cat_file(path, start=start, end=start + size)[:size]

    def _sync(self, func: Any, *args: Any, **kwargs: Any) -> bytes:
        from fsspec.asyn import sync
        from fsspec.exceptions import FSTimeoutError

        try:
            return sync(self.fs.loop, func, *args, timeout=self.timeout, **kwargs)
        except (FSTimeoutError, TimeoutError):
            raise ObjectUnreadable(
                f"no complete answer within {self.timeout:g} s (the timeout: "
                "--timeout / FRAMESTORE_TIMEOUT)"
            ) from None


def _read_local(path: str, start: int, size: int) -> bytes:
    """``pread`` of a regular file opened without following a link or blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ObjectUnreadable("a symbolic link; not followed") from None
        if e.errno == errno.ENOENT:
            raise
        raise ObjectUnreadable(f"cannot open: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ObjectUnreadable("not a regular file; not read")
        parts, got = [], 0
        while got < size:
            block = os.pread(fd, min(_BLOCK, size - got), start + got)
            if not block:
                break
            parts.append(block)
            got += len(block)
        return b"".join(parts)
    finally:
        os.close(fd)


async def _http_read(fs: Any, url: str, start: int, size: int) -> bytes:
    """One ranged GET whose answer is streamed and cut at ``size`` bytes: a server that
    ignores the range, or sends an endless body, costs ``size`` bytes, no more."""
    import aiohttp

    session = await fs.set_session()
    kwargs = dict(fs.kwargs)
    headers = dict(kwargs.pop("headers", None) or {})
    headers["Range"] = f"bytes={start}-{start + size - 1}"
    try:
        async with session.get(fs.encode_url(url), headers=headers, **kwargs) as r:
            if r.status == 404:
                raise FileNotFoundError(url)
            if r.status == 416:
                return b""
            if r.status >= 400:
                raise ObjectUnreadable(f"HTTP {r.status} {r.reason or ''}".rstrip())
            if start and r.status != 206:
                raise ObjectUnreadable(
                    "the server answered a ranged read with the whole object (does the "
                    "server honour HTTP Range requests?)"
                )
            out = bytearray()
            while len(out) < size:
                block = await r.content.read(min(_BLOCK, size - len(out)))
                if not block:
                    break
                out += block
            return bytes(out)
    except aiohttp.ClientError as e:
        raise ObjectUnreadable(f"HTTP request failed ({type(e).__name__})") from None


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
        reader: the bounded reader of the store's objects (one is made when not given).
    """

    def __init__(
        self,
        fs: Any,
        root: str,
        sizes: Mapping[int, int],
        extents: Mapping[tuple[int, int], int],
        location: str,
        reader: ObjectReader | None = None,
    ):
        self._fs = fs
        self._reader = reader or ObjectReader(fs, root, local=False)
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
        want = max(0, min(end, self._sizes[segment]) - start)
        try:  # never more than wanted, whatever the server sends
            data = self._reader.read(relative_segment_path(segment), start, want)
        except FileNotFoundError:
            raise SegmentMissing(segment, self.url(segment)) from None
        except ObjectUnreadable as e:
            raise CorruptRecord(segment, start, f"{self.url(segment)}: {e.detail}") from None
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
