"""Hostile stores (issue 15, items 1 and 6): a store directory someone else prepared (a
download, a restored backup, a shared disk) must not make any command write, truncate or
delete outside the store, follow a link for writing, open a link or a FIFO planted under
a segment's name, or run for ever / allocate gigabytes on a crafted segment.

Every store here is built by the ``hostile`` fixture from a small real recording; the
"outside" is a directory next to it that no command may touch.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import zstandard
from conftest import SMALL_SEGMENTS, record_episodes, run_cli

from framestore import FrameStore
from framestore._format import (
    FILE_HEADER_SIZE,
    ChunkHeader,
    Codec,
    RecordType,
    pack_file_header,
    pack_record,
)
from framestore.disk.segments import list_segment_ids, segment_path
from tools.verify import verify

#: The checkout under test: children import it, whatever the working directory.
REPO = str(Path(__file__).resolve().parents[2])
STEPS = 8


@pytest.fixture(scope="module")
def template(tmp_path_factory, assault_frames):
    """Two 8-step Assault episodes in raw 4-frame chunks over 1 MiB segments."""
    path = tmp_path_factory.mktemp("tpl") / "t.store"
    record_episodes(path, assault_frames, episodes=2, steps=STEPS, overrides=SMALL_SEGMENTS)
    return path


@pytest.fixture
def hostile(template, tmp_path):
    """A fresh copy of the template store and an ``outside`` directory beside it."""
    path = tmp_path / "h.store"
    shutil.copytree(template, path)
    outside = tmp_path / "outside"
    outside.mkdir()
    return path, outside


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes (what no command may change)."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def one_line_failure(result) -> str:
    """The command failed and said why in one line (no traceback: ``run_cli`` checks)."""
    assert result.exit_code != 0, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("framestore: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# --------------------------------------------------------------------------- item 1
WRITERS = {
    "record": ["--env", "CartPole-v1", "--max-steps", "3"],
    "gc": [],
    "recover": [],
    "rm": ["--episode", "1"],
}


@pytest.mark.parametrize("verb", list(WRITERS))
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_linked_lock_file_is_never_written_through(hostile, verb, link):
    path, outside = hostile
    if verb == "rm":  # rm takes the lock to tell whether a 'recording' episode is live
        with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
            conn.execute("UPDATE episodes SET status = 'recording' WHERE id = 1")
    victim = outside / "precious.txt"
    victim.write_text("do not truncate me\n")
    (path / "LOCK").unlink(missing_ok=True)
    if link == "symlink":
        os.symlink(victim, path / "LOCK")
    else:
        os.link(victim, path / "LOCK")
    result = run_cli(verb, path, *WRITERS[verb])
    line = one_line_failure(result)
    assert "LOCK" in line and "lock file" in line, line
    assert result.exit_code == 5
    assert victim.read_text() == "do not truncate me\n"


def test_a_lock_file_that_is_a_fifo_is_refused_at_once(hostile):
    path, _ = hostile
    (path / "LOCK").unlink(missing_ok=True)
    os.mkfifo(path / "LOCK")
    line = one_line_failure(run_cli("gc", path))
    assert "not a regular file" in line


@pytest.mark.parametrize("verb", ["record", "gc", "recover"])
def test_a_symlinked_segment_directory_is_never_written_or_emptied(hostile, verb):
    path, outside = hostile
    target = outside / "segs"
    shutil.move(path / "segments", target)
    (target / "seg-000099.fseg.partial").write_bytes(b"someone else's file")
    os.symlink(target, path / "segments")
    before = snapshot(outside)
    result = run_cli(verb, path, *WRITERS[verb])
    line = one_line_failure(result)
    assert "segment directory is a symbolic link" in line, line
    assert snapshot(outside) == before  # nothing created, changed or deleted there
    assert run_cli("verify", path).exit_code == 1  # and verify says what is wrong


def test_a_symlinked_database_is_refused_and_never_followed(hostile):
    path, outside = hostile
    shutil.move(path / "framestore.db", outside / "framestore.db")
    os.symlink(outside / "framestore.db", path / "framestore.db")
    before = snapshot(outside)
    for verb, args in [("ls", []), ("record", WRITERS["record"]), ("verify", [])]:
        line = one_line_failure(run_cli(verb, path, *args))
        assert "database file is a symbolic link" in line, line
    assert snapshot(outside) == before  # no -wal/-shm beside the target, no new rows


class FifoOracle:
    """Tells whether anyone opened a FIFO for reading (a blocking ``open`` would hang:
    the oracle then opens the write end, which lets it return, and remembers it)."""

    def __init__(self, fifo: Path, *, after: float = 0.0):
        self.fifo = fifo
        self.after = after
        self.opened = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(0.01):
            if time.monotonic() - start < self.after:
                continue
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader waiting
                continue
            self.opened = True
            os.close(fd)

    def __enter__(self) -> FifoOracle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


READERS = [
    ("ls", []),
    ("info", []),
    ("verify", []),
    ("gc", []),
    ("recover", []),
    ("export", ["--episode", "1", "-o", "{tmp}/x.npz"]),
]


def run_gui_screenshot(path: Path, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=REPO)
    args = ["gui", str(path), "--replay", "1", "--frame", "0", "--screenshot", str(out)]
    return subprocess.run(
        [sys.executable, "-m", "tools", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_a_symlinked_segment_file_is_never_opened(hostile, tmp_path):
    path, outside = hostile
    fifo = outside / "fifo"
    os.mkfifo(fifo)
    first = segment_path(path, list_segment_ids(path)[0])
    first.unlink()
    os.symlink(fifo, first)  # a link under a segment's name, to something outside
    with FifoOracle(fifo) as oracle:
        for verb, args in READERS:
            run_cli(verb, path, *[a.format(tmp=tmp_path) for a in args])
            assert not oracle.opened, f"{verb} opened the link's target"


# --------------------------------------------------------------------------- item 6
def test_a_fifo_named_like_a_segment_hangs_nothing(hostile, tmp_path):
    path, _ = hostile
    fifo = segment_path(path, list_segment_ids(path)[0])
    fifo.unlink()
    os.mkfifo(fifo)
    # The oracle lets a command blocked on the FIFO go on after 2 s and remembers it.
    with FifoOracle(fifo, after=2.0) as oracle:
        for verb, args in READERS:
            result = run_cli(verb, path, *[a.format(tmp=tmp_path) for a in args])
            assert not oracle.opened, f"{verb} blocked on the FIFO"
            if result.exit_code not in (0, 1, 3):  # ok, problems found, recovered with loss
                one_line_failure(result)
        gui = run_gui_screenshot(path, tmp_path / "shot.png")
        assert not oracle.opened, "gui blocked on the FIFO"
        assert "Traceback" not in gui.stderr, gui.stderr


def crafted_resync_segment(path: Path, segment_id: int, size: int) -> None:
    """A segment of ``size`` bytes: after the file header, a plausible CHUNK record (a
    valid chunk head) every 48 bytes, each declaring a payload that runs to the end of
    the file and none with a valid CRC. A scan that CRC-checks every candidate does
    quadratic work (about 87,000 candidates x 4 MiB here)."""
    body = bytearray()
    head = ChunkHeader(Codec.ZSTD, 3, 210, 160, 3, 1, (0,), (210 * 160 * 3,)).pack()
    while FILE_HEADER_SIZE + len(body) < size - 64:
        pos = FILE_HEADER_SIZE + len(body)
        length = size - pos - 12  # runs to the end of the file
        body += struct.pack("<HHI", RecordType.CHUNK, 0, length) + head
    data = pack_file_header(segment_id) + bytes(body)
    path.write_bytes(data.ljust(size, b"\0"))


VERIFY_THEN_RECOVER = """
import sys, time
from tools.recover import recover
from tools.verify import verify
t0 = time.perf_counter()
ok = verify(sys.argv[1]).ok
t1 = time.perf_counter()
lost = recover(sys.argv[1]).data_lost
print(ok, lost, round(t1 - t0, 2), round(time.perf_counter() - t1, 2))
"""


def test_a_crafted_segment_cannot_make_verify_or_recover_quadratic(hostile):
    """4 MiB of overlapping plausible records: verify and recover finish in well under a
    second each (before: over a minute). Run as a process with a deadline far above what
    they need, so the test fails instead of hanging."""
    path, _ = hostile
    crafted_resync_segment(segment_path(path, 90), 90, 4 << 20)
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-c", VERIFY_THEN_RECOVER, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    ok, lost, verify_s, recover_s = proc.stdout.split()
    print(f"crafted 4 MiB segment: verify {verify_s} s, recover {recover_s} s")
    assert (ok, lost) == ("False", "True")  # reported, then cut away
    with FrameStore.open(path, readonly=True) as store:  # the real frames are untouched
        assert len(list(store.iter_frames(1))) == STEPS
    assert verify(path).ok


def zstd_bomb_store(path: Path, chunks: int) -> None:
    """A store whose one episode points at ``chunks`` valid-CRC zstd chunks, each four
    16 MiB frames compressed to a few KB (the issue's had 256 MiB chunks: the same
    attack, four times the memory per chunk)."""
    frame = (2048, 2048, 4)
    raw = np.zeros((4, *frame), np.uint8)
    data = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(raw)
    body = bytearray(pack_file_header(1))
    offsets = []
    for c in range(chunks):
        header = ChunkHeader(
            Codec.ZSTD, 3, *frame, 1, tuple(range(4 * c, 4 * c + 4)), (raw[0].nbytes,) * 4
        )
        offsets.append(len(body))
        body += pack_record(RecordType.CHUNK, header.pack(), data)
    with FrameStore.open(path) as store, store.recorder("crafted") as rec:
        rec.begin_episode()
        rec.end_episode()
    segment_path(path, 1).write_bytes(bytes(body))
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.executemany(
            "INSERT INTO steps (episode_id, step, frame_segment, frame_offset, frame_slot, "
            "frame_shape) VALUES (1, ?, 1, ?, ?, '2048x2048x4')",
            [(4 * c + s, offsets[c], s) for c in range(chunks) for s in range(4)],
        )
        conn.execute(
            "INSERT OR REPLACE INTO segments (id, path, state) "
            "VALUES (1, 'segments/seg-000001.fseg', 'sealed')"
        )


# VmHWM, not ru_maxrss: the latter carries the parent's RSS over fork and exec.
PEAK_RSS = """
import sys
from framestore import FrameStore
with FrameStore.open(sys.argv[1], readonly=True) as store:
    n = sum(1 for _ in store.iter_frames(1))
