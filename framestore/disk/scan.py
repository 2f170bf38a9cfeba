"""The one segment scanner: every record of a segment file, checked, for ``verify``,
``recover``, ``gc``, ``merge`` and the tests.

A scan keeps going after a bad record when what follows still parses: it searches for
the next record whose header is plausible and whose CRC checks out, so corruption in the
middle of a segment costs only the damaged records.

The search is linear in the file size, whatever the file holds: candidates are found
with one regular-expression pass, rejected in O(1) when their declared length runs past
the file or their chunk head is impossible, and the CRC work spent on candidates is
capped at ``RESYNC_CRC_FACTOR`` times the file size. A crafted file that exhausts it
ends in an unreadable tail (it never makes a scan quadratic).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import zstandard

from .._format import (
    FILE_HEADER_SIZE,
    META_RECORDS,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    RECORD_OVERHEAD,
    RECORD_START,
    ChunkHeader,
    RecordType,
    Seal,
    chunk_head_size,
    chunk_stream_key,
    plausible_chunk_head,
    plausible_record,
    read_file_header,
    read_record,
    record_crc_ok,
    record_size,
    unpack_meta,
)
from .._format.steps import StepMeta, unpack_steps
from ..errors import ChecksumMismatch, CorruptData, CorruptRecord, TruncatedRecord
from .segments import open_segment

__all__ = [
    "BadRecord",
    "GoodRecord",
    "SegmentScan",
    "StepMeta",
    "chunk_steps",
    "SegmentOutline",
    "segment_outline",
    "problem_kind",
    "scan_segment",
    "steps_of",
]

#: Bytes of candidate records a scan may CRC while resynchronising, per byte of file
#: (plus ``RESYNC_CRC_SLACK``): corruption costs a few record lengths; only a crafted
#: file full of plausible headers reaches the cap.
RESYNC_CRC_FACTOR = 2
RESYNC_CRC_SLACK = 1 << 20


@dataclass(frozen=True)
class GoodRecord:
    offset: int
    end: int
    type: int
    header: ChunkHeader | None  # CHUNK records only
    meta: dict | None = None  # EPISODE, EPISODE_END, RUN_END: their JSON object


@dataclass(frozen=True)
class BadRecord:
    offset: int  # first byte that could not be read
    end: int  # where good records resume (the file size for a tail)
    error: CorruptData


@dataclass
class SegmentScan:
    """What a scan of one segment file found."""

    segment: int
    size: int
    version: int | None = None  # the file header's format version
    header_error: CorruptData | None = None  # the file header is unreadable: nothing else
    header_id: int | None = None
    store_tag: int = 0  # version 3: the file header's store tag (0: unknown)
    records: list[GoodRecord] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)  # corruption with good data after it
    tail: BadRecord | None = None  # unreadable from here to the end of the file
    seal: Seal | None = None
    unknown_records: int = 0  # well-formed records of a type this version does not know

    @property
    def good_end(self) -> int:
        """End of the last good record: where a torn or corrupt tail is cut off (0 when
        the file header itself is unreadable)."""
        if self.header_error is not None:
            return 0
        return self.records[-1].end if self.records else FILE_HEADER_SIZE

    @cached_property
    def chunks(self) -> dict[int, ChunkHeader]:
        """Good CHUNK records by offset (computed once: pointer checks look up every step)."""
        return {r.offset: r.header for r in self.records if r.header is not None}

    @property
    def chunk_list(self) -> list[tuple[int, ChunkHeader, int]]:
        """``(offset, header, record bytes)`` of the good CHUNK records, in file order."""
        return [(r.offset, r.header, r.end - r.offset) for r in self.records if r.header]

    @property
    def frames(self) -> int:
        return sum(h.count for h in self.chunks.values())

    @property
    def meta_bytes(self) -> int:
        """Bytes of the good records that describe episodes rather than hold frames
        (what a seal counts as ``meta_bytes``)."""
        return sum(
            r.end - r.offset
            for r in self.records
            if r.meta is not None or (r.header is not None and not r.header.count)
        )

    @property
    def meta_records(self) -> list[GoodRecord]:
        """The good ``EPISODE``, ``EPISODE_END`` and ``RUN_END`` records, in file order
        (format version 3: docs/FORMAT.md); ``kind_of`` names each."""
        return [r for r in self.records if r.meta is not None]

    @staticmethod
    def kind_of(record: GoodRecord) -> str:
        """``"episode"``, ``"episode_end"``, ``"run_end"``, ``"deleted"``, ``"merged"``
        (metadata records), ``"chunk"``,
        ``"seal"`` or ``"unknown"``."""
        return _KINDS.get(record.type, "unknown")

    @property
    def sealed(self) -> bool:
        return self.seal is not None and self.tail is None

    @property
    def error(self) -> CorruptData | None:
        """The first error met (header, a bad record, or the tail), or None."""
        if self.header_error is not None:
            return self.header_error
        if self.bad:
            return self.bad[0].error
        return None if self.tail is None else self.tail.error

    @property
    def clean(self) -> bool:
        """Readable from end to end: a good header, no bad record, no bad tail."""
        return self.header_error is None and not self.bad and self.tail is None

    def add_seal_record(self, seal: Seal, end: int) -> None:
        """Account for a SEAL record appended after the scan (``recover``)."""
        self.seal = seal
        self.records.append(GoodRecord(seal.offset, end, RecordType.SEAL, None))
        self.tail = None
        self.size = end


_KINDS = {
    RecordType.CHUNK: "chunk",
    RecordType.SEAL: "seal",
    RecordType.EPISODE: "episode",
    RecordType.EPISODE_END: "episode_end",
    RecordType.RUN_END: "run_end",
    RecordType.DELETED: "deleted",
    RecordType.MERGED: "merged",
}


def problem_kind(error: CorruptData) -> str:
    """How ``verify`` names an error: ``checksum``, ``torn tail`` or ``corrupt``."""
    if isinstance(error, ChecksumMismatch):
        return "checksum"
    if isinstance(error, TruncatedRecord):
        return "torn tail"
    return "corrupt"


class _CrcBudget:
    """How many more candidate bytes a scan may CRC (see the module docstring)."""

    def __init__(self, size: int):
        self.left = RESYNC_CRC_FACTOR * size + RESYNC_CRC_SLACK

    def spend(self, n: int) -> bool:
        self.left -= n
        return self.left >= 0


def _resync(mm, start: int, size: int, version: int, budget: _CrcBudget) -> int | None:
    """Offset of the next well-formed record at or after ``start`` (CRC checked)."""
    for m in RECORD_START.finditer(mm, start):
        pos = m.start()
        if pos + RECORD_OVERHEAD > size:
            return None
        rtype, _flags, length = RECORD_HEADER.unpack_from(mm, pos)
        if not plausible_record(rtype, length) or pos + record_size(length) > size:
            continue
        if rtype == RecordType.CHUNK and not plausible_chunk_head(mm, pos, length, version):
            continue
        if not budget.spend(record_size(length)):
            return None
        if record_crc_ok(mm, pos, length):
            return pos
    return None


def scan_segment(
    path: str | os.PathLike, segment: int, *, decode: bool = False, resync: bool = True
) -> SegmentScan:
    """Check every record of one segment file (CRC always; with ``decode`` also each
    chunk's codec data). Never follows a symlink and refuses anything but a regular file
    (``CorruptRecord``).

    With ``resync=False`` the scan stops at the first bad record, which then starts the
    unreadable ``tail``: what a reader sees when it reads the file front to back.

    Raises ``FileNotFoundError`` when the file is missing."""
    dz = zstandard.ZstdDecompressor() if decode else None
    with open_segment(path, segment) as fp:
        size = os.fstat(fp.fileno()).st_size
        scan = SegmentScan(segment, size)
        try:
            header = read_file_header(fp, segment)
        except CorruptData as e:
            scan.header_error = e
            return scan
        scan.header_id, scan.version = header.segment_id, header.version
        scan.store_tag = header.store_tag
        if size <= FILE_HEADER_SIZE:
            return scan
        maps: list[mmap.mmap] = []
        budget = _CrcBudget(size)

        def find_next(start: int) -> int | None:
            if not maps:  # mapped only when needed (and never under pyfakefs' clean runs)
                maps.append(mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ))
            return _resync(maps[0], start, size, header.version, budget)

        try:
            _walk(scan, fp, dz, find_next, resync)
        finally:
            for mm in maps:
                mm.close()
    return scan


@dataclass
class SegmentOutline:
    """What a segment's record heads say (``segment_outline``)."""

    episodes: list[dict] = field(default_factory=list)  # its EPISODE records, CRC checked
    chunk_keys: dict[int, int] = field(default_factory=dict)  # chunk offset -> stream key


def segment_outline(path: str | os.PathLike, segment: int) -> SegmentOutline | None:
    """A segment file's ``EPISODE`` records (format version 3; none in older ones) and
    the stream key of each ``CHUNK``, found without reading frames: the walk follows the
    record headers, reads (CRC checked) the ``EPISODE`` payloads and only the head of each
    chunk (its stream key unchecked). None when the walk cannot reach the end cleanly (a
    bad length or CRC, a torn tail): the caller must then assume the file may hold
    anything. Raises ``FileNotFoundError`` when it is missing and ``CorruptData`` when its
    file header is unreadable."""
    out = SegmentOutline()
    with open_segment(path, segment) as fp:
        size = os.fstat(fp.fileno()).st_size
        version = read_file_header(fp, segment).version
        head_size = chunk_head_size(version)
        offset = FILE_HEADER_SIZE
        while offset < size:
            fp.seek(offset)
            head = fp.read(RECORD_HEADER_SIZE)
            if len(head) < RECORD_HEADER_SIZE:
                return None
            rtype, _flags, length = RECORD_HEADER.unpack(head)
            end = offset + record_size(length)
            if end > size:
                return None
            if rtype == RecordType.CHUNK:
                if length < head_size:
                    return None
                out.chunk_keys[offset] = chunk_stream_key(fp.read(head_size), version)
            elif rtype == RecordType.EPISODE and version >= 3:
                try:
                    rec = read_record(fp, offset, segment=segment)
                    if rec is None:
                        return None
                    out.episodes.append(unpack_meta(rec.payload, segment=segment, offset=offset))
                except CorruptData:
                    return None
            elif rtype == RecordType.SEAL:
                break
            offset = end
    return out


def steps_of(
    header: ChunkHeader, payload: bytes | memoryview, *, segment: int | str = "?", offset: int = 0
) -> list[StepMeta]:
    """The steps a CHUNK payload's steps block describes (none when it has no block);
    their ``episode_id`` is the chunk's stream key. Raises ``CorruptRecord``."""
    if not header.steps_length:
        return []
    return unpack_steps(
        header.steps_block(payload),
        header.steps_count,
        header.stream_key,
        segment=segment,
        offset=offset,
    )


def chunk_steps(fp, segment: int, offset: int, header: ChunkHeader) -> list[StepMeta]:
    """The steps of the CHUNK record at ``offset`` of an open segment file whose scan
    found it good (``header``): only the head, frame table and steps block are read,
    never the frames. Raises ``CorruptData`` if they no longer parse."""
    if not header.steps_length:
        return []
    fp.seek(offset + RECORD_HEADER_SIZE)
    prefix = fp.read(header.data_offset)
    if len(prefix) != header.data_offset:
        raise TruncatedRecord(segment, offset, header.data_offset, len(prefix))
    return steps_of(header, prefix, segment=segment, offset=offset)


def _check(scan: SegmentScan, rec, dz) -> ChunkHeader | dict | None:
    """Parse (and with a decompressor, decode) one framed record: a chunk's header, a
    metadata record's JSON object, or None; raises CorruptData."""
    seg = scan.segment
    if rec.type == RecordType.CHUNK:
        header = ChunkHeader.unpack(
            rec.payload, version=scan.version or 0, segment=seg, offset=rec.offset
        )
        if dz is not None:
            if header.count:
                from .codecs import decode_chunk  # numpy: only a decoding scan needs it

                data = memoryview(rec.payload)[header.data_offset :]
                decode_chunk(header, data, dz, segment=seg, offset=rec.offset)
            if header.steps_length:
                steps_of(header, rec.payload, segment=seg, offset=rec.offset)
        return header
    if rec.type == RecordType.SEAL:
        scan.seal = Seal.unpack(rec.payload, segment=seg, offset=rec.offset)
    elif rec.type in META_RECORDS and (scan.version or 0) >= 3:
        return unpack_meta(rec.payload, segment=seg, offset=rec.offset)
    else:
        scan.unknown_records += 1
    return None


def _walk(scan: SegmentScan, fp, dz, find_next: Callable[[int], int | None], resync: bool) -> None:
    seg, size = scan.segment, scan.size
    offset = FILE_HEADER_SIZE
    while offset < size:
        error: CorruptData | None = None
        end = None
        if scan.seal is not None:
            error = CorruptRecord(seg, offset, "data after the seal record")
        else:
            try:
                rec = read_record(fp, offset, segment=seg)
            except CorruptData as e:
                error = e
            else:
                if rec is None:
                    break
                end = rec.end
                try:
                    parsed = _check(scan, rec, dz)
                except CorruptData as e:
                    error = e  # framing is intact: the next record starts at rec.end
                else:
                    if isinstance(parsed, dict):
                        good = GoodRecord(offset, end, rec.type, None, parsed)
                    else:
                        good = GoodRecord(offset, end, rec.type, parsed)
                    scan.records.append(good)
                    offset = end
                    continue
        if not resync:
            end = None
        elif end is None and scan.seal is None:
            end = find_next(offset + 1)
        if end is None:
            scan.tail = BadRecord(offset, size, error)
            break
        scan.bad.append(BadRecord(offset, end, error))
        offset = end
    # bad records with no good record after them are part of the unreadable tail
    while scan.bad and scan.bad[-1].offset >= scan.good_end:
        last = scan.bad.pop()
        scan.tail = BadRecord(last.offset, size, last.error)
