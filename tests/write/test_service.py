"""FrameStorageService -> segment files -> SegmentReader, on real Assault frames.

Every test writes real segment files under ``tmp_path`` and reads them back with a fresh
``SegmentReader``; pixels are compared bit for bit.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
import time

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from framestore._format import (
    FILE_HEADER_SIZE,
    RECORD_OVERHEAD,
    SEAL_RECORD_SIZE,
    ChunkHeader,
    Codec,
)
from framestore.disk.reader import SegmentReader
from framestore.disk.scan import scan_segment
from framestore.disk.segments import SEGMENT_DIR, SegmentWriter, list_segment_ids, segment_path
from framestore.errors import (
    DiskFull,
    FrameNotFound,
    InvalidFrame,
    InvalidInput,
    QueueFull,
    StoreLocked,
    WriterFailed,
)
from framestore.write import service as service_mod
from framestore.write._chunks import Chunk, ChunkWriter
from framestore.write.service import FrameRef, FrameStorageService

SEAL_RECORD_BYTES = SEAL_RECORD_SIZE
RAW_ASSAULT_FRAME = 210 * 160 * 3


def read_all(root, refs) -> list[np.ndarray]:
    """Read every ref with a reader opened now (nothing cached from the writer side)."""
    with SegmentReader(root) as reader:
        return [reader.read(FrameRef.at(*ref.location)) for ref in refs]


def assert_frames_equal(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == np.uint8, i
        assert g.shape == w.shape, (i, g.shape, w.shape)
        assert np.array_equal(g, w), f"frame {i} differs"


@pytest.fixture
def stalled_writer(monkeypatch):
    """Hold the writer thread before it appends any chunk until the event is set.

    Frames stay counted in the queue until their chunk is appended, so while the gate is
    closed the queue fills up exactly as it would behind a stuck disk.
    """
    gate = threading.Event()
    original = ChunkWriter._append

    def held_append(self, chunk, encoded):
        gate.wait(timeout=10)  # a failing test must not hang close()
        return original(self, chunk, encoded)

    monkeypatch.setattr(ChunkWriter, "_append", held_append)
    yield gate
    gate.set()


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("codec", ["zstd", "png", "raw"])
def test_assault_round_trip_is_bit_exact(tmp_path, assault_frames, codec):
    root = tmp_path / "store"
    with FrameStorageService(root, codec=codec, chunk_frames=64) as svc:
        refs = [svc.put(f, key=(7, i)) for i, f in enumerate(assault_frames)]
    assert all(r.written and not r.dropped for r in refs)
    # 300 frames at 64 per chunk: 5 chunks, frame i in slot i % 64.
    assert [r.location[2] for r in refs] == [i % 64 for i in range(300)]
    assert len({r.location[:2] for r in refs}) == 5
    assert_frames_equal(read_all(root, refs), assault_frames)

    with SegmentReader(root) as reader:
        chunk = reader.read_chunk(*refs[70].location[:2])
        assert chunk.header.stream_key == 7
        assert chunk.header.frame_keys == tuple(range(64, 128))
        assert chunk.header.shape == (210, 160, 3)


def test_refs_stay_valid_after_close_and_reopen(tmp_path, assault_frames):
    root = tmp_path / "store"
    with FrameStorageService(root, chunk_frames=16) as svc:
        first = [svc.put(f, key=(1, i)) for i, f in enumerate(assault_frames[:100])]
    locations = [r.location for r in first]

    # A second session on the same store starts a new segment; old locations still hold.
    with FrameStorageService(root, chunk_frames=16) as svc:
        second = [svc.put(f, key=(2, i)) for i, f in enumerate(assault_frames[100:200])]
    assert {loc[0] for loc in locations} == {1}
    assert {r.location[0] for r in second} == {2}

    with SegmentReader(root) as reader:
        got = [reader.read(FrameRef.at(*loc)) for loc in locations]
        got += [reader.read(r.location) for r in second]
    assert_frames_equal(got, assault_frames[:200])
    for sid in (1, 2):
        scan = scan_segment(segment_path(root, sid), sid, decode=True)
        assert scan.sealed and scan.error is None
        assert scan.seal.frames == 100


SHAPE_LAYOUTS = {"hw": (), "hw1": (1,), "hw3": (3,), "hw4": (4,)}


@st.composite
def frame_runs(draw):
    """1..8 frames; the shape and the episode change at random points."""
    frames, keys = [], []
    shape = None
    episode = draw(st.integers(0, 3))
    for step in range(draw(st.integers(1, 8))):
        if shape is None or draw(st.booleans()):
            h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
            shape = (h, w) + SHAPE_LAYOUTS[draw(st.sampled_from(sorted(SHAPE_LAYOUTS)))]
        if draw(st.integers(0, 4)) == 0:
            episode = draw(st.integers(0, 2**64 - 1))
        frames.append(draw(hnp.arrays(np.uint8, shape)))
        keys.append((episode, step))
    return frames, keys


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    run=frame_runs(),
    codec=st.sampled_from(["zstd", "png", "raw"]),
    chunk_frames=st.integers(1, 4),
)
def test_random_shapes_and_pixels_round_trip(run, codec, chunk_frames):
    frames, keys = run
    with tempfile.TemporaryDirectory() as root:
        with FrameStorageService(root, codec=codec, chunk_frames=chunk_frames) as svc:
            refs = [svc.put(f, key=k) for f, k in zip(frames, keys, strict=True)]
        assert_frames_equal(read_all(root, refs), frames)

        with SegmentReader(root) as reader:
            for ref, frame, key in zip(refs, frames, keys, strict=True):
                header = reader.read_chunk(*ref.location[:2]).header
                assert header.shape == frame.shape
                assert header.stream_key == key[0]
                assert header.frame_keys[ref.location[2]] == key[1]
                assert header.count <= chunk_frames
    # A new shape or a new episode always starts a new chunk.
    for i in range(len(refs) - 1):
        if frames[i].shape != frames[i + 1].shape or keys[i][0] != keys[i + 1][0]:
            assert refs[i].location[:2] != refs[i + 1].location[:2]


# --------------------------------------------------------------------------- bad input
BAD_FRAMES = {
    "float": np.zeros((4, 4, 3), dtype=np.float32),
    "int16": np.zeros((4, 4, 3), dtype=np.int16),
    "bool": np.zeros((4, 4), dtype=bool),
    "ndim1": np.zeros(12, dtype=np.uint8),
    "ndim4": np.zeros((2, 4, 4, 3), dtype=np.uint8),
    "empty": np.zeros((0, 160, 3), dtype=np.uint8),
    "object": np.array([[1, 2], [3, 4]], dtype=object),
    "two_channels": np.zeros((4, 4, 2), dtype=np.uint8),
    "five_channels": np.zeros((4, 4, 5), dtype=np.uint8),
    "list": [[0, 1], [2, 3]],
    "none": None,
}


@pytest.mark.parametrize("policy", ["block", "drop"])
def test_bad_frames_are_refused_before_queueing(tmp_path, assault_frames, policy):
    with FrameStorageService(tmp_path / "store", policy=policy) as svc:
        good = svc.put(assault_frames[0])
        for name, bad in BAD_FRAMES.items():
            with pytest.raises(InvalidFrame):
                svc.put(bad)
            m = svc.metrics()
            assert (m.frames_in, m.frames_dropped, m.queue_frames + m.frames_written) == (
                1,
                0,
                1,
            ), name
        for key in [(1,), (-1, 0), (0, 2**32), (2**64, 0), "ab", None]:
            with pytest.raises(InvalidInput):
                svc.put(assault_frames[0], key=key)
        assert svc.metrics().frames_in == 1
    assert_frames_equal(read_all(tmp_path / "store", [good]), assault_frames[:1])


def test_bad_frames_are_refused_even_when_the_drop_queue_is_full(
    tmp_path, assault_frames, stalled_writer
):
    """Bad input is a programming error; it must not be hidden as a 'dropped' frame
    when the queue happens to be full."""
    with FrameStorageService(tmp_path / "store", policy="drop", queue_frames=1) as svc:
        svc.put(assault_frames[0])
        assert svc.put(assault_frames[1]).dropped
        for bad in (BAD_FRAMES["float"], BAD_FRAMES["list"], BAD_FRAMES["empty"]):
            with pytest.raises(InvalidFrame):
                svc.put(bad)
        assert svc.metrics().frames_dropped == 1
        stalled_writer.set()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"codec": "lz4"},
        {"codec": None},
        {"codec": "zstd", "level": 23},
        {"codec": "zstd", "level": -8},
        {"codec": "zstd", "level": "3"},
        {"codec": "zstd", "level": 3.0},
        {"policy": "wait"},
        {"durability": "paranoid"},
        {"chunk_frames": 0},
        {"chunk_frames": 65536},
        {"queue_frames": 0},
        {"queue_bytes": -1},
        {"segment_bytes": 1.5},
    ],
    ids=repr,
)
def test_bad_service_options_are_refused_and_leave_the_store_usable(tmp_path, kwargs):
    root = tmp_path / "store"
    with pytest.raises(InvalidInput):
        FrameStorageService(root, **kwargs)
    # Nothing was started or locked by the failed constructor.
    with FrameStorageService(root) as svc:
        assert svc.metrics().frames_in == 0


def test_frame_larger_than_the_queue_bound_is_refused(tmp_path, assault_frames):
    with FrameStorageService(tmp_path / "store", queue_bytes=RAW_ASSAULT_FRAME - 1) as svc:
        with pytest.raises(InvalidInput, match="queue_bytes"):
            svc.put(assault_frames[0])
        assert svc.metrics().frames_in == 0


def test_non_contiguous_arrays_are_stored_exactly(tmp_path, assault_frames):
    f = assault_frames[5]
    views = [
        f[::2, ::3],  # strided slice
        f[10:100, 20:140, 1],  # HxW channel view
        f.transpose(1, 0, 2),  # 160x210x3, F-like strides
        f[:, :, ::-1],  # negative stride (RGB -> BGR)
        np.asfortranarray(f),
        f[:, :, :1],  # HxWx1 view
        np.broadcast_to(f[0:1], (50, 160, 3)),  # zero stride
    ]
    assert not any(v.flags.c_contiguous for v in views)
    root = tmp_path / "store"
    with FrameStorageService(root, codec="png") as svc:
        refs = [svc.put(v) for v in views]
    assert_frames_equal(read_all(root, refs), [np.ascontiguousarray(v) for v in views])


def test_mutating_the_array_after_put_does_not_change_what_is_stored(tmp_path, assault_frames):
    root = tmp_path / "store"
    originals = [f.copy() for f in assault_frames[:40]]
    buf = np.empty_like(originals[0])
    with FrameStorageService(root, chunk_frames=40, max_latency=5.0) as svc:
        refs = []
        for f in originals:
            buf[...] = f
            refs.append(svc.put(buf))  # the producer reuses one buffer, like a renderer
        buf[...] = 0
    assert_frames_equal(read_all(root, refs), originals)


# --------------------------------------------------------------------------- segments
def test_small_segment_bytes_rotates_into_several_sealed_segments(tmp_path, assault_frames):
    root = tmp_path / "store"
    segment_bytes = 60_000
    with FrameStorageService(root, codec="png", chunk_frames=4, segment_bytes=segment_bytes) as svc:
        refs = [svc.put(f, key=(3, i)) for i, f in enumerate(assault_frames[:120])]
    m = svc.metrics()
    ids = list_segment_ids(root)
    assert len(ids) >= 4, ids
    assert ids == list(range(1, len(ids) + 1))
    assert m.segments_sealed == len(ids)
    assert {r.location[0] for r in refs} == set(ids)
    assert sorted(os.listdir(root / SEGMENT_DIR)) == [segment_path(root, i).name for i in ids]

    frames_seen = 0
    for sid in ids:
        scan = scan_segment(segment_path(root, sid), sid, decode=True)
        assert scan.error is None and scan.sealed, scan.error
        assert scan.good_end == scan.size
        assert scan.seal.chunks == len(scan.chunks)
        assert scan.seal.frames == sum(h.count for _, h, _ in scan.chunk_list)
        frames_seen += scan.seal.frames
        if len(scan.chunks) > 1:  # a lone oversized chunk may exceed the target
            assert scan.size <= segment_bytes + SEAL_RECORD_BYTES
    assert frames_seen == 120
    assert_frames_equal(read_all(root, refs), assault_frames[:120])


def test_flush_makes_everything_visible_to_a_new_reader(tmp_path, assault_frames):
    root = tmp_path / "store"
    with FrameStorageService(root, chunk_frames=64, max_latency=60.0) as svc:
        refs = [svc.put(f) for f in assault_frames[:100]]
        svc.flush(timeout=10)
        # Still open and unsealed: the reader sees the frames because of flush alone.
        assert all(r.written for r in refs)
        assert svc.metrics().frames_written == 100
        assert_frames_equal(read_all(root, refs), assault_frames[:100])
        scan = scan_segment(segment_path(root, 1), 1)
        assert scan.error is None and scan.seal is None
        assert sum(h.count for _, h, _ in scan.chunk_list) == 100


# --------------------------------------------------------------------------- queue policies
def test_drop_policy_drops_under_a_stalled_writer_and_respects_bounds(
    tmp_path, assault_frames, stalled_writer
):
    root = tmp_path / "store"
    queue_bytes = 3 * RAW_ASSAULT_FRAME + 100
    with FrameStorageService(
        root, policy="drop", queue_frames=1000, queue_bytes=queue_bytes, chunk_frames=2
    ) as svc:
        refs = [svc.put(f, key=(0, i)) for i, f in enumerate(assault_frames[:20])]
        m = svc.metrics()
        assert [r.dropped for r in refs] == [False] * 3 + [True] * 17
        assert (m.frames_in, m.frames_dropped, m.frames_written) == (3, 17, 0)
        assert m.high_water_bytes <= queue_bytes and m.queue_bytes <= queue_bytes
        assert m.high_water_frames == 3
        stalled_writer.set()
        svc.flush(timeout=10)
        # Room again: frames are accepted once the writer caught up.
        late = svc.put(assault_frames[20], key=(0, 20))
        assert not late.dropped
    m = svc.metrics()
    assert (m.frames_in, m.frames_dropped, m.frames_written) == (4, 17, 4)
    assert m.high_water_bytes <= queue_bytes
    kept = [r for r in refs if not r.dropped] + [late]
    assert_frames_equal(read_all(root, kept), [*assault_frames[:3], assault_frames[20]])
    with SegmentReader(root) as reader:
        for r in refs[3:]:
            assert r.location is None and not r.written
            with pytest.raises(FrameNotFound):
                reader.read(r)


def test_drop_policy_respects_the_frame_count_bound(tmp_path, assault_frames, stalled_writer):
    with FrameStorageService(tmp_path / "store", policy="drop", queue_frames=4) as svc:
        refs = [svc.put(f) for f in assault_frames[:10]]
        m = svc.metrics()
        assert sum(r.dropped for r in refs) == 6 == m.frames_dropped
        assert m.high_water_frames == 4 == m.bound_frames
        stalled_writer.set()


def test_drop_policy_with_a_slow_compressor(tmp_path):
    """No monkeypatching: zstd level 22 on big noisy frames is slower than the producer."""
    rng = np.random.default_rng(0)
    noisy = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(4)]
    frame_bytes = noisy[0].nbytes
    queue_bytes = 2 * frame_bytes
    with FrameStorageService(
        tmp_path / "store",
        level=22,
        policy="drop",
        queue_bytes=queue_bytes,
        chunk_frames=1,
        compress_threads=1,
    ) as svc:
        refs = [svc.put(noisy[i % 4]) for i in range(40)]
        m = svc.metrics()
    assert any(r.dropped for r in refs)
    assert m.frames_dropped == sum(r.dropped for r in refs)
    assert m.frames_in + m.frames_dropped == 40
    assert m.high_water_bytes <= queue_bytes
    kept = [(r, noisy[i % 4]) for i, r in enumerate(refs) if not r.dropped]
    assert_frames_equal(read_all(svc.root, [r for r, _ in kept]), [f for _, f in kept])


def test_block_policy_raises_queue_full_after_the_timeout(tmp_path, assault_frames, stalled_writer):
    with FrameStorageService(
        tmp_path / "store", policy="block", queue_frames=2, block_timeout=0.2
    ) as svc:
        svc.put(assault_frames[0])
        svc.put(assault_frames[1])
        assert svc.metrics().blocked_waits == 0  # room for both: no call waited
        t0 = time.monotonic()
        with pytest.raises(QueueFull) as info:
            svc.put(assault_frames[2])
        assert time.monotonic() - t0 >= 0.19
        assert isinstance(info.value, TimeoutError)
        m = svc.metrics()
        assert m.frames_in == 2 and m.frames_dropped == 0
        assert m.blocked_seconds >= 0.19
        assert m.blocked_waits == 1 == svc.budget.waits
        stalled_writer.set()
        svc.flush(timeout=10)
        svc.put(assault_frames[2])  # room again: no wait counted
    assert svc.metrics().frames_written == 3
    assert svc.metrics().blocked_waits == 1


# --------------------------------------------------------------------------- lock
def test_second_writer_on_the_same_store_is_locked_out(tmp_path, assault_frames):
    root = tmp_path / "store"
    first = FrameStorageService(root)
    try:
        with pytest.raises(StoreLocked) as info:
            FrameStorageService(root)
        assert f"pid {os.getpid()}" in str(info.value)
        ref = first.put(assault_frames[0])
    finally:
        first.close()
    with FrameStorageService(root) as again:
        ref2 = again.put(assault_frames[1])
    assert_frames_equal(read_all(root, [ref, ref2]), assault_frames[:2])


# --------------------------------------------------------------------------- writer errors
class _FillingDisk:
    """Wraps a raw segment file: accepts ``room`` more bytes (the last write short), then
    fails with ENOSPC, like a filling disk."""

    def __init__(self, fp, room: int):
        self._fp = fp
        self.room = room

    def write(self, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(data), self.room)
        written = self._fp.write(bytes(data[:n]))
        self.room -= written
        return written

    def __getattr__(self, name):
        return getattr(self._fp, name)


def test_disk_full_in_the_writer_reaches_the_producer(tmp_path, assault_frames, monkeypatch):
    root = tmp_path / "store"
    head = ChunkHeader(Codec.RAW, 3, 210, 160, 3, 1, (0,) * 4, (RAW_ASSAULT_FRAME,) * 4)
    record = RECORD_OVERHEAD + len(head.pack()) + 4 * RAW_ASSAULT_FRAME
    original_append = SegmentWriter.append

    def append_on_filling_disk(self, data, *, frames=0):
        if not isinstance(self._fp, _FillingDisk):
            # Room for two and a half chunks: the third is torn mid-write.
            self._fp = _FillingDisk(self._fp, 2 * record + record // 2)
        return original_append(self, data, frames=frames)

    monkeypatch.setattr(SegmentWriter, "append", append_on_filling_disk)
    errors: list[BaseException] = []
    # max_latency: chunks of 4 frames even if the test stalls (a loaded machine)
    svc = FrameStorageService(
        root, codec="raw", chunk_frames=4, on_error=errors.append, max_latency=60.0
    )
    refs = []
    try:
        with pytest.raises(DiskFull) as put_or_flush:
            for i, f in enumerate(assault_frames[:40]):
                refs.append(svc.put(f, key=(0, i)))
            svc.flush(timeout=10)
        assert isinstance(put_or_flush.value, OSError)  # DiskFull is also an OSError
        with pytest.raises(DiskFull):
            svc.put(assault_frames[0])
        with pytest.raises(DiskFull):
            svc.flush(timeout=10)
    finally:
        with pytest.raises(DiskFull):
            svc.close()
    assert len(errors) == 1 and isinstance(errors[0], DiskFull), errors
    assert svc.metrics().error is not None

    # The torn third chunk was cut off: the file ends at the last complete record.
    scan = scan_segment(segment_path(root, 1), 1, decode=True)
    assert scan.error is None and scan.seal is None
    assert len(scan.chunks) == 2
    assert scan.good_end == scan.size == FILE_HEADER_SIZE + 2 * record
    written = [r for r in refs if r.written]
    assert len(written) == 8
    assert_frames_equal(read_all(root, written), assault_frames[:8])

    # The lock was released: the store takes a new writer.
    monkeypatch.undo()
    with FrameStorageService(root) as again:
        again.put(assault_frames[0])


def test_other_writer_errors_reach_the_producer_as_writer_failed(
    tmp_path, assault_frames, monkeypatch
):
    def broken_append(self, data, *, frames=0):
        raise service_mod.WriterFailed(f"{self.path}: write failed: [Errno 5] I/O error")

    monkeypatch.setattr(SegmentWriter, "append", broken_append)
    errors: list[BaseException] = []
    svc = FrameStorageService(tmp_path / "store", on_error=errors.append)
    try:
        svc.put(assault_frames[0])
        with pytest.raises(WriterFailed, match="I/O error") as info:
            svc.flush(timeout=10)
        assert not isinstance(info.value, DiskFull)
    finally:
        with pytest.raises(WriterFailed):
            svc.close()
    assert len(errors) == 1


# --------------------------------------------------------------------------- concurrency
def test_reading_while_writing(tmp_path, assault_frames):
    root = tmp_path / "store"
    refs: list[FrameRef] = []
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader_loop():
        try:
            with SegmentReader(root, cache_chunks=1) as reader:
                while not stop.is_set():
                    for i, ref in enumerate(list(refs)):
                        if ref.location is None:
                            continue
                        if not np.array_equal(reader.read(ref), assault_frames[i]):
                            problems.append(f"frame {i} differs")
                        reads[0] += 1
        except Exception as e:  # noqa: BLE001 - reported by the test thread
            problems.append(repr(e))

    reader = threading.Thread(target=reader_loop, name="test-reader")
    reader.start()
    try:
        with FrameStorageService(
            root, chunk_frames=8, segment_bytes=40_000, max_latency=0.01
        ) as svc:
            for i, f in enumerate(assault_frames):
                refs.append(svc.put(f, key=(0, i)))
                time.sleep(0.001)
            reads_while_writing = reads[0]
    finally:
        stop.set()
        reader.join(timeout=30)
    assert not reader.is_alive()
    assert problems == []
    assert reads_while_writing > 0
    assert len(list_segment_ids(root)) > 1  # rotation happened under the reader too
    assert_frames_equal(read_all(root, refs), assault_frames)


# --------------------------------------------------------------------------- size
def test_segments_are_close_to_plain_zstd_in_size(tmp_path, assault_frames, record_property):
    root = tmp_path / "store"
    with FrameStorageService(root, codec="zstd", level=3, chunk_frames=64) as svc:
        for i, f in enumerate(assault_frames):
            svc.put(f, key=(0, i))
    stored = sum(segment_path(root, sid).stat().st_size for sid in list_segment_ids(root))

    cctx = zstandard.ZstdCompressor(level=3)
    plain = sum(
        len(cctx.compress(b"".join(f.tobytes() for f in assault_frames[i : i + 64])))
        for i in range(0, len(assault_frames), 64)
    )
    ratio = stored / plain
    record_property("segments_vs_plain_zstd", round(ratio, 3))  # in the JUnit XML, not on stdout
    assert ratio <= 1.3, f"segments {stored} B / plain zstd-3 x64 {plain} B = {ratio:.3f}"
    # And the service's own byte counters agree with the files.
    assert svc.metrics().bytes_in == 300 * RAW_ASSAULT_FRAME


def test_chunks_handed_off_whole_are_compressed_where_they_lie_and_reported(tmp_path):
    """The storage process's mode: a chunk assembled elsewhere (in a ring slot) is
    handed off whole, compressed from its buffer, and ``on_written`` names it (its slot
    may then be reused); frames put one by one come back chunk by chunk too."""
    frames = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(10)])
    written: list[Chunk] = []
    with FrameStorageService(tmp_path / "s", chunk_frames=4, on_written=written.append) as svc:
        refs = [FrameRef(None, (1, i), (8, 8, 3)) for i in range(6)]
        svc.hand_off(Chunk(1, 0, frames[:6], list(refs), [], buffer=7))
        refs += [svc.put(f, key=(1, i)) for i, f in enumerate(frames[6:], start=6)]
        svc.flush()
        assert svc.metrics().writer_wakeups == 2  # one per chunk, none per frame
    assert [r.key[1] for chunk in written for r in chunk.refs] == list(range(10))
    assert [len(c.refs) for c in written] == [6, 4]
    assert written[0].buffer == 7
    with SegmentReader(tmp_path / "s") as reader:
        assert all(
            np.array_equal(reader.read(r.location), f) for r, f in zip(refs, frames, strict=True)
        )