with open("/proc/self/status") as fp:
    hwm = next(int(line.split()[1]) for line in fp if line.startswith("VmHWM:"))
print(n, hwm // 1024)
"""


def test_a_crafted_segment_of_a_few_kb_cannot_drive_the_reader_to_gigabytes(tmp_path):
    path = tmp_path / "bomb.store"
    zstd_bomb_store(path, chunks=12)
    assert segment_path(path, 1).stat().st_size < 100_000
    # glibc's fixed mmap threshold: freed buffers go back to the system, so RSS is what
    # the reader holds, not what the allocator kept (as in test_reliability_soak.py)
    env = dict(os.environ, PYTHONPATH=REPO, MALLOC_MMAP_THRESHOLD_="1048576", MALLOC_ARENA_MAX="2")
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    frames, peak_mib = map(int, proc.stdout.split())
    print(f"iter_frames over 12 crafted 64 MiB chunks: peak RSS {peak_mib} MiB")
    assert frames == 48
    # twelve cached chunks took 0.9 GiB here (4.4 GiB with the 256 MiB chunks);
    # bounded: the 128 MiB cache, one chunk being decoded, the interpreter
    assert peak_mib < 600, peak_mib


def test_declared_sizes_a_chunk_cannot_hold_are_refused_before_decoding(hostile):
    path, _ = hostile
    # a raw chunk whose frame table claims other lengths than its frames have
    header = ChunkHeader(Codec.RAW, 3, 2, 2, 3, 1, (0,), (999,))
    rec = pack_record(RecordType.CHUNK, header.pack(), b"\0" * 12)
    # a png chunk whose 60-byte "png" would have to hold a 64 MiB frame
    big = ChunkHeader(Codec.PNG, 3, 4096, 4096, 4, 1, (1,), (60,))
    rec2 = pack_record(RecordType.CHUNK, big.pack(), b"\0" * 60)
    seg = segment_path(path, 91)
    seg.write_bytes(pack_file_header(91) + rec + rec2)
    from framestore.disk.reader import SegmentReader

    with SegmentReader(path) as reader:
        with pytest.raises(Exception, match="frame table lengths"):
            reader.read_chunk(91, FILE_HEADER_SIZE)
        with pytest.raises(Exception, match="cannot hold"):
            reader.read_chunk(91, FILE_HEADER_SIZE + len(rec))
    assert zlib.crc32(seg.read_bytes())  # the file is unchanged
