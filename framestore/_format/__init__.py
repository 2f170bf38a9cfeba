"""The store's on-disk format, exactly as docs/FORMAT.md describes it.

Every size, layout and name of the format is defined here and nowhere else: the file
and directory names of a store, the segment file header, the record framing, the
``CHUNK`` and ``SEAL`` payloads of each format version. Four parts have a module of
their own here: ``steps`` (a CHUNK's steps block and ``StepMeta``), ``streams`` (named
streams, observations), ``parts`` (the zstd parts inside a CHUNK's data) and
``published`` (the layout of a published store). Names are imported from the module
that defines them.

This module sees ``IO[bytes]`` and ``bytes`` only, never paths: the store decides where
files live. One dataclass per record payload, each with ``pack``/``unpack``.

May import: ``framestore.errors`` only (a vocabulary module: nothing above it).
"""

from __future__ import annotations

import errno
import json
import re
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import IO, Any, NamedTuple

import zstandard

from ..errors import ChecksumMismatch, CorruptRecord, RecordTooLarge, TruncatedRecord
from .steps import StepMeta, pack_steps  # a CHUNK's steps block

# --------------------------------------------------------------------------- names
DB_NAME = "framestore.db"  # the SQLite catalogue
LOCK_NAME = "LOCK"  # the writer's advisory lock file
SEGMENT_DIR = "segments"  # the segment files' directory
PARTIAL_SUFFIX = ".partial"  # a file being written, renamed into place when complete
_SEGMENT_NAME = re.compile(r"^seg-(\d{6,})\.fseg$")


def segment_name(segment_id: int) -> str:
    """File name of a segment: ``seg-NNNNNN.fseg`` (zero-padded decimal id)."""
    return f"seg-{segment_id:06d}.fseg"


def parse_segment_name(name: str) -> int | None:
    """The segment id a file name stands for, or None for any other name."""
    m = _SEGMENT_NAME.match(name)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------- versions
MAGIC = b"\x89FSEG\r\n\x1a"
VERSION = 3  # what this framestore writes
READABLE_VERSIONS = (1, 2, 3)  # what it reads: 0.1.0 wrote version 1, 0.2.0 version 2

# --------------------------------------------------------------------------- limits
MAX_RECORD_BYTES = 256 * 1024 * 1024
MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_CHUNK_RAW_BYTES = 256 * 1024 * 1024
MAX_SEAL_PAYLOAD = 1024  # readers find the seal from the tail within this many bytes
MAX_SEGMENT_ID = 2**32 - 1  # the file header's u32
MAX_STREAM_KEY = 2**64 - 1  # CHUNK stream key (the episode id): u64
MAX_FRAME_KEY = 2**32 - 1  # CHUNK frame key (the step): u32
MAX_META_PAYLOAD = 1024 * 1024  # EPISODE, EPISODE_END, RUN_END (JSON)
RENDER_STREAM = "render"  # stream index 0
RENDER_STREAM_INDEX = 0  # the CHUNK stream index of render frames
# --------------------------------------------------------------------------- framing
_FILE_HEADER = struct.Struct("<8sHHII")  # magic, version, flags, segment_id, store tag
_CRC = struct.Struct("<I")
CRC_SIZE = _CRC.size  # 4
FILE_HEADER_SIZE = _FILE_HEADER.size + CRC_SIZE  # 24
RECORD_HEADER = struct.Struct("<HHI")  # type, flags, length
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 8
RECORD_OVERHEAD = RECORD_HEADER_SIZE + CRC_SIZE  # 12
_CHECK_SIZE_ABOVE = 1024 * 1024


class RecordType(IntEnum):
    CHUNK = 1
    SEAL = 2
    EPISODE = 3  # version 3
    EPISODE_END = 4
    RUN_END = 5
    DELETED = 6  # version 3, from 0.3.x: a tombstone (``rm``)
    MERGED = 7  # version 3, from 0.3.x: a merge's provenance (``merge``)


