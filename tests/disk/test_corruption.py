"""Damaged segment files: every read returns the exact frame or a CorruptData error that
names the segment and offset, never wrong pixels (after MCAP's CRC validation tests)."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import zstandard

from framestore._format import (
    FILE_HEADER_SIZE,
    MAX_RECORD_BYTES,
    RECORD_HEADER_SIZE,
    VERSION,
    ChunkHeader,
    Codec,
    RecordType,
    pack_record,
)
from framestore._format.parts import pack_seek_table
from framestore.disk.codecs import zstd_parts
from framestore.disk.reader import SegmentReader
from framestore.disk.scan import scan_segment
from framestore.disk.segments import segment_path
from framestore.errors import (
    ChecksumMismatch,
    CorruptData,
    CorruptRecord,
    FrameNotFound,
    RecordTooLarge,
    TruncatedRecord,
)
from framestore.write.service import FrameRef, FrameStorageService

SID = 1
FRAMES_PER_CHUNK = 8
N_FRAMES = 24  # three chunks


#: "zstd-parts": zstd chunks written in independently decodable parts of 3 frames.
PART_FRAMES = 3


def write_segment(root, frames, codec: str) -> list[FrameRef]:
    parts = PART_FRAMES if codec == "zstd-parts" else 0
    # max_latency: whole chunks even if the test stalls between puts (a loaded machine)
    with FrameStorageService(
        root,
        codec=codec.removesuffix("-parts"),
        chunk_frames=FRAMES_PER_CHUNK,
        part_frames=parts,
        max_latency=60.0,
    ) as svc:
        return [svc.put(f, key=(5, i)) for i, f in enumerate(frames)]


@pytest.fixture(scope="module", params=["zstd", "zstd-parts", "png", "raw"])
def pristine(request, tmp_path_factory, assault_frames):
    """A sealed segment of 24 Assault frames in three chunks, and its layout."""
    root = tmp_path_factory.mktemp(f"pristine-{request.param}")
    frames = assault_frames[:N_FRAMES]
    refs = write_segment(root, frames, request.param)
    path = segment_path(root, SID)
    scan = scan_segment(path, SID, resync=False)
    assert scan.sealed and len(scan.chunks) == 3
    if request.param == "zstd-parts":  # 3 + 3 + 2 frames in each chunk
        data = path.read_bytes()
        for off, header, size in scan.chunk_list:
            payload = data[off + RECORD_HEADER_SIZE : off + size - 4]
            assert zstd_parts(header, payload[header.data_offset :]).first == (0, 3, 6, 8)
    return {
        "codec": request.param,
        "bytes": path.read_bytes(),
        "frames": frames,
        "locations": [r.location for r in refs],
        "chunks": [(off, size, header) for off, header, size in scan.chunk_list],
        "seal_offset": scan.seal.offset,
    }


@pytest.fixture
def damaged(tmp_path, pristine):
    """A writable copy of the pristine segment in its own store directory."""
    root = tmp_path / "copy"
    (root / "segments").mkdir(parents=True)
    path = segment_path(root, SID)
    path.write_bytes(pristine["bytes"])
    return root, path


def read_each(root, locations, expected=(CorruptData,)) -> list:
    """Read every location with a fresh reader; ``expected`` errors are returned, any
    other exception propagates (and fails the test)."""
    out: list = []
    with SegmentReader(root) as reader:
        for loc in locations:
            try:
                out.append(reader.read(FrameRef.at(*loc)))
            except expected as e:
                out.append(e)
    return out


def assert_names_place(err: CorruptData, offset: int) -> None:
    assert err.segment == SID and err.offset == offset, (err.segment, err.offset, err)
    assert f"segment {SID}" in str(err) and f"offset {offset}" in str(err), str(err)


def flip_positions(pristine) -> list[int]:
    """Every byte of the file header, record headers, chunk headers + frame tables,
    CRCs and seal; every Nth byte of the data."""
    positions = set(range(FILE_HEADER_SIZE))
    for off, size, header in pristine["chunks"]:
        table_end = off + RECORD_HEADER_SIZE + header.data_offset
        positions.update(range(off, table_end))
        data_len = size - (table_end - off) - 4
        stride = max(1, data_len // 40)
        positions.update(range(table_end, off + size - 4, stride))
        positions.update(range(off + size - 4, off + size))
    positions.update(range(pristine["seal_offset"], len(pristine["bytes"])))
    return sorted(positions)


def test_flipped_bytes_never_give_wrong_pixels(damaged, pristine):
    root, path = damaged
    original = pristine["bytes"]
    locations = pristine["locations"]
    chunk_of = {off: (off, off + size) for off, size, _ in pristine["chunks"]}
    outcomes = {"exact": 0, "error": 0}
    error_types = set()
    for i, pos in enumerate(flip_positions(pristine)):
        data = bytearray(original)
        data[pos] ^= (0x01, 0x80, 0xFF)[i % 3]
        path.write_bytes(bytes(data))
        results = read_each(root, locations)
        for loc, frame, got in zip(locations, pristine["frames"], results, strict=True):
            start, end = chunk_of[loc[1]]
            if pos < FILE_HEADER_SIZE:
                # The file header is checked when the segment is opened.
                assert isinstance(got, CorruptData), (pos, type(got))
                assert_names_place(got, 0)
            elif start <= pos < end:
                # CRC-32 catches every single-byte error inside the record.
                assert isinstance(got, CorruptData), (pos, loc)
                assert_names_place(got, start)
            else:
                assert not isinstance(got, CorruptData), (pos, loc, got)
            if isinstance(got, CorruptData):
                outcomes["error"] += 1
                error_types.add(type(got))
            else:
                assert np.array_equal(got, frame), f"wrong pixels after flipping byte {pos}"
                outcomes["exact"] += 1
        # A full scan notices every flip, the seal's included.
        scan = scan_segment(path, SID, decode=True, resync=False)
        assert isinstance(scan.error, CorruptData) and not scan.sealed, pos
    assert outcomes["exact"] > 0 and outcomes["error"] > 0
    # Length-field flips exercise the size checks, not only the CRC.
    assert {ChecksumMismatch, CorruptRecord, RecordTooLarge} <= error_types, error_types


def test_crc_raised_by_one_is_a_checksum_mismatch(damaged, pristine):
    root, path = damaged
    off, size, _ = pristine["chunks"][1]
    data = bytearray(pristine["bytes"])
    (stored,) = struct.unpack_from("<I", data, off + size - 4)
    struct.pack_into("<I", data, off + size - 4, (stored + 1) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))

    results = read_each(root, pristine["locations"])
    for loc, frame, got in zip(pristine["locations"], pristine["frames"], results, strict=True):
        if loc[1] == off:
            assert type(got) is ChecksumMismatch
            assert_names_place(got, off)
            assert got.expected == (stored + 1) & 0xFFFFFFFF and got.actual == stored
            assert f"{got.expected:#010x}" in str(got) and f"{stored:#010x}" in str(got)
        else:
            assert np.array_equal(got, frame)

    scan = scan_segment(path, SID, resync=False)
    assert type(scan.error) is ChecksumMismatch and scan.error.offset == off
    assert scan.good_end == off and len(scan.chunks) == 1


def test_truncation_at_every_record_boundary_and_inside_records(damaged, pristine):
    root, path = damaged
    original = pristine["bytes"]
    boundaries = [FILE_HEADER_SIZE] + [off + size for off, size, _ in pristine["chunks"]]
    boundaries.append(len(original))  # after the seal
    inside = [0, 7, FILE_HEADER_SIZE - 1, FILE_HEADER_SIZE + 3]
    for off, size, header in pristine["chunks"]:
        inside += [off + 5, off + RECORD_HEADER_SIZE + header.data_offset // 2, off + size // 2]
        inside += [off + size - 1]
    inside += [pristine["seal_offset"] + 10, len(original) - 1]

    for cut in sorted(set(boundaries + inside)):
        path.write_bytes(original[:cut])
        scan = scan_segment(path, SID, decode=True, resync=False)
        complete = [b for b in boundaries if b <= cut]
        expected_end = complete[-1] if complete else 0
        assert scan.good_end == expected_end, cut
        assert scan.size == cut
        if cut in boundaries:
            assert scan.error is None, (cut, scan.error)
        else:
            assert isinstance(scan.error, TruncatedRecord), (cut, scan.error)
            assert scan.error.offset == expected_end
            assert f"segment {SID} at offset {expected_end}" in str(scan.error)
        assert scan.sealed == (cut == len(original))
        listed = {off for off, _, _ in scan.chunk_list}
        assert listed == {off for off, size, _ in pristine["chunks"] if off + size <= cut}

        # A ref past the cut is a torn record, or no record at all (end of file).
        results = read_each(root, pristine["locations"], (CorruptData, FrameNotFound))
        for loc, frame, got in zip(pristine["locations"], pristine["frames"], results, strict=True):
            if loc[1] in listed:
                assert isinstance(got, np.ndarray), (cut, loc, got)
                assert np.array_equal(got, frame)
            else:
                assert isinstance(got, CorruptData | FrameNotFound), (cut, loc, got)


def test_huge_record_length_is_refused_unread(damaged, pristine):
    root, path = damaged
    off, _, _ = pristine["chunks"][0]
    data = bytearray(pristine["bytes"])
    struct.pack_into("<I", data, off + 4, 0xFFFFFFF0)
    path.write_bytes(bytes(data))

    tracemalloc.start()
    try:
        with SegmentReader(root) as reader, pytest.raises(RecordTooLarge) as info:
            reader.read(FrameRef.at(SID, off, 0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak
    assert info.value.length == 0xFFFFFFF0 and info.value.limit == MAX_RECORD_BYTES
    assert_names_place(info.value, off)

    scan = scan_segment(path, SID, resync=False)
    assert isinstance(scan.error, RecordTooLarge) and scan.good_end == off


def test_reader_limit_refuses_records_above_it(damaged, pristine):
    root, _ = damaged
    off, size, _ = pristine["chunks"][0]
    with SegmentReader(root, max_record_bytes=size - 13) as reader:
        with pytest.raises(RecordTooLarge) as info:
            reader.read(FrameRef.at(SID, off, 0))
    assert info.value.length == size - 12 and info.value.limit == size - 13


# --------------------------------------------------------------------------- crafted chunks
def replace_chunk(pristine, path, index: int, payload: bytes) -> int:
    """Write the segment with chunk ``index`` replaced by a record with a valid CRC."""
    off, size, _ = pristine["chunks"][index]
    original = pristine["bytes"]
    path.write_bytes(
        original[:off] + pack_record(RecordType.CHUNK, payload) + original[off + size :]
    )
    return off


def chunk_payload(header: ChunkHeader, data: bytes) -> bytes:
    return header.pack() + data


def assault_header(codec: Codec, count: int = FRAMES_PER_CHUNK, **changes) -> ChunkHeader:
    fields = dict(
        codec=int(codec),
        ndim=3,
        height=210,
        width=160,
        channels=3,
        stream_key=5,
        frame_keys=tuple(range(count)),
        lengths=(210 * 160 * 3,) * count,
    )
    fields.update(changes)
    return ChunkHeader(**fields)


def patch_zstd_content_size(frame: bytes, size: int) -> bytes:
    """Rewrite the 4-byte Frame_Content_Size field of a zstd frame header."""
    fhd = frame[4]
    assert fhd >> 6 == 2, "expected a 4-byte content size field"
    single_segment = (fhd >> 5) & 1
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 3]
    return frame[:pos] + struct.pack("<I", size) + frame[pos + 4 :]


def zstd_bomb(content: int, claimed: int) -> bytes:
    """A zstd frame that inflates to ``content`` zero bytes but claims ``claimed``."""
    cobj = zstandard.ZstdCompressor(level=3).compressobj(size=content)
    block = bytes(1 << 20)
    parts = [cobj.compress(block) for _ in range(content // len(block))]
    return patch_zstd_content_size(b"".join(parts) + cobj.flush(), claimed)


def png_bomb(width: int, height: int) -> bytes:
    def png_chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(bytes(1000)))
        + png_chunk(b"IEND", b"")
    )


def _crafted_cases(frames):
    raw8 = b"".join(f.tobytes() for f in frames[:FRAMES_PER_CHUNK])
    raw_size = len(raw8)
    cctx = zstandard.ZstdCompressor(level=3)
    nine = cctx.compress(raw8 + frames[8].tobytes())
    fb = frames[0].nbytes
    halves = [cctx.compress(raw8[: 4 * fb]), cctx.compress(raw8[4 * fb :])]

    def parts(table):  # two 4-frame parts under a crafted seek table
        return chunk_payload(assault_header(Codec.ZSTD), b"".join(halves) + pack_seek_table(table))

    sizes = [len(h) for h in halves]
    return {
        "zstd_parts_sizes_lie": parts([(sizes[0], 3 * fb), (sizes[1], 5 * fb)]),
        "zstd_parts_miss_data": parts([(sizes[0], 4 * fb), (sizes[1] - 1, 4 * fb)]),
        "zstd_parts_bomb": parts([(sizes[0], 4 * fb), (sizes[1], 4000 * fb)]),
        "zstd_parts_no_frames": parts([(sizes[0], 0), (sizes[1], 8 * fb)]),
        "zstd_parts_too_many": parts([(1, fb)] * 9),
        "gigantic_frame": chunk_payload(
            assault_header(Codec.ZSTD, 1, height=60000, width=60000, channels=4), b""
        ),
        "gigantic_chunk": chunk_payload(
            assault_header(Codec.RAW, 5, height=4096, width=4096, channels=4), b""
        ),
        "frame_table_past_payload": chunk_payload(assault_header(Codec.RAW, 8), b"")[:50],
        "zero_height": chunk_payload(assault_header(Codec.RAW, 8, height=0), raw8),
        "two_channels": chunk_payload(assault_header(Codec.RAW, 8, channels=2), raw8),
        "unknown_codec": chunk_payload(assault_header(9), raw8),
        "raw_short": chunk_payload(assault_header(Codec.RAW), raw8[:-1]),
        "zstd_content_size_too_big": chunk_payload(assault_header(Codec.ZSTD), nine),
        "zstd_no_content_size": chunk_payload(
            assault_header(Codec.ZSTD),
            zstandard.ZstdCompressor(write_content_size=False).compress(raw8),
        ),
        "zstd_content_size_lies_small": chunk_payload(
            assault_header(Codec.ZSTD), patch_zstd_content_size(nine, raw_size)
        ),
        "zstd_bomb": chunk_payload(
            assault_header(Codec.ZSTD, 1, height=2, width=2, channels=1, ndim=2),
            zstd_bomb(64 << 20, 4),
        ),
        "zstd_garbage": chunk_payload(assault_header(Codec.ZSTD), b"\x28\xb5\x2f\xfd" + bytes(50)),
        "png_bomb_ihdr": chunk_payload(
            assault_header(Codec.PNG, 1, lengths=(len(png_bomb(60000, 60000)),)),
            png_bomb(60000, 60000),
        ),
        "png_over_frame_limit": chunk_payload(
            assault_header(Codec.PNG, 1, lengths=(len(png_bomb(5000, 5000)),)),
            png_bomb(5000, 5000),
        ),
        "png_lengths_disagree": chunk_payload(
            assault_header(Codec.PNG, 1, lengths=(10,)), png_bomb(210, 160)
        ),
        "png_not_a_png": chunk_payload(assault_header(Codec.PNG, 1, lengths=(4,)), b"junk"),
    }


CRAFTED = [
    "zstd_parts_sizes_lie",
    "zstd_parts_miss_data",
    "zstd_parts_bomb",
    "zstd_parts_no_frames",
    "zstd_parts_too_many",
    "gigantic_frame",
    "gigantic_chunk",
    "frame_table_past_payload",
    "zero_height",
    "two_channels",
    "unknown_codec",
    "raw_short",
    "zstd_content_size_too_big",
    "zstd_no_content_size",
    "zstd_content_size_lies_small",
    "zstd_bomb",
    "zstd_garbage",
    "png_bomb_ihdr",
    "png_over_frame_limit",
    "png_lengths_disagree",
    "png_not_a_png",
]


@pytest.fixture(scope="module")
def crafted(assault_frames):
    cases = _crafted_cases(assault_frames)
    assert sorted(cases) == sorted(CRAFTED)
    return cases


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_chunk_with_valid_crc_is_refused_without_huge_allocation(
    tmp_path, assault_frames, crafted, case
):
    root = tmp_path / "store"
    # A segment of zstd chunks whose middle chunk is replaced by the crafted record.
    refs = write_segment(root, assault_frames[:N_FRAMES], "zstd")
    path = segment_path(root, SID)
    scan = scan_segment(path, SID, resync=False)
    layout = {
        "bytes": path.read_bytes(),
        "chunks": [(off, size, h) for off, h, size in scan.chunk_list],
    }
    off = replace_chunk(layout, path, 1, crafted[case])

    tracemalloc.start()
    try:
        # A random read decodes a zstd frame only up to the frame it returns: a frame
        # that holds more than its content size is refused when read to its end.
        slot = FRAMES_PER_CHUNK - 1 if case == "zstd_content_size_lies_small" else 0
        with SegmentReader(root) as reader, pytest.raises(CorruptRecord) as info:
            reader.read(FrameRef.at(SID, off, slot))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The crafted record itself is at most a few MiB; a decoded bomb would be far more.
    assert peak < 16 * 1024 * 1024, (case, peak)
    assert_names_place(info.value, off)
    assert "bad chunk" in str(info.value)

    # Chunks before it still read back exactly; a full decode scan stops at it.
    with SegmentReader(root) as reader:
        for i in range(FRAMES_PER_CHUNK):
            assert np.array_equal(reader.read(refs[i].location), assault_frames[i])
    scan = scan_segment(path, SID, decode=True, resync=False)
    assert isinstance(scan.error, CorruptRecord) and scan.error.offset == off
    assert scan.good_end == off


# --------------------------------------------------------------------------- unknown records
def test_unknown_record_types_are_skipped(damaged, pristine):
    root, path = damaged
    original = pristine["bytes"]
    (c0, s0, _), (c1, _, _), _ = pristine["chunks"]
    unknown_a = pack_record(77, b"a record type from a newer framestore")
    unknown_b = pack_record(0xFFFF, b"")
    path.write_bytes(original[: c0 + s0] + unknown_a + unknown_b + original[c0 + s0 :])

    scan = scan_segment(path, SID, decode=True, resync=False)
    assert scan.error is None and scan.sealed
    assert scan.unknown_records == 2
    shift = len(unknown_a) + len(unknown_b)
    assert [off for off, _, _ in scan.chunk_list] == [
        off + (shift if off > c0 else 0) for off, _, _ in pristine["chunks"]
    ]
    assert scan.good_end == len(original) + shift

    # Frames before and after the unknown records read back, at their new offsets.
    moved = [
        (sid, off + (shift if off >= c1 else 0), slot) for sid, off, slot in pristine["locations"]
    ]
    results = read_each(root, moved)
    for frame, got in zip(pristine["frames"], results, strict=True):
        assert np.array_equal(got, frame)
    # Pointing a frame ref at the unknown record itself is refused.
    with SegmentReader(root) as reader, pytest.raises(CorruptRecord, match="expected a chunk"):
        reader.read(FrameRef.at(SID, c0 + s0, 0))


# --------------------------------------------------------------------------- file header
def _header_with(version: int = VERSION, magic: bytes | None = None, fix_crc: bool = True) -> bytes:
    from framestore._format import MAGIC

    head = struct.pack("<8sHHII", magic or MAGIC, version, 0, SID, 0)
    crc = zlib.crc32(head) if fix_crc else zlib.crc32(head) ^ 1
    return head + struct.pack("<I", crc)


@pytest.mark.parametrize(
    ("header", "error", "text"),
    [
        (_header_with(magic=b"\x89PNG\r\n\x1a\n"), CorruptRecord, "bad magic"),
        (_header_with(fix_crc=False), ChecksumMismatch, "checksum mismatch"),
        (_header_with(version=VERSION + 1), CorruptRecord, f"version {VERSION + 1} is newer"),
        (_header_with(version=0), CorruptRecord, "unknown segment format version 0"),
    ],
    ids=["bad_magic", "bad_header_crc", "newer_version", "version_0"],
)
def test_bad_file_header_is_refused(damaged, pristine, header, error, text):
    root, path = damaged
    path.write_bytes(header + pristine["bytes"][FILE_HEADER_SIZE:])
    results = read_each(root, pristine["locations"])
    for got in results:
        assert type(got) is error, got
        assert_names_place(got, 0)
        assert text in str(got)
    scan = scan_segment(path, SID, resync=False)
    assert type(scan.error) is error and scan.good_end == 0 and scan.chunk_list == []


def test_copy_of_pristine_segment_reads_back(damaged, pristine):
    """The control: the undamaged copy reads back exactly (so the tests above compare
    against a good baseline)."""
    root, path = damaged
    results = read_each(root, pristine["locations"])
    for frame, got in zip(pristine["frames"], results, strict=True):
        assert np.array_equal(got, frame)
    assert scan_segment(path, SID, decode=True, resync=False).sealed
