"""Segment-file faults on a fake disk (pyfakefs): a disk that fills up mid-recording and
a segments directory that vanishes under the writer.

Two pyfakefs facts shape these tests:
- pyfakefs 6 fakes ``os.open``/``os.write``/``os.fsync``/``os.ftruncate`` and makes
  ``fcntl.flock`` a no-op, but it has no ``os.pread``/``os.pwrite``; the fake ``os``
  module forwards unknown names to the real one, which would then see a *fake* descriptor
  number (EBADF, or worse a real file that happens to have that number). So the service
  runs with ``lock=False`` (``StoreLock`` writes its pid with ``os.pwrite``) and frames
  are read back with the record and codec functions over an ``open()``ed file instead of
  ``SegmentReader`` (which reads with ``os.pread``).
- ``fs.set_disk_usage(total)`` makes a write that would exceed ``total`` fail with
  ENOSPC, like a full disk.
"""

from __future__ import annotations

import errno
import os
import shutil

import numpy as np
import pytest
import zstandard

from framestore._format import (
    FILE_HEADER_SIZE,
    RECORD_OVERHEAD,
    ChunkHeader,
    Codec,
    read_record,
)
from framestore.disk.codecs import decode_chunk
from framestore.disk.scan import scan_segment
from framestore.disk.segments import segment_path
from framestore.errors import DiskFull, FrameStoreError, WriterFailed
from framestore.write.service import FrameStorageService

ROOT = "/disk/runs.store"
FRAME_BYTES = 210 * 160 * 3
PER_CHUNK = 4
# A raw chunk record of 4 Assault frames: record header + CRC, chunk header, frame table,
# pixels. Raw keeps the sizes exact, so the disk can be sized to fail mid-record.
CHUNK_HEAD = ChunkHeader(Codec.RAW, 3, 210, 160, 3, 1, (0,) * PER_CHUNK, (FRAME_BYTES,) * PER_CHUNK)
CHUNK_RECORD = RECORD_OVERHEAD + len(CHUNK_HEAD.pack()) + PER_CHUNK * FRAME_BYTES


def read_back(path, scan) -> dict[int, np.ndarray]:
    """Frames of every chunk the scan listed, by frame key, read from the (fake) file."""
    out: dict[int, np.ndarray] = {}
    dz = zstandard.ZstdDecompressor()
    with open(path, "rb") as fp:
        for offset, header, _ in scan.chunk_list:
            rec = read_record(fp, offset, segment=scan.segment)
            frames = decode_chunk(header, memoryview(rec.payload)[header.data_offset :], dz)
            for key, frame in zip(header.frame_keys, frames, strict=True):
                out[key] = frame
    return out