#: The JSON records of version 3 (payload at most MAX_META_PAYLOAD).
META_RECORDS = frozenset(
    (
        RecordType.EPISODE,
        RecordType.EPISODE_END,
        RecordType.RUN_END,
        RecordType.DELETED,
        RecordType.MERGED,
    )
)
#: The records of a note segment (docs/FORMAT.md, "Note segments"): written by ``rm``
#: and ``merge`` into a small sealed segment of their own, never next to frames.
NOTE_RECORDS = frozenset((RecordType.DELETED, RecordType.MERGED))
#: Items (episodes of a ``DELETED`` record, ids of a ``MERGED`` one) per record: a
#: long list is split over several records, each far below ``MAX_META_PAYLOAD``.
NOTE_ITEMS_PER_RECORD = 2000


class Codec(IntEnum):
    RAW = 0
    ZSTD = 1
    PNG = 2


DTYPE_UINT8 = 1

#: The first bytes of a record of a known type (type, zero flags): where a scan looks
#: for the next record after corruption.
RECORD_START = re.compile(
    b"|".join(re.escape(RECORD_HEADER.pack(t, 0, 0)[:4]) for t in RecordType), re.DOTALL
)


def record_size(payload_length: int) -> int:
    """Bytes a record with a payload of ``payload_length`` bytes takes in a file."""
    return RECORD_OVERHEAD + payload_length


def store_tag(store_id: str | None) -> int:
    """The file header's store tag of a store: CRC-32 of its id (0 when it has none)."""
    return zlib.crc32(store_id.encode()) if store_id else 0


#: Why a version-3 segment whose store tag is not its store's is refused.
FOREIGN_SEGMENT = (
    "segment written by another store (its file header's store tag is not this store's)"
)


@dataclass(frozen=True, slots=True)
class FileHeader:
    """The 24-byte header that starts every segment file. ``store_tag`` is 0 in versions
    1-2 (reserved there) and when the writing store is unknown."""

    segment_id: int
    version: int = VERSION
    store_tag: int = 0

    def pack(self) -> bytes:
        tag = self.store_tag if self.version >= 3 else 0
        head = _FILE_HEADER.pack(MAGIC, self.version, 0, self.segment_id, tag)
        return head + _CRC.pack(zlib.crc32(head))


def pack_file_header(segment_id: int, version: int = VERSION, store_tag: int = 0) -> bytes:
    return FileHeader(segment_id, version, store_tag).pack()


def read_file_header(fp: IO[bytes], segment: int | str = "?") -> FileHeader:
    """Read and check the file header at the start of ``fp``."""
    fp.seek(0)
    data = fp.read(FILE_HEADER_SIZE)
    if len(data) < FILE_HEADER_SIZE:
        raise TruncatedRecord(segment, 0, FILE_HEADER_SIZE, len(data))
    magic, version, _flags, segment_id, tag = _FILE_HEADER.unpack_from(data)
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
    if version not in READABLE_VERSIONS:
        raise CorruptRecord(segment, 0, f"unknown segment format version {version}")
    return FileHeader(segment_id, version, tag if version >= 3 else 0)


def pack_record(rtype: int, *parts: bytes | bytearray | memoryview) -> bytes:
    """Frame the payload (the concatenation of ``parts``) as one record: header,
    payload, CRC-32. Taking parts avoids copying a large payload just to prefix it."""
    length = sum(len(p) for p in parts)
    if length > MAX_RECORD_BYTES:
        raise ValueError(f"record payload of {length} bytes exceeds {MAX_RECORD_BYTES}")
    head = RECORD_HEADER.pack(int(rtype), 0, length)
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
        return self.offset + record_size(len(self.payload))


