"""Segment file records, exactly as docs/FORMAT.md describes them.

This module sees ``IO[bytes]`` and ``bytes`` only, never paths: the store decides where
files live. One dataclass per record payload, each with ``pack``/``unpack``.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import IO

from .errors import ChecksumMismatch, CorruptRecord, RecordTooLarge, TruncatedRecord

MAGIC = b"\x89FSEG\r\n\x1a"
VERSION = 1
MAX_RECORD_BYTES = 256 * 1024 * 1024
MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_CHUNK_RAW_BYTES = 256 * 1024 * 1024

_FILE_HEADER = struct.Struct("<8sHHII")  # magic, version, flags, segment_id, reserved
_CRC = struct.Struct("<I")
FILE_HEADER_SIZE = _FILE_HEADER.size + _CRC.size  # 24
RECORD_HEADER = struct.Struct("<HHI")  # type, flags, length
_RECORD_HEADER = RECORD_HEADER
RECORD_HEADER_SIZE = _RECORD_HEADER.size  # 8
RECORD_OVERHEAD = RECORD_HEADER_SIZE + _CRC.size  # 12
_CHECK_SIZE_ABOVE = 1024 * 1024


class RecordType(IntEnum):
    CHUNK = 1
    SEAL = 2


class Codec(IntEnum):
    RAW = 0
    ZSTD = 1
    PNG = 2


DTYPE_UINT8 = 1


def pack_file_header(segment_id: int) -> bytes:
    head = _FILE_HEADER.pack(MAGIC, VERSION, 0, segment_id, 0)
    return head + _CRC.pack(zlib.crc32(head))


def read_file_header(fp: IO[bytes], segment: int | str = "?") -> int:
    """Read and check the file header; return the segment id it names."""
    data = fp.read(FILE_HEADER_SIZE)
    if len(data) < FILE_HEADER_SIZE:
        raise TruncatedRecord(segment, 0, FILE_HEADER_SIZE, len(data))
    magic, version, _flags, segment_id, _ = _FILE_HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptRecord(segment, 0, "not a framestore segment (bad magic)")
    (stored,) = _CRC.unpack_from(data, _FILE_HEADER.size)
    actual = zlib.crc32(data[: _FILE_HEADER.size])
    if stored != actual:
        raise ChecksumMismatch(segment, 0, stored, actual)
    if version > VERSION:
        raise CorruptRecord(
            segment,
            0,
            f"segment format version {version} is newer than this framestore ({VERSION})",
        )
    return segment_id


def pack_record(rtype: int, *parts: bytes | bytearray | memoryview) -> bytes:
    """Frame the payload (the concatenation of ``parts``) as one record: header,
    payload, CRC-32. Taking parts avoids copying a large payload just to prefix it."""
    length = sum(len(p) for p in parts)
    if length > MAX_RECORD_BYTES:
        raise ValueError(f"record payload of {length} bytes exceeds {MAX_RECORD_BYTES}")
    head = _RECORD_HEADER.pack(int(rtype), 0, length)
    crc = zlib.crc32(head)
    for p in parts:
        crc = zlib.crc32(p, crc)
    return b"".join((head, *parts, _CRC.pack(crc)))


@dataclass(frozen=True, slots=True)
class Record:
    offset: int
    type: int
    payload: bytes

    @property
    def end(self) -> int:
        return self.offset + RECORD_OVERHEAD + len(self.payload)


def read_record(
    fp: IO[bytes],
    offset: int,
    *,
    segment: int | str = "?",
    max_length: int = MAX_RECORD_BYTES,
) -> Record | None:
    """Read and verify the record at ``offset``. Returns None exactly at end of file.

    Raises TruncatedRecord (torn tail), RecordTooLarge (corrupt length, never
    allocated) or ChecksumMismatch.
    """
    fp.seek(offset)
    head = fp.read(RECORD_HEADER_SIZE)
    if not head:
        return None
    if len(head) < RECORD_HEADER_SIZE:
        raise TruncatedRecord(segment, offset, RECORD_HEADER_SIZE, len(head))
    rtype, _flags, length = _RECORD_HEADER.unpack(head)
    if length > max_length:
        raise RecordTooLarge(segment, offset, length, max_length)
    if length > _CHECK_SIZE_ABOVE:
        # A corrupt length below the limit must not allocate it either: compare with
        # what the file actually holds before reading.
        available = fp.seek(0, 2) - offset
        if available < RECORD_OVERHEAD + length:
            raise TruncatedRecord(segment, offset, RECORD_OVERHEAD + length, max(available, 0))
        fp.seek(offset + RECORD_HEADER_SIZE)
    body = fp.read(length + _CRC.size)
    if len(body) < length + _CRC.size:
        raise TruncatedRecord(segment, offset, RECORD_OVERHEAD + length, len(head) + len(body))
    payload = body[:length]
    (stored,) = _CRC.unpack_from(body, length)
    actual = zlib.crc32(payload, zlib.crc32(head))
    if stored != actual:
        raise ChecksumMismatch(segment, offset, stored, actual)
    return Record(offset, rtype, payload)


def iter_records(
    fp: IO[bytes], *, segment: int | str = "?", max_length: int = MAX_RECORD_BYTES
) -> Iterator[Record]:
    """Yield every record after the file header, checked. Unknown types are yielded too
    (callers skip what they do not know). Raises at the first bad record."""
    offset = FILE_HEADER_SIZE
    while True:
        rec = read_record(fp, offset, segment=segment, max_length=max_length)
        if rec is None:
            return
        yield rec
        offset = rec.end


_CHUNK_HEAD = struct.Struct("<BBBBIIIIQ")  # codec dtype ndim _ H W C N stream_key
_FRAME_ENTRY = struct.Struct("<II")  # frame key, length


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    """The fixed part of a CHUNK payload plus its frame table."""

    codec: int
    ndim: int
    height: int
    width: int
    channels: int
    stream_key: int
    frame_keys: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.frame_keys)

    @property
    def shape(self) -> tuple[int, ...]:
        if self.ndim == 2:
            return (self.height, self.width)
        return (self.height, self.width, self.channels)

    @property
    def frame_bytes(self) -> int:
        return self.height * self.width * self.channels

    @property
    def size(self) -> int:
        """Bytes of the header + frame table (where the data starts)."""
        return _CHUNK_HEAD.size + _FRAME_ENTRY.size * self.count

    def pack(self) -> bytes:
        out = bytearray(
            _CHUNK_HEAD.pack(
                self.codec,
                DTYPE_UINT8,
                self.ndim,
                0,
                self.height,
                self.width,
                self.channels,
                self.count,
                self.stream_key,
            )
        )
        for key, length in zip(self.frame_keys, self.lengths, strict=True):
            out += _FRAME_ENTRY.pack(key, length)
        return bytes(out)

    @classmethod
    def unpack(cls, payload: bytes, *, segment: int | str = "?", offset: int = 0) -> ChunkHeader:
        """Parse and sanity-check a CHUNK header; refuses sizes over the limits."""

        def bad(why: str) -> CorruptRecord:
            return CorruptRecord(segment, offset, f"bad chunk: {why}")

        if len(payload) < _CHUNK_HEAD.size:
            raise bad("payload shorter than the chunk header")
        codec, dtype, ndim, _r, h, w, c, n, key = _CHUNK_HEAD.unpack_from(payload)
        if codec not in Codec.__members__.values():
            raise bad(f"unknown codec {codec}")
        if dtype != DTYPE_UINT8:
            raise bad(f"unknown dtype {dtype}")
        if ndim not in (2, 3) or (ndim == 2 and c != 1) or c not in (1, 3, 4):
            raise bad(f"invalid shape ndim={ndim} channels={c}")
        if h == 0 or w == 0 or n == 0:
            raise bad("empty frame or chunk")
        if h * w * c > MAX_FRAME_BYTES:
            raise bad(f"frame of {h * w * c} bytes exceeds {MAX_FRAME_BYTES}")
        if n * h * w * c > MAX_CHUNK_RAW_BYTES:
            raise bad(f"chunk of {n * h * w * c} raw bytes exceeds {MAX_CHUNK_RAW_BYTES}")
        table_end = _CHUNK_HEAD.size + _FRAME_ENTRY.size * n
        if len(payload) < table_end:
            raise bad("frame table runs past the payload")
        keys = []
        lengths = []
        for i in range(n):
            k, ln = _FRAME_ENTRY.unpack_from(payload, _CHUNK_HEAD.size + i * _FRAME_ENTRY.size)
            keys.append(k)
            lengths.append(ln)
        return cls(codec, ndim, h, w, c, key, tuple(keys), tuple(lengths))


_SEAL = struct.Struct("<IQQd")


@dataclass(frozen=True, slots=True)
class Seal:
    chunks: int
    frames: int
    offset: int
    sealed_at: float

    def pack(self) -> bytes:
        return _SEAL.pack(self.chunks, self.frames, self.offset, self.sealed_at)

    @classmethod
    def unpack(cls, payload: bytes, *, segment: int | str = "?", offset: int = 0) -> Seal:
        if len(payload) < _SEAL.size:
            raise CorruptRecord(segment, offset, "bad seal record: too short")
        return cls(*_SEAL.unpack_from(payload))

    @classmethod
    def now(cls, chunks: int, frames: int, offset: int) -> Seal:
        return cls(chunks, frames, offset, time.time())