def test_disk_full_mid_recording(fs, assault_frames):
    fs.create_dir(ROOT)
    # Room for the header, two chunk records and half of the third.
    fs.set_disk_usage(FILE_HEADER_SIZE + 2 * CHUNK_RECORD + CHUNK_RECORD // 2, path="/")
    errors: list[BaseException] = []
    svc = FrameStorageService(
        ROOT,
        codec="raw",
        chunk_frames=PER_CHUNK,
        lock=False,
        on_error=errors.append,
        max_latency=60.0,  # chunks of PER_CHUNK frames even if the test stalls (a loaded machine)
    )
    refs = []
    try:
        with pytest.raises(DiskFull) as first:
            for i, frame in enumerate(assault_frames[:40]):
                refs.append(svc.put(frame, key=(1, i)))
            svc.flush(timeout=10)
        assert isinstance(first.value, FrameStoreError) and isinstance(first.value, OSError)
        with pytest.raises(DiskFull):
            svc.put(assault_frames[0], key=(1, 99))
        with pytest.raises(DiskFull):
            svc.flush(timeout=10)
    finally:
        with pytest.raises(DiskFull):
            svc.close()

    assert len(errors) == 1 and isinstance(errors[0], DiskFull), errors
    assert errors[0].__cause__.errno == errno.ENOSPC
    path = segment_path(ROOT, 1)
    assert errors[0].path == str(path)

    # No torn record: the writer cut the file back to the end of the last good record.
    scan = scan_segment(path, 1, decode=True, resync=False)
    assert scan.error is None and scan.seal is None
    assert len(scan.chunks) == 2
    assert scan.good_end == scan.size == FILE_HEADER_SIZE + 2 * CHUNK_RECORD
    assert fs.get_disk_usage("/").used == scan.size

    # Nothing written before the failure is lost: every located ref reads back exactly,
    # and they are the first frames in order.
    stored = read_back(path, scan)
    written = [r for r in refs if r.written]
    assert len(written) == len(stored) == 2 * PER_CHUNK
    assert [r.key[1] for r in written] == list(range(2 * PER_CHUNK))
    for ref in written:
        assert ref.location[0] == 1
        assert np.array_equal(stored[ref.key[1]], assault_frames[ref.key[1]])

    # With space again, a new writer starts a new segment and leaves the old one alone.
    before = path.read_bytes()
    fs.set_disk_usage(100 * CHUNK_RECORD, path="/")
    with FrameStorageService(ROOT, codec="raw", chunk_frames=PER_CHUNK, lock=False) as svc:
        ref = svc.put(assault_frames[50], key=(2, 0))
    assert ref.location[0] == 2
    assert path.read_bytes() == before
    scan2 = scan_segment(segment_path(ROOT, 2), 2, decode=True, resync=False)
    assert scan2.sealed
    assert np.array_equal(read_back(segment_path(ROOT, 2), scan2)[0], assault_frames[50])


def test_disk_full_while_sealing_on_close(fs, assault_frames):
    """The last chunk fits but the SEAL record does not: close() reports DiskFull and the
    chunks stay readable."""
    fs.create_dir(ROOT)
    fs.set_disk_usage(FILE_HEADER_SIZE + CHUNK_RECORD + 10, path="/")
    errors: list[BaseException] = []
    svc = FrameStorageService(
        ROOT, codec="raw", chunk_frames=PER_CHUNK, lock=False, on_error=errors.append
    )
    try:
        refs = [svc.put(f, key=(0, i)) for i, f in enumerate(assault_frames[:PER_CHUNK])]
        svc.flush(timeout=10)
    finally:
        with pytest.raises(DiskFull):
            svc.close()
    assert len(errors) == 1
    scan = scan_segment(segment_path(ROOT, 1), 1, decode=True, resync=False)
    assert scan.error is None and scan.seal is None and scan.good_end == scan.size
    stored = read_back(segment_path(ROOT, 1), scan)
    for i, ref in enumerate(refs):
        assert ref.written and np.array_equal(stored[i], assault_frames[i])


def test_vanished_segments_directory_fails_the_writer_instead_of_hanging(fs, assault_frames):
    fs.create_dir(ROOT)
    errors: list[BaseException] = []
    # One chunk per segment, so every chunk after the first opens a new segment file.
    svc = FrameStorageService(
        ROOT,
        codec="raw",
        chunk_frames=PER_CHUNK,
        segment_bytes=CHUNK_RECORD + FILE_HEADER_SIZE + 100,
        block_timeout=5,
        max_latency=60.0,  # whole chunks even if the test stalls
        lock=False,
        on_error=errors.append,
    )
    try:
        for i, frame in enumerate(assault_frames[:PER_CHUNK]):
            svc.put(frame, key=(0, i))
        svc.flush(timeout=10)
        shutil.rmtree(os.path.join(ROOT, "segments"))
        assert not os.path.exists(os.path.join(ROOT, "segments"))

        with pytest.raises(WriterFailed):
            for i, frame in enumerate(assault_frames[PER_CHUNK:100], start=PER_CHUNK):
                svc.put(frame, key=(0, i))
            # A hang would surface here as QueueFull after the timeout, failing the test.
            svc.flush(timeout=10)
    finally:
        with pytest.raises(WriterFailed):
            svc.close()
    # Noticed when the full segment is sealed (its fsync finds it unlinked), or at the
    # latest when the next segment file cannot be created.
    assert len(errors) == 1 and isinstance(errors[0], WriterFailed | OSError), errors
    assert svc.metrics().error is not None


@pytest.mark.parametrize("durability", ["durable", "balanced", "fast"])
def test_vanished_segments_directory_is_reported_before_rotation(fs, assault_frames, durability):
    """With the default (large) segment size no new file is opened for a long time:
    writes keep succeeding into the unlinked file. flush() (or close(), for ``fast``,
    which does not fsync on flush) must still report the loss instead of succeeding."""
    fs.create_dir(ROOT)
    errors: list[BaseException] = []
    svc = FrameStorageService(
        ROOT,
        codec="raw",
        chunk_frames=PER_CHUNK,
        durability=durability,
        lock=False,
        on_error=errors.append,
    )
    try:
        for i, frame in enumerate(assault_frames[:PER_CHUNK]):
            svc.put(frame, key=(0, i))
        svc.flush(timeout=10)
        shutil.rmtree(os.path.join(ROOT, "segments"))

        def put_more_and_flush():
            for i, frame in enumerate(assault_frames[PER_CHUNK:12], start=PER_CHUNK):
                svc.put(frame, key=(0, i))
            svc.flush(timeout=10)

        if durability == "fast":
            put_more_and_flush()  # fast does not fsync on flush: nothing to notice yet
        else:
            with pytest.raises(WriterFailed, match="deleted"):
                put_more_and_flush()
    finally:
        with pytest.raises(WriterFailed, match="deleted"):
            svc.close()
    assert len(errors) == 1, errors
