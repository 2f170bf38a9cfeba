"""Formats version 2 and 3 keep docs/FORMAT.md's promise: a CHUNK head, a frame-table
entry and a SEAL payload can grow by appended fields, and today's reader still reads
them."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import zstandard
from conftest import record_episodes, run_cli

from framestore import CorruptData, FrameStore
from framestore._format import (
    FILE_HEADER_SIZE,
    ChunkHeader,
    Codec,
    RecordType,
    Seal,
    pack_file_header,
    pack_record,
    record_size,
)
from framestore.disk.reader import SegmentReader
from framestore.disk.scan import scan_segment
from framestore.disk.segments import is_sealed, segment_path
from framestore.write.service import FrameRef


def future_chunk(frames: list[np.ndarray], key: int, extra_head: int, extra_entry: int) -> bytes:
    """A CHUNK payload as a later version might write it: ``extra_head`` bytes appended
    to the head and ``extra_entry`` to every frame-table entry."""
    h, w, c = frames[0].shape
    head_size, entry_size = 32 + extra_head, 8 + extra_entry
    head = struct.pack(
        "<HHBBBBIIIIQ", head_size, entry_size, Codec.ZSTD, 1, 3, 0, h, w, c, len(frames), key
    )
    head += b"\xab" * extra_head
    table = b"".join(
        struct.pack("<II", i, f.nbytes) + b"\xcd" * extra_entry for i, f in enumerate(frames)
    )
    data = zstandard.ZstdCompressor().compress(b"".join(f.tobytes() for f in frames))
    return head + table + data


def test_appended_fields_are_skipped(tmp_path, assault_frames):
    frames = assault_frames[:5]
    path = segment_path(tmp_path, 1)
    path.parent.mkdir(parents=True)
    body = pack_file_header(1, version=2)  # version 2's head: 32 bytes, then appended ones
    chunk = pack_record(RecordType.CHUNK, future_chunk(frames, 7, extra_head=16, extra_entry=4))
    body += chunk
    seal_offset = len(body)
    seal_payload = Seal(1, 5, seal_offset, 1.0).pack() + b"\x00" * 24  # a longer seal
    body += pack_record(RecordType.SEAL, seal_payload)
    path.write_bytes(body)

    assert is_sealed(path)
    scan = scan_segment(path, 1, decode=True)
    assert scan.clean and scan.sealed and scan.seal.offset == seal_offset
    (header,) = scan.chunks.values()
    assert header.frame_keys == (0, 1, 2, 3, 4) and header.stream_key == 7
    with SegmentReader(tmp_path) as reader:
        for i, f in enumerate(frames):
            got = reader.read(FrameRef.at(1, FILE_HEADER_SIZE, i), expect_key=(7, i))
            assert np.array_equal(got, f)


def test_a_seal_is_found_only_where_it_ends_the_file(tmp_path, assault_frames):
    path = segment_path(tmp_path, 1)
    path.parent.mkdir(parents=True)
    header = ChunkHeader(Codec.RAW, 3, 210, 160, 3, 1, (0,), (assault_frames[0].nbytes,))
    chunk = pack_record(RecordType.CHUNK, header.pack(), assault_frames[0].tobytes())
    body = pack_file_header(1) + chunk
    seal = Seal(1, 1, len(body), 1.0)
    path.write_bytes(body + seal.record())
    assert is_sealed(path)
    path.write_bytes(body + seal.record() + b"\x00")  # a byte after the seal
    assert not is_sealed(path)
    wrong_offset = Seal(1, 1, len(body) + 1, 1.0)  # names another offset
    path.write_bytes(body + wrong_offset.record())
    assert not is_sealed(path)
    assert record_size(len(seal.pack())) == len(seal.record())


def test_v1_chunks_parse_with_the_v1_layout(assault_frames):
    header = ChunkHeader(Codec.RAW, 3, 210, 160, 3, 9, (0, 1), (100800, 100800))
    v1 = header.pack(version=1)
    v2 = header.pack(version=2)
    v3 = header.pack()
    assert (len(v1), len(v2), len(v3)) == (28 + 16, 32 + 16, 44 + 16)
    a = ChunkHeader.unpack(v1 + b"data", version=1)
    b = ChunkHeader.unpack(v2 + b"data", version=2)
    c = ChunkHeader.unpack(v3 + b"data", version=3)
    assert {(h.frame_keys, h.stream_key, h.shape) for h in (a, b, c)} == {
        (a.frame_keys, a.stream_key, a.shape)
    }
    assert (a.data_offset, b.data_offset, c.data_offset) == (len(v1), len(v2), len(v3))


def test_a_segment_of_another_store_never_passes_for_this_stores(tmp_path, assault_frames):
    """Two stores record the same steps of the same stream key: the chunk keys agree,
    only the file header's store tag (format 3) tells B's segment 1 from A's. Put under
    A's name, it is refused by readers and reported by verify, never read as A's."""
    a, b = tmp_path / "a.store", tmp_path / "b.store"
    record_episodes(a, assault_frames, episodes=1, steps=5)
    record_episodes(b, assault_frames[50:], episodes=1, steps=5)
    segment_path(a, 1).write_bytes(segment_path(b, 1).read_bytes())
    with FrameStore.open(a, readonly=True) as store:
        with pytest.raises(CorruptData, match="written by another store"):
            store.read_frames(1)
    result = run_cli("verify", a)
    assert result.exit_code == 1 and "written by another store" in result.output


def test_a_reader_that_does_not_know_note_records_skips_them(tmp_path, monkeypatch):
    """A note segment (rm's DELETED records, split over several records) read by a
    scanner that knows only types 1-5, as 0.3.0's did: every record is framed and
    checksummed like any other, so it is skipped as unknown and the segment reads as a
    clean, sealed segment without frames; today's scanner joins the split list."""
    import framestore.disk.scan as scan_module
    from framestore._format import NOTE_ITEMS_PER_RECORD, pack_notes
    from framestore.disk.segments import write_note_segment

    episodes = [{"id": i, "stream_key": i} for i in range(NOTE_ITEMS_PER_RECORD + 5)]
    fields = {"store_id": None, "deleted": 1.5, "segments": [1], "episodes": episodes}
    records = pack_notes(RecordType.DELETED, fields, "episodes")
    assert len(records) == 2
    (tmp_path / "segments").mkdir()
    write_note_segment(tmp_path, 7, records, store_tag=0)
    path = segment_path(tmp_path, 7)
    scan = scan_segment(path, 7)
    assert scan.clean and scan.sealed and not scan.chunks and scan.unknown_records == 0
    assert [scan.kind_of(r) for r in scan.meta_records] == ["deleted", "deleted"]
    assert [e for r in scan.meta_records for e in r.meta["episodes"]] == episodes
    old = frozenset((RecordType.EPISODE, RecordType.EPISODE_END, RecordType.RUN_END))
    monkeypatch.setattr(scan_module, "META_RECORDS", old)
    scan = scan_segment(path, 7)
    assert scan.clean and scan.sealed and not scan.chunks and not scan.meta_records
    assert scan.unknown_records == 2 and is_sealed(path)
