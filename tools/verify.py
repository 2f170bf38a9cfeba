"""``framestore verify``: check every checksum, pointer and catalogue entry of a store.

Read-only: opens the database read-only, never takes the writer lock, never follows a
path stored in SQLite (segment files are only ever named from their id) and never opens
a symlink. Each problem names the segment/offset and, where steps are affected, the
episode and steps.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import zstandard

from framestore._format import (
    FILE_HEADER_SIZE,
    MAX_RECORD_BYTES,
    RECORD_HEADER,
    RECORD_OVERHEAD,
    ChunkHeader,
    RecordType,
    Seal,
    read_file_header,
    read_record,
)
from framestore._lock import LOCK_NAME
from framestore._segments import (
    SEGMENT_DIR,
    list_partials,
    parse_segment_name,
    relative_segment_path,
)
from framestore.codecs import decode_chunk
from framestore.errors import CorruptData, CorruptRecord

from .gc import opened

__all__ = ["Problem", "VerifyReport", "verify", "SegmentScan", "scan_records", "writer_running"]

Progress = Callable[[int, int], None]  # (segments done, segments total)


# --------------------------------------------------------------------- scanning
@dataclass(frozen=True)
class GoodRecord:
    offset: int
    end: int
    type: int
    header: ChunkHeader | None  # CHUNK records only


@dataclass(frozen=True)
class BadRecord:
    offset: int  # first byte that could not be read
    end: int  # where good records resume
    error: CorruptData


@dataclass
class SegmentScan:
    """A scan of one segment file that keeps going after a bad record when what follows
    still parses (it searches for the next record whose CRC checks out)."""

    segment: int
    size: int
    header_error: CorruptData | None = None  # the file header is unreadable: nothing else
    header_id: int | None = None
    records: list[GoodRecord] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)  # corruption with good data after it
    tail: BadRecord | None = None  # unreadable from here to the end of the file
    seal: Seal | None = None

    @property
    def good_end(self) -> int:
        """End of the last good record: where a torn or corrupt tail is cut off."""
        return self.records[-1].end if self.records else FILE_HEADER_SIZE

    @cached_property
    def chunks(self) -> dict[int, ChunkHeader]:
        """Good CHUNK records by offset (computed once: pointer checks look up every step)."""
        return {r.offset: r.header for r in self.records if r.header is not None}

    @property
    def sealed(self) -> bool:
        return self.seal is not None and self.tail is None


_CANDIDATE = re.compile(rb"[\x01\x02]\x00\x00\x00", re.DOTALL)  # CHUNK/SEAL type, flags 0


def _resync(mm, start: int, size: int) -> int | None:
    """Offset of the next well-formed record after ``start`` (CRC checked), or None."""
    for m in _CANDIDATE.finditer(mm, start):
        pos = m.start()
        if pos + RECORD_OVERHEAD > size:
            return None
        rtype, _flags, length = RECORD_HEADER.unpack_from(mm, pos)
        end = pos + RECORD_OVERHEAD + length
        if length > MAX_RECORD_BYTES or end > size:
            continue
        if (rtype == RecordType.SEAL and length != 28) or (
            rtype == RecordType.CHUNK and length < 28
        ):
            continue
        (crc,) = struct.unpack_from("<I", mm, end - 4)
        if zlib.crc32(mm[pos : end - 4]) == crc:
            return pos
    return None


def scan_records(path: str | os.PathLike, segment: int, *, decode: bool = False) -> SegmentScan:
    """Check every record of one segment file (CRC always; with ``decode`` also each
    chunk's codec data). Never follows symlinks: call it on canonical paths only."""
    dz = zstandard.ZstdDecompressor() if decode else None
    with open(path, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        scan = SegmentScan(segment, size)
        try:
            scan.header_id = read_file_header(fp, segment)
        except CorruptData as e:
            scan.header_error = e
            return scan
        if size <= FILE_HEADER_SIZE:
            return scan
        mm = mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            _walk(scan, fp, mm, decode, dz)
        finally:
            mm.close()
    return scan


def _walk(scan: SegmentScan, fp, mm, decode: bool, dz) -> None:
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
                header = None
                try:
                    if rec.type == RecordType.CHUNK:
                        header = ChunkHeader.unpack(rec.payload, segment=seg, offset=offset)
                        if decode:
                            data = memoryview(rec.payload)[header.size :]
                            decode_chunk(header, data, dz, segment=seg, offset=offset)
                    elif rec.type == RecordType.SEAL:
                        scan.seal = Seal.unpack(rec.payload, segment=seg, offset=offset)
                except CorruptData as e:
                    error = e  # framing is intact: the next record starts at rec.end
                else:
                    scan.records.append(GoodRecord(offset, end, rec.type, header))
                    offset = end
                    continue
        if end is None:
            end = _resync(mm, offset + 1, size) if scan.seal is None else None
        if end is None:
            scan.tail = BadRecord(offset, size, error)
            break
        scan.bad.append(BadRecord(offset, end, error))
        offset = end
    # bad records with no good record after them are part of the unreadable tail
    while scan.bad and scan.bad[-1].offset >= scan.good_end:
        last = scan.bad.pop()
        scan.tail = BadRecord(last.offset, size, last.error)


# --------------------------------------------------------------------- writer detection
def writer_running(root: str | os.PathLike) -> bool | None:
    """Whether some process holds the store's writer lock, found without taking it
    (Linux ``/proc/locks``). None when it cannot be told."""
    try:
        st = os.stat(Path(root) / LOCK_NAME)
    except FileNotFoundError:
        return False
    try:
        with open("/proc/locks") as fp:
            text = fp.read()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        parts = line.split()
        if "FLOCK" in parts and "->" not in parts:
            dev = next((p for p in parts if p.count(":") == 2), None)
            if dev == want or (dev is not None and dev.rsplit(":", 1)[1] == str(st.st_ino)):
                return True
    return False


# --------------------------------------------------------------------- report
@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store.

    ``kind`` is one of: ``checksum``, ``corrupt``, ``torn tail``, ``unsealed``,
    ``missing segment``, ``unexpected segment``, ``obsolete leftover``, ``bad path``,
    ``partial leftover``, ``dangling pointer``, ``slot out of range``,
    ``shape mismatch``, ``key mismatch``, ``step count``, ``stale recording``.
    ``steps`` lists every affected step of ``episode`` (``step`` is the first).
    """

    kind: str
    message: str
    segment: int | None = None
    offset: int | None = None
    episode: int | None = None
    step: int | None = None
    steps: tuple[int, ...] = ()

    def __str__(self) -> str:
        where = []
        if self.segment is not None:
            where.append(f"segment {self.segment}")
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        if self.episode is not None:
            where.append(f"episode {self.episode}")
        if self.steps:
            where.append(f"steps {_ranges(self.steps)}")
        elif self.step is not None:
            where.append(f"step {self.step}")
        return f"{self.kind}: {self.message}" + (f" [{', '.join(where)}]" if where else "")


def _ranges(steps: tuple[int, ...]) -> str:
    out, start, prev = [], None, None
    for s in sorted(steps):
        if start is None:
            start = prev = s
        elif s == prev + 1:
            prev = s
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = s
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ",".join(out)


@dataclass
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    quick: bool = False
    segments_checked: int = 0
    records_checked: int = 0
    frames_checked: int = 0
    bytes_checked: int = 0
    steps_checked: int = 0
    episodes_checked: int = 0
    writer_running: bool | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


# --------------------------------------------------------------------- verify
def _kind(error: CorruptData) -> str:
    from framestore.errors import ChecksumMismatch, TruncatedRecord

    if isinstance(error, ChecksumMismatch):
        return "checksum"
    if isinstance(error, TruncatedRecord):
        return "torn tail"
    return "corrupt"


def verify(store, *, quick: bool = False, progress: Progress | None = None) -> VerifyReport:
    """Check a store without changing it.

    Args:
        store: a store directory or an open ``FrameStore``.
        quick: check checksums, pointers and sizes but do not decompress chunks.
        progress: called as ``progress(segments_done, segments_total)``.
    """
    t0 = time.perf_counter()
    report = VerifyReport(quick=quick)
    with opened(store, readonly=True) as st:
        _verify(st, report, quick, progress)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _verify(st, report: VerifyReport, quick: bool, progress: Progress | None) -> None:
    root = Path(st.root)
    add = report.problems.append
    running = report.writer_running = writer_running(root)
    conn = st.db.conn
    with st._db_lock:
        rows = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, path, state FROM segments")}

    # ---- files on disk (canonical names only; symlinks are never opened)
    seg_dir = root / SEGMENT_DIR
    files: dict[int, Path] = {}
    if seg_dir.is_symlink():
        add(Problem("bad path", f"{SEGMENT_DIR}/ is a symlink; not followed"))
    elif seg_dir.is_dir():
        for p in sorted(seg_dir.iterdir()):
            sid = parse_segment_name(p.name)
            if sid is None:
                continue
            mode = os.lstat(p).st_mode
            if not stat.S_ISREG(mode):
                add(Problem("bad path", f"{p.name} is not a regular file; not opened", sid))
                continue
            files[sid] = p
        if running is not True:  # a running gc writes partials while holding the lock
            for p in list_partials(root):
                add(Problem("partial leftover", f"{p.name}: left by an interrupted gc"))

    for sid, (path, state) in sorted(rows.items()):
        if path != relative_segment_path(sid):
            add(
                Problem("bad path", f"segments row path {path!r} is not canonical; not opened", sid)
            )
        if sid not in files and state != "obsolete":
            add(Problem("missing segment", f"{relative_segment_path(sid)} is missing", sid))
        if sid in files and state == "obsolete" and running is not True:
            add(Problem("obsolete leftover", "obsolete segment still on disk", sid))

    newest_row = max(rows, default=0)
    active = max(files, default=None) if running else None

    # ---- every record of every file
    scans: dict[int, SegmentScan] = {}
    total = len(files)
    for i, (sid, path) in enumerate(sorted(files.items())):
        scan = scans[sid] = scan_records(path, sid, decode=not quick)
        report.segments_checked += 1
        report.bytes_checked += scan.size
        report.records_checked += len(scan.records)
        report.frames_checked += sum(h.count for h in scan.chunks.values())
        in_progress = running and sid == active
        if sid not in rows and not (running and sid > newest_row):
            add(Problem("unexpected segment", "file has no row in the segments table", sid))
        if scan.header_error is not None:
            add(Problem(_kind(scan.header_error), str(scan.header_error), sid, 0))
        elif scan.header_id != sid:
            add(Problem("corrupt", f"file header names segment {scan.header_id}", sid, 0))
        for bad in scan.bad:
            add(Problem(_kind(bad.error), bad.error.detail, sid, bad.offset))
        if scan.tail is not None and not (in_progress and _kind(scan.tail.error) == "torn tail"):
            add(Problem(_kind(scan.tail.error), scan.tail.error.detail, sid, scan.tail.offset))
        if (
            scan.header_error is None
            and scan.seal is None
            and not in_progress
            and rows.get(sid, (None, None))[1] != "obsolete"
        ):
            add(Problem("unsealed", "segment has no seal record (run `framestore recover`)", sid))
        if progress is not None:
            progress(i + 1, total)

    _check_pointers(st, report, scans, files)
    _check_episodes(st, report, running)


def _batches(cur, size: int = 10_000):
    """Rows of ``cur`` a batch at a time (a store can hold millions of steps)."""
    while batch := cur.fetchmany(size):
        yield from batch


def _check_pointers(st, report: VerifyReport, scans, files) -> None:
    add = report.problems.append
    affected: dict[tuple[str, int, int, int], list[int]] = {}  # (kind, seg, off, ep) -> steps
    details: dict[tuple[str, int, int, int], str] = {}

    def hit(kind: str, seg: int, off: int, ep: int, step: int, detail: str) -> None:
        key = (kind, seg, off, ep)
        affected.setdefault(key, []).append(step)
        details.setdefault(key, detail)

    def bad_region(scan: SegmentScan, off: int):
        for b in [*scan.bad, *([scan.tail] if scan.tail else [])]:
            if b.offset <= off < b.end:
                return b
        return None

    with st._db_lock:
        cur = st.db.conn.execute(
            "SELECT s.episode_id, s.step, s.frame_segment, s.frame_offset, s.frame_slot, "
            "s.frame_shape FROM steps s LEFT JOIN episodes e ON e.id = s.episode_id "
            "WHERE s.frame_segment IS NOT NULL AND (e.status IS NULL OR e.status != 'deleted') "
            "ORDER BY s.frame_segment, s.frame_offset, s.episode_id, s.step"
        )
        for ep, step, seg, off, slot, shape in _batches(cur):
            report.steps_checked += 1
            scan = scans.get(seg)
            if scan is None:
                why = "is not a regular file" if seg in files else "does not exist"
                hit("dangling pointer", seg, -1, ep, step, f"segment {seg} {why}")
                continue
            header = scan.chunks.get(off)
            if header is None:
                bad = bad_region(scan, off) if scan.header_error is None else None
                if bad is not None:
                    hit(
                        _kind(bad.error),
                        seg,
                        bad.offset,
                        ep,
                        step,
                        f"frame unreadable: {bad.error.detail}",
                    )
                elif scan.header_error is not None:
                    hit(_kind(scan.header_error), seg, 0, ep, step, "segment header unreadable")
                else:
                    hit(
                        "dangling pointer",
                        seg,
                        off,
                        ep,
                        step,
                        "no chunk record starts at this offset",
                    )
                continue
            if slot is None or not 0 <= slot < header.count:
                hit(
                    "slot out of range",
                    seg,
                    off,
                    ep,
                    step,
                    f"slot {slot} of a {header.count}-frame chunk",
                )
                continue
            want = "x".join(str(d) for d in header.shape)
            if shape is not None and shape != want:
                hit("shape mismatch", seg, off, ep, step, f"row says {shape}, chunk holds {want}")
            if header.stream_key != ep or header.frame_keys[slot] != step:
                hit(
                    "key mismatch",
                    seg,
                    off,
                    ep,
                    step,
                    f"chunk frame is episode {header.stream_key} step {header.frame_keys[slot]}",
                )
    # a corrupt record nothing points at is still reported once (its data is gone)
    pointed = {(seg, off) for (_k, seg, off, _e) in affected}
    kept = []
    for p in report.problems:
        if p.kind in ("checksum", "corrupt", "torn tail") and (p.segment, p.offset) in pointed:
            continue  # replaced below by the same problem naming its episode and steps
        kept.append(p)
    report.problems[:] = kept
    for (kind, seg, off, ep), steps in affected.items():
        add(
            Problem(
                kind,
                details[(kind, seg, off, ep)],
                segment=seg,
                offset=None if off < 0 else off,
                episode=ep,
                step=min(steps),
                steps=tuple(steps),
            )
        )


def _check_episodes(st, report: VerifyReport, running: bool | None) -> None:
    add = report.problems.append
    with st._db_lock:
        conn = st.db.conn
        cols = {r[1] for r in conn.execute("PRAGMA table_info(episodes)")}
        has_steps = "steps" in cols
        eps = conn.execute(
            "SELECT e.id, e.status, "
            + ("e.steps, " if has_steps else "NULL, ")
            + "(SELECT COUNT(*) FROM steps s WHERE s.episode_id = e.id) FROM episodes e"
        ).fetchall()
    for eid, status, steps, n_rows in eps:
        report.episodes_checked += 1
        if status == "complete" and steps is not None and steps != n_rows:
            add(
                Problem(
                    "step count",
                    f"episode says {steps} steps but has {n_rows} rows",
                    episode=eid,
                )
            )
        if status == "recording" and running is False:
            add(
                Problem(
                    "stale recording",
                    "episode left 'recording' and no writer holds the store "
                    "(run `framestore recover`)",
                    episode=eid,
                )
            )
