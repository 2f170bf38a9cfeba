"""zstd parts inside a CHUNK's data (docs/FORMAT.md, "zstd parts"): the seek table in
zstd's seekable format that lets a reader decode the one part holding a frame."""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

# A zstd chunk's data is either ONE zstd frame holding all N frames, or (written since
# 0.3.x, format 3 unchanged otherwise) P >= 2 zstd frames ("parts") of consecutive
# frames followed by a seek table in the zstd seekable format (zstd's
# contrib/seekable_format): a skippable frame whose content lists each part's
# compressed and decompressed size, then a 9-byte footer. The data stays one valid zstd
# stream (a skippable frame is ignored by decoders), and a reader can decode the one
# part holding a frame instead of the whole chunk.
_SKIPPABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
_SKIPPABLE_HEAD = struct.Struct("<II")  # magic, frame size
_SEEK_ENTRY = struct.Struct("<II")  # compressed size, decompressed size
_SEEK_FOOTER = struct.Struct("<IBI")  # number of frames, descriptor, seekable magic
_SEEK_CHECKSUM_FLAG = 0x80  # descriptor bit 7: entries carry a checksum (never written)
_SEEK_RESERVED_BITS = 0x7C  # descriptor bits 2-6: must be zero
MAX_PARTS = 65_535  # at most one part a frame (chunk_frames <= 65,535)


def seek_table_size(parts: int) -> int:
    """Bytes of the seek table (skippable frame) describing ``parts`` parts."""
    return _SKIPPABLE_HEAD.size + _SEEK_ENTRY.size * parts + _SEEK_FOOTER.size


def pack_seek_table(sizes: list[tuple[int, int]]) -> bytes:
    """The seek table of parts of ``(compressed, decompressed)`` sizes, in order."""
    body = b"".join(_SEEK_ENTRY.pack(c, d) for c, d in sizes)
    body += _SEEK_FOOTER.pack(len(sizes), 0, SEEKABLE_MAGIC)
    return _SKIPPABLE_HEAD.pack(_SKIPPABLE_MAGIC, len(body)) + body


@dataclass(frozen=True, slots=True)
class ZstdParts:
    """Where each part of a zstd chunk's data lies: part ``p`` holds frames
    ``first[p] <= slot < first[p + 1]`` compressed in ``data[start[p]:start[p + 1]]``
    (both tuples have P + 1 entries; ``start[P]`` is where the seek table begins)."""

    first: tuple[int, ...]
    start: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.first) - 1

    def part_of(self, slot: int) -> int:
        """The part holding frame ``slot`` (``0 <= slot < N``)."""
        return bisect.bisect_right(self.first, slot) - 1


def has_seek_table(data: bytes | memoryview) -> bool:
    """Whether zstd chunk data ends with a seek table's footer (then ``unpack_parts``
    must accept it: a single zstd frame never names parts)."""
    n = len(data)
    return (
        n >= seek_table_size(0)
        and _SEEK_FOOTER.unpack_from(data, n - _SEEK_FOOTER.size)[2] == SEEKABLE_MAGIC
    )


def unpack_parts(data: bytes | memoryview, count: int, frame_bytes: int, bad) -> ZstdParts:
    """The parts of zstd chunk data of ``count`` frames of ``frame_bytes`` bytes, from
    its seek table. Raises ``bad(why)`` unless the table is well formed, its parts
    cover exactly the data before it, and each part holds a whole number of frames
    (together exactly ``count``)."""
    n = len(data)
    parts, descriptor, _magic = _SEEK_FOOTER.unpack_from(data, n - _SEEK_FOOTER.size)
    if descriptor & (_SEEK_CHECKSUM_FLAG | _SEEK_RESERVED_BITS):
        raise bad(f"seek table descriptor {descriptor:#x} not supported")
    if not 1 <= parts <= min(MAX_PARTS, count):
        raise bad(f"seek table of {parts} parts for {count} frames")
    table = seek_table_size(parts)
    if table > n:
        raise bad("seek table longer than the data")
    magic, size = _SKIPPABLE_HEAD.unpack_from(data, n - table)
    if magic != _SKIPPABLE_MAGIC or size != table - _SKIPPABLE_HEAD.size:
        raise bad("seek table frame header does not match its footer")
    sizes = struct.unpack_from(f"<{2 * parts}I", data, n - table + _SKIPPABLE_HEAD.size)
    first, start = [0], [0]
    for compressed, raw in zip(sizes[0::2], sizes[1::2], strict=True):
        frames, rest = divmod(raw, frame_bytes)
        if rest or not frames or not compressed:
            raise bad(f"a part of {compressed} bytes holding {raw} bytes of frames")
        first.append(first[-1] + frames)
        start.append(start[-1] + compressed)
    if first[-1] != count or start[-1] != n - table:
        raise bad("seek table parts do not cover the chunk's frames and data")
    return ZstdParts(tuple(first), tuple(start))