def read_record_header(data: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """``(type, payload length)`` of the record header at ``data[pos:]``."""
    rtype, _flags, length = RECORD_HEADER.unpack_from(data, pos)
    return rtype, length


def record_crc_ok(data: bytes | memoryview, pos: int, length: int) -> bool:
    """Whether the record of payload ``length`` at ``data[pos:]`` has a matching CRC."""
    end = pos + record_size(length)
    (stored,) = _CRC.unpack_from(data, end - CRC_SIZE)
    return zlib.crc32(data[pos : end - CRC_SIZE]) == stored


def record_extent(fp: IO[bytes], offset: int) -> int:
    """Bytes of the record starting at ``offset`` as its header declares (unchecked;
    0 when no complete header is there, as past the end of the file or beyond the largest
    offset the file system allows). For size accounting, never for reading."""
    if offset < 0:
        return 0
    try:
        fp.seek(offset)
        head = fp.read(RECORD_HEADER_SIZE)
    except OSError as e:
        if e.errno != errno.EINVAL:  # a forged pointer past what lseek accepts
            raise
        return 0
    if len(head) < RECORD_HEADER_SIZE:
        return 0
    return record_size(read_record_header(head)[1])


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
    rtype, length = read_record_header(head)
    if length > max_length:
        raise RecordTooLarge(segment, offset, length, max_length)
    if length > _CHECK_SIZE_ABOVE:
        # A corrupt length below the limit must not allocate it either: compare with
        # what the file actually holds before reading.
        available = fp.seek(0, 2) - offset
        if available < record_size(length):
            raise TruncatedRecord(segment, offset, record_size(length), max(available, 0))
        fp.seek(offset + RECORD_HEADER_SIZE)
    body = fp.read(length + CRC_SIZE)
    if len(body) < length + CRC_SIZE:
        raise TruncatedRecord(segment, offset, record_size(length), len(head) + len(body))
    payload = body[:length]
    (stored,) = _CRC.unpack_from(body, length)
    actual = zlib.crc32(payload, zlib.crc32(head))
    if stored != actual:
        raise ChecksumMismatch(segment, offset, stored, actual)
    return Record(offset, rtype, payload)


def read_raw_record(
    fp: IO[bytes], offset: int, *, segment: int | str = "?", max_length: int = MAX_RECORD_BYTES
) -> tuple[bytes, Record]:
    """The record at ``offset`` exactly as stored (header, payload, CRC) after checking
    its CRC, and the parsed record. Raises like ``read_record``; a pointer past the end
    of the file is a ``TruncatedRecord``."""
    rec = read_record(fp, offset, segment=segment, max_length=max_length)
    if rec is None:
        raise TruncatedRecord(segment, offset, RECORD_HEADER_SIZE, 0)
    head = RECORD_HEADER.pack(rec.type, 0, len(rec.payload))
    crc = _CRC.pack(zlib.crc32(rec.payload, zlib.crc32(head)))
    return b"".join((head, rec.payload, crc)), rec


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


# --------------------------------------------------------------------------- CHUNK
# Version 1: a fixed 28-byte head, then the frame table. Version 2 starts with the size
# of the head and of one frame-table entry, so both can grow by appended fields. Version
# 3 appends the stream index and the steps block's length and count; the steps block
# lies between the frame table and the codec data.
_CHUNK_HEAD_V1 = struct.Struct("<BBBBIIIIQ")  # codec dtype ndim _ H W C N stream_key
_CHUNK_HEAD_V2 = struct.Struct(
    "<HHBBBBIIIIQ"
)  # head_size entry_size codec dtype ndim _ H W C N key
_CHUNK_V3_TAIL = struct.Struct("<HHII")  # stream index, reserved, steps bytes, steps count
_CHUNK_HEAD_V3_SIZE = _CHUNK_HEAD_V2.size + _CHUNK_V3_TAIL.size  # 44
_FRAME_ENTRY = struct.Struct("<II")  # frame key, length
MIN_CHUNK_PAYLOAD = min(_CHUNK_HEAD_V1.size, _CHUNK_HEAD_V2.size)


def _head_size(version: int) -> int:
    if version >= 3:
        return _CHUNK_HEAD_V3_SIZE
    return _CHUNK_HEAD_V2.size if version == 2 else _CHUNK_HEAD_V1.size


class _ChunkFields(NamedTuple):
    """The fixed fields of a CHUNK head as written, before any check (a version-1 head
    has its sizes implied and no stream index or steps block)."""

    head_size: int
    entry_size: int
    codec: int
    dtype: int
    ndim: int
    height: int
    width: int
    channels: int
    count: int
    stream_key: int
    stream_index: int
    steps_length: int
    steps_count: int


def _chunk_fields(data: bytes | memoryview, start: int, version: int) -> _ChunkFields:
    """The head at ``data[start:]`` of a chunk of format ``version`` (the caller has
    checked that ``_head_size(version)`` bytes are there)."""
    if version < 2:
        codec, dtype, ndim, _r, h, w, c, n, key = _CHUNK_HEAD_V1.unpack_from(data, start)
        return _ChunkFields(
            _CHUNK_HEAD_V1.size, _FRAME_ENTRY.size, codec, dtype, ndim, h, w, c, n, key, 0, 0, 0
        )
    head_size, entry_size, codec, dtype, ndim, _r, h, w, c, n, key = _CHUNK_HEAD_V2.unpack_from(
        data, start
    )
    stream_index = steps_length = steps_count = 0
    if version >= 3:
        stream_index, _r3, steps_length, steps_count = _CHUNK_V3_TAIL.unpack_from(
            data, start + _CHUNK_HEAD_V2.size
        )
    return _ChunkFields(
        head_size, entry_size, codec, dtype, ndim, h, w, c, n, key,
        stream_index, steps_length, steps_count,
    )  # fmt: skip


def chunk_head_size(version: int) -> int:
    """Bytes of a CHUNK payload's fixed head in format ``version``."""
    return _head_size(version)


def chunk_stream_key(head: bytes | memoryview, version: int) -> int:
    """The stream key of a CHUNK payload of format ``version`` starting with ``head``
    (at least ``chunk_head_size(version)`` bytes), unchecked: for walks that read record
    heads only, never for reading frames."""
    return _chunk_fields(head, 0, version).stream_key


def _frame_shape_ok(ndim: int, channels: int) -> bool:
    """Gray frames are 2-D with one channel; colour frames 3-D with 1, 3 or 4."""
    return ndim in (2, 3) and channels in (1, 3, 4) and not (ndim == 2 and channels != 1)


def _chunk_head_problem(f: _ChunkFields, version: int) -> str | None:
    """Why the head ``f`` of a chunk of format ``version`` cannot be valid (the first
    reason, in the words of ``CorruptRecord``), or None."""
    head_size, entry_size, codec, dtype, ndim, h, w, c, n, _key, _si, steps_length, steps_count = f
    if head_size < _head_size(version) or entry_size < _FRAME_ENTRY.size:
        return f"head size {head_size} / entry size {entry_size} below version {version}'s"
    if codec not in _CODECS:
        return f"unknown codec {codec}"
    if dtype != DTYPE_UINT8:
        return f"unknown dtype {dtype}"
    if version >= 3 and n == 0:
        if ndim or h or w or c or not steps_count or not steps_length:
            return "a chunk without frames must have no shape and some steps"
    elif not _frame_shape_ok(ndim, c):
        return f"invalid shape ndim={ndim} channels={c}"
    elif h == 0 or w == 0 or n == 0:
        return "empty frame or chunk"
    if h * w * c > MAX_FRAME_BYTES:
        return f"frame of {h * w * c} bytes exceeds {MAX_FRAME_BYTES}"
    if n * h * w * c > MAX_CHUNK_RAW_BYTES:
        return f"chunk of {n * h * w * c} raw bytes exceeds {MAX_CHUNK_RAW_BYTES}"
    if bool(steps_length) != bool(steps_count):
        return "steps block length and count disagree"
    return None


def _frame_table(payload: bytes | memoryview, f: _ChunkFields) -> tuple[tuple[int, ...], ...]:
    """The frame keys and lengths of the chunk's frame table."""
    if f.entry_size == _FRAME_ENTRY.size:  # one unpack for the whole table (a random
        # read parses it every time: per-entry calls cost ~20 µs on 64 frames)
        table = struct.unpack_from(f"<{2 * f.count}I", payload, f.head_size)
        return table[0::2], table[1::2]
    entries = [
        _FRAME_ENTRY.unpack_from(payload, f.head_size + i * f.entry_size) for i in range(f.count)
    ]
    return tuple(k for k, _ in entries), tuple(ln for _, ln in entries)


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    """The head of a CHUNK payload plus its frame table.

    ``data_offset`` is where the codec data starts in the payload (after the frame table
    and, in version 3, the steps block of ``steps_length`` bytes that starts at
    ``steps_offset``); ``version`` is the segment format version the payload was written
    in (its layout). A version-3 chunk may hold no frame (``count == 0``, shape all
    zeros) and only steps."""

    codec: int
    ndim: int
    height: int
    width: int
    channels: int
    stream_key: int
    frame_keys: tuple[int, ...]
    lengths: tuple[int, ...]
    table_end: int = 0  # where the data starts in the payload (set by unpack)
    version: int = VERSION
    stream_index: int = 0  # version 3: the stream in the episode's EPISODE record
    steps_length: int = 0  # version 3: bytes of the steps block (0: none)
    steps_count: int = 0  # version 3: steps the block describes

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
    def steps_offset(self) -> int:
        """Where the steps block starts in the payload (right after the frame table)."""
        return self.data_offset - self.steps_length

    @property
    def data_offset(self) -> int:
        """Bytes before the codec data in the payload (head, frame table, steps block)."""
        if self.table_end:
            return self.table_end
        steps = self.steps_length if self.version >= 3 else 0
        return _head_size(self.version) + _FRAME_ENTRY.size * self.count + steps

    def pack(self, version: int = VERSION) -> bytes:
        """The head and frame table in the layout of ``version`` (the steps block, when
        there is one, follows them: see ``pack_chunk``)."""
        common = (self.height, self.width, self.channels, self.count, self.stream_key)
        if version >= 2:
            head = _head_size(version)
            out = bytearray(
                _CHUNK_HEAD_V2.pack(
                    head, _FRAME_ENTRY.size, self.codec, DTYPE_UINT8, self.ndim, 0, *common
                )
            )
            if version >= 3:
                out += _CHUNK_V3_TAIL.pack(
                    self.stream_index, 0, self.steps_length, self.steps_count
                )
        else:
            out = bytearray(_CHUNK_HEAD_V1.pack(self.codec, DTYPE_UINT8, self.ndim, 0, *common))
        keys, lengths = self.frame_keys, self.lengths
        if len(keys) != len(lengths):
            raise ValueError(f"{len(keys)} frame keys for {len(lengths)} lengths")
        # the frame table in one pack: _FRAME_ENTRY ("<II") per frame, key then length
        table = [0] * (2 * len(keys))
        table[0::2], table[1::2] = keys, lengths
        out += struct.pack(f"<{2 * len(keys)}I", *table)
        return bytes(out)

    @classmethod
    def unpack(
        cls,
        payload: bytes | memoryview,
        *,
        version: int = VERSION,
        segment: int | str = "?",
        offset: int = 0,
    ) -> ChunkHeader:
        """Parse and sanity-check a CHUNK head of format ``version``; refuses sizes over
        the limits. Fields a newer writer appended are skipped."""

        def bad(why: str) -> CorruptRecord:
            return CorruptRecord(segment, offset, f"bad chunk: {why}")

        if len(payload) < _head_size(version):
            raise bad("payload shorter than the chunk header")
        f = _chunk_fields(payload, 0, version)
        why = _chunk_head_problem(f, version)
        if why is not None:
            raise bad(why)
        table_end = f.head_size + f.entry_size * f.count + f.steps_length
        if len(payload) < table_end:
            raise bad("frame table or steps block runs past the payload")
        keys, lengths = _frame_table(payload, f)
        return cls(
            f.codec, f.ndim, f.height, f.width, f.channels, f.stream_key, keys, lengths,
            table_end, version, f.stream_index, f.steps_length, f.steps_count,
        )  # fmt: skip

    def steps_block(self, payload: bytes | memoryview) -> memoryview:
        """The steps block's bytes in ``payload`` (empty when it has none)."""
        return memoryview(payload)[self.steps_offset : self.data_offset]


def rekeyed_chunk_record(raw: bytes, stream_key: int, version: int = VERSION) -> bytes:
    """A CHUNK record (header, payload, CRC) of a segment of ``version`` rewritten in this
    version's layout with another stream key: the same frame table, steps block and codec
    data under a new head and a new CRC. ``recover`` gives the frames of a recording
    whose episode id was taken by another one their own episode this way."""
    if not 0 <= stream_key <= MAX_STREAM_KEY:
        raise ValueError(f"stream key {stream_key} out of range")
    payload = memoryview(raw)[RECORD_HEADER_SIZE : len(raw) - CRC_SIZE]
    header = ChunkHeader.unpack(payload, version=version)
    head = _replace_header(header, stream_key=stream_key)
    return pack_record(
        RecordType.CHUNK, head.pack(VERSION), header.steps_block(payload),
        payload[header.data_offset :],
    )  # fmt: skip


def described_chunk_record(raw: bytes, stream_key: int, steps: list[StepMeta]) -> bytes:
    """A CHUNK record of this version (``raw``, as ``read_chunk_record`` frames it) of
    stream 0 rewritten with another stream key and a steps block describing ``steps``
    (in step order): ``gc`` writes a merged episode of a segment that carried no steps
    blocks (format 1-2) as this store's with the metadata its catalogue rows hold. The
    frame table and codec data are the same bytes."""
    if not 0 <= stream_key <= MAX_STREAM_KEY:
        raise ValueError(f"stream key {stream_key} out of range")
    payload = memoryview(raw)[RECORD_HEADER_SIZE : len(raw) - CRC_SIZE]
    header = ChunkHeader.unpack(payload, version=VERSION)
    block = pack_steps(steps, zstandard.ZstdCompressor()) if steps else b""  # none: no block
    head = _replace_header(
        header, stream_key=stream_key, stream_index=0, steps_length=len(block),
        steps_count=len(steps),
    )  # fmt: skip
    return pack_chunk(head, block, payload[header.data_offset :])


def _replace_header(header: ChunkHeader, **changes: Any) -> ChunkHeader:
    fields = {
        name: getattr(header, name)
        for name in ChunkHeader.__dataclass_fields__
        if name not in ("table_end", "version")
    }
    fields.update(changes)
    return ChunkHeader(**fields)


def reframe_chunk(payload: bytes | memoryview, header: ChunkHeader) -> bytes:
    """A CHUNK payload of another format version rewritten in this version's layout:
    the same frame table, steps block (if any) and codec data bytes, a new head."""
    data = memoryview(payload)[header.data_offset :]
    steps = header.steps_block(payload)
    return _replace_header(header).pack(VERSION) + bytes(steps) + bytes(data)


def pack_chunk(header: ChunkHeader, steps_block: bytes, data: bytes | memoryview) -> bytes:
    """A whole CHUNK record of this version: ``header`` (its ``steps_length`` and
    ``steps_count`` must describe ``steps_block``), the steps block, the codec data."""
    return pack_record(RecordType.CHUNK, header.pack(VERSION), steps_block, data)


# --------------------------------------------------------------------------- EPISODE ...
def pack_meta(rtype: RecordType, fields: dict[str, Any]) -> bytes:
    """An ``EPISODE``, ``EPISODE_END``, ``RUN_END``, ``DELETED`` or ``MERGED`` record
    (header, JSON payload, CRC)."""
    payload = json.dumps(fields, separators=(",", ":"), allow_nan=False).encode()
    if len(payload) > MAX_META_PAYLOAD:
        raise ValueError(f"{rtype.name} payload of {len(payload)} bytes exceeds {MAX_META_PAYLOAD}")
    return pack_record(rtype, payload)


def adopted_meta(
    kind: str, meta: dict[str, Any], store_id: str | None, *, episode_id: int | None = None,
    run_id: int | None = None, continues: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """An ``EPISODE`` (``kind`` "episode"), ``EPISODE_END`` ("episode_end") or ``RUN_END``
    ("run_end") record of a merged segment rewritten as this store's (``gc`` folding
    merged segments, docs/FORMAT.md "Merged stores"): the ids here, the stream key the
    episode id here, ``store_id`` this store's."""
    if kind == "run_end":
        return {**meta, "run_id": run_id}
    if kind == "episode_end":
        return {**meta, "stream_key": episode_id, "episode_id": episode_id}
    ep, run = meta.get("episode"), meta.get("run")
    return {
        **meta, "stream_key": episode_id, "store_id": store_id,
        "run": {**(run if isinstance(run, dict) else {}), "id": run_id},
        "episode": {
            **(ep if isinstance(ep, dict) else {}), "id": episode_id,
            "continues_episode": continues,
        },
    }  # fmt: skip


def pack_notes(rtype: RecordType, fields: dict[str, Any], key: str) -> list[bytes]:
    """``DELETED`` or ``MERGED`` records carrying ``fields``, the list ``fields[key]``
    split over as many records as ``NOTE_ITEMS_PER_RECORD`` needs (each record has the
    other fields whole; readers join the lists)."""
    items = list(fields[key])
    n = NOTE_ITEMS_PER_RECORD
    parts = [items[i : i + n] for i in range(0, len(items), n)] or [[]]
    return [pack_meta(rtype, {**fields, key: part}) for part in parts]


def unpack_meta(payload: bytes, *, segment: int | str = "?", offset: int = 0) -> dict[str, Any]:
    """The JSON object of an ``EPISODE``, ``EPISODE_END``, ``RUN_END``, ``DELETED`` or
    ``MERGED`` payload."""
    if len(payload) > MAX_META_PAYLOAD:
        raise CorruptRecord(segment, offset, "metadata record too long")
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptRecord(segment, offset, f"bad metadata record: {e}") from None
    if not isinstance(value, dict):
        raise CorruptRecord(segment, offset, "bad metadata record: not a JSON object")
    return value


# --------------------------------------------------------------------------- SEAL
_SEAL_V1 = struct.Struct("<IQQd")  # chunks, frames, offset of this record, sealed at
_SEAL = struct.Struct("<IQQdQ")  # version 3 appends: bytes of records describing episodes


@dataclass(frozen=True, slots=True)
class Seal:
    chunks: int
    frames: int
    offset: int
    sealed_at: float
    #: Bytes of the records that describe episodes rather than hold frames (EPISODE,
    #: EPISODE_END, RUN_END, chunks without frames): overhead, never dead bytes. 0 in
    #: seals of versions 1-2.
    meta_bytes: int = 0

    def pack(self) -> bytes:
        return _SEAL.pack(self.chunks, self.frames, self.offset, self.sealed_at, self.meta_bytes)

    def record(self) -> bytes:
        """The whole SEAL record (header, payload, CRC)."""
        return pack_record(RecordType.SEAL, self.pack())

    @classmethod
    def unpack(cls, payload: bytes, *, segment: int | str = "?", offset: int = 0) -> Seal:
        if len(payload) < _SEAL_V1.size:
            raise CorruptRecord(segment, offset, "bad seal record: too short")
        if len(payload) > MAX_SEAL_PAYLOAD:
            raise CorruptRecord(segment, offset, "bad seal record: too long")
        if len(payload) < _SEAL.size:
            return cls(*_SEAL_V1.unpack_from(payload))
        return cls(*_SEAL.unpack_from(payload))

    @classmethod
    def now(cls, chunks: int, frames: int, offset: int, meta_bytes: int = 0) -> Seal:
        return cls(chunks, frames, offset, time.time(), meta_bytes)


SEAL_RECORD_SIZE = record_size(_SEAL.size)  # what this version writes
SEAL_MIN_RECORD_SIZE = record_size(_SEAL_V1.size)  # the smallest seal a reader accepts
SEGMENT_OVERHEAD = FILE_HEADER_SIZE + SEAL_RECORD_SIZE  # a sealed segment's own bytes


def plausible_record(rtype: int, length: int) -> bool:
    """Whether a record header could be a well-formed record of a known type (used to
    resynchronise after corruption; the CRC decides)."""
    if rtype == _SEAL_TYPE:
        return _SEAL_V1.size <= length <= MAX_SEAL_PAYLOAD
    if rtype == _CHUNK_TYPE:
        return MIN_CHUNK_PAYLOAD <= length <= MAX_RECORD_BYTES
    if rtype in META_RECORDS:
        return 2 <= length <= MAX_META_PAYLOAD
    return False


_SEAL_TYPE, _CHUNK_TYPE = int(RecordType.SEAL), int(RecordType.CHUNK)


_CODECS = frozenset(int(c) for c in Codec)


def plausible_chunk_head(data: bytes | memoryview, pos: int, length: int, version: int) -> bool:
    """Whether the CHUNK record of payload ``length`` at ``data[pos:]`` has a head that
    could be valid: known codec, dtype and shape, sizes within the limits, a frame table
    inside the payload, and for raw chunks exactly the data the frames need. O(1): the
    frame table is not read (a scan tries this at many candidate offsets)."""
    if length < _head_size(version):
        return False
    f = _chunk_fields(data, pos + RECORD_HEADER_SIZE, version)
    if version >= 3 and f.count == 0:  # steps only: the head and the steps block fill it
        head_size, entry_size, _co, _dt, ndim, h, w, c, _n, _k, _si, steps_length, steps_count = f
        return (
            head_size >= _head_size(version)
            and entry_size >= _FRAME_ENTRY.size
            and bool(steps_length) == bool(steps_count)
            and not (ndim or h or w or c)
            and head_size + steps_length == length
        )
    if _chunk_head_problem(f, version) is not None:
        return False
    table_end = f.head_size + f.entry_size * f.count + f.steps_length
    if table_end > length:
        return False
    return f.codec != Codec.RAW or length - table_end == f.count * f.height * f.width * f.channels


def find_seal(fp: IO[bytes], size: int, *, segment: int | str = "?") -> Seal | None:
    """The SEAL record that ends the file, found from its tail, or None.

    A seal may be longer than the one this version writes (appended fields), so the
    last ``MAX_SEAL_PAYLOAD + RECORD_OVERHEAD`` bytes are searched for a SEAL record that
    ends exactly at the end of the file, whose CRC checks and that names its own offset.
    """
    window = min(size - FILE_HEADER_SIZE, MAX_SEAL_PAYLOAD + RECORD_OVERHEAD)
    if window < SEAL_MIN_RECORD_SIZE:
        return None
    start = size - window
    fp.seek(start)
    tail = fp.read(window)
    if len(tail) != window:
        return None
    for pos in range(window - SEAL_MIN_RECORD_SIZE, -1, -1):
        rtype, length = read_record_header(tail, pos)
        if rtype != RecordType.SEAL or pos + record_size(length) != window:
            continue
        if not plausible_record(rtype, length) or not record_crc_ok(tail, pos, length):
            continue
        payload = bytes(tail[pos + RECORD_HEADER_SIZE : pos + RECORD_HEADER_SIZE + length])
        seal = Seal.unpack(payload, segment=segment, offset=start + pos)
        return seal if seal.offset == start + pos else None
    return None
