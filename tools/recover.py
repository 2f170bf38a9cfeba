"""``framestore recover``: repair a store after a crash, a power loss or a bad disk.

Runs with the writer lock held. In order:

1. removes ``.partial`` files and ``obsolete`` segments left by an interrupted ``gc``;
2. cuts every segment's unreadable tail (a torn record, or garbage after a bad record
   that nothing parseable follows) at the end of its last good record, and seals it
   (truncate in place, append a SEAL record, fsync). Corruption *inside* a segment with
   good records after it is not cut: those records are kept, and the segment is rewritten
   without the bad bytes (step 6);
3. step rows whose frame pointer no longer resolves (missing segment, no good chunk at
   the offset, slot out of range, chunk of another step or shape) lose their pointer:
   the row, with its action, reward and flags, is kept and reads as a step without a
   frame. This is data loss and is reported per episode;
4. frames the segments hold but the database has no row for (chunk stream key =
   episode id, frame key = step) get a row back: frame pointer set, action and reward
   NULL, info ``{"recovered": true}``. A missing episode row is created (status
   ``interrupted``) under a run with env_id ``unknown (recovered)``. Episodes whose
   status is ``deleted`` are never brought back;
5. episodes left ``recording`` become ``interrupted`` with ``steps`` and
   ``total_reward`` recomputed from their rows;
6. segments with corruption in the middle are compacted like ``gc`` does, and sealed
   segments that only duplicate frames other segments already serve (an interrupted
   ``gc``'s copies) are deleted; finally the catalogue is synced.

Running it again changes nothing and reports nothing lost.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from framestore._catalog import sync_segments
from framestore._format import FILE_HEADER_SIZE, RECORD_OVERHEAD, RecordType, Seal, pack_record
from framestore._lock import StoreLock
from framestore._segments import SEGMENT_DIR, fsync_dir, parse_segment_name, segment_path

from .gc import GcReport, _Victim, compact, opened, remove_obsolete, remove_partials
from .verify import GoodRecord, SegmentScan, scan_records

__all__ = ["RecoverReport", "recover", "RECOVERED_ENV_ID"]

RECOVERED_ENV_ID = "unknown (recovered)"
RECOVERED_INFO = json.dumps({"recovered": True})
_MAX_SQLITE_INT = (1 << 63) - 1
_SEAL_BYTES = RECORD_OVERHEAD + 28


@dataclass
class RecoverReport:
    """What ``recover`` repaired, and what was lost.

    ``frames_lost`` maps episode id -> number of steps whose frame could not be read
    (their pointer was cleared); ``steps_recovered`` maps episode id -> step rows rebuilt
    from segments. ``bytes_discarded`` counts unreadable segment bytes removed.
    """

    segments_truncated: list[dict] = field(default_factory=list)
    segments_sealed: list[int] = field(default_factory=list)
    segments_corrupt: list[dict] = field(default_factory=list)
    segments_rewritten: list[int] = field(default_factory=list)
    segments_removed: list[int] = field(default_factory=list)
    partials_removed: list[str] = field(default_factory=list)
    frames_lost: dict[int, int] = field(default_factory=dict)
    steps_recovered: dict[int, int] = field(default_factory=dict)
    episodes_created: list[int] = field(default_factory=list)
    episodes_interrupted: list[int] = field(default_factory=list)
    bytes_discarded: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def data_lost(self) -> bool:
        return bool(self.frames_lost) or self.bytes_discarded > 0

    @property
    def changed(self) -> bool:
        return any(
            (
                self.segments_truncated,
                self.segments_sealed,
                self.segments_rewritten,
                self.segments_removed,
                self.partials_removed,
                self.frames_lost,
                self.steps_recovered,
                self.episodes_created,
                self.episodes_interrupted,
            )
        )

    def as_dict(self) -> dict:
        d = asdict(self)
        d["data_lost"] = self.data_lost
        d["changed"] = self.changed
        return d


def seal_segment(path: str | os.PathLike, good_end: int, chunks: int, frames: int) -> Seal:
    """Cut an existing segment file at ``good_end`` and append a SEAL record, fsynced.

    ``SegmentWriter`` only creates new files; this is the one place an existing segment
    is changed, and only to drop bytes that cannot be read and to seal it.
    """
    seal = Seal.now(chunks, frames, good_end)
    with open(path, "r+b", buffering=0) as fp:
        fp.truncate(good_end)
        fp.seek(good_end)
        fp.write(pack_record(RecordType.SEAL, seal.pack()))
        os.fsync(fp.fileno())
    return seal


def recover(store, *, progress=None) -> RecoverReport:
    """Repair the store at ``store`` (a path or an open, writable ``FrameStore``).

    Raises:
        StoreLocked: a recorder holds the store.
    """
    t0 = time.perf_counter()
    report = RecoverReport()
    with opened(store, readonly=False) as st:
        lock = StoreLock(st.root).acquire()
        try:
            _recover(st, report, progress)
        finally:
            lock.release()
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _recover(st, report: RecoverReport, progress) -> None:
    root = Path(st.root)
    report.partials_removed = remove_partials(root)
    report.segments_removed += remove_obsolete(st)
    scans = _repair_segments(st, report, progress)
    chunks = {
        (sid, off): header for sid, scan in scans.items() for off, header in scan.chunks.items()
    }
    db = st.db
    with st._db_lock, db.atomic():
        conn = db.conn
        statuses = dict(conn.execute("SELECT id, status FROM episodes"))
        _clear_dangling(conn, chunks, statuses, report)
        _reinsert(conn, scans, statuses, report)
        _close_recordings(conn, report)
    _remove_duplicates(st, scans, report)
    _rewrite_corrupt(st, scans, report)
    sync_segments(st)
    st.reader.forget()


def _repair_segments(st, report: RecoverReport, progress) -> dict[int, SegmentScan]:
    root = Path(st.root)
    seg_dir = root / SEGMENT_DIR
    scans: dict[int, SegmentScan] = {}
    if seg_dir.is_symlink() or not seg_dir.is_dir():
        if seg_dir.is_symlink():
            report.notes.append(f"{SEGMENT_DIR}/ is a symlink; left alone")
        return scans
    paths = sorted(
        (sid, p) for p in seg_dir.iterdir() if (sid := parse_segment_name(p.name)) is not None
    )
    for i, (sid, path) in enumerate(paths):
        if progress is not None:
            progress(i, len(paths))
        if path.is_symlink() or not path.is_file():
            report.notes.append(f"segment {sid}: not a regular file; left alone")
            continue
        scan = scan_records(path, sid)
        if scan.header_error is not None:
            if scan.size < FILE_HEADER_SIZE:
                # a writer died creating it: it cannot hold a frame
                path.unlink()
                fsync_dir(seg_dir)
                report.segments_removed.append(sid)
                report.bytes_discarded += scan.size
            else:
                report.notes.append(f"segment {sid}: unreadable header ({scan.header_error})")
            continue
        for bad in scan.bad:
            report.segments_corrupt.append(
                {"segment": sid, "offset": bad.offset, "end": bad.end, "error": str(bad.error)}
            )
            report.bytes_discarded += bad.end - bad.offset
        if scan.tail is not None or scan.seal is None:
            good_end = scan.good_end
            removed = scan.size - good_end
            if scan.seal is None:
                n_chunks = len(scan.chunks)
                n_frames = sum(h.count for h in scan.chunks.values())
                scan.seal = seal_segment(path, good_end, n_chunks, n_frames)
                report.segments_sealed.append(sid)
                scan.records.append(
                    GoodRecord(good_end, good_end + _SEAL_BYTES, RecordType.SEAL, None)
                )
            else:  # sealed, with bytes after the seal: cut them
                with open(path, "r+b") as fp:
                    fp.truncate(good_end)
                    os.fsync(fp.fileno())
            if removed:
                report.segments_truncated.append(
                    {
                        "segment": sid,
                        "offset": good_end,
                        "bytes_removed": removed,
                        "error": str(scan.tail.error) if scan.tail else "",
                    }
                )
                report.bytes_discarded += removed
            scan.tail = None
            scan.size = os.stat(path).st_size
        scans[sid] = scan
    if progress is not None:
        progress(len(paths), len(paths))
    return scans


def _resolves(chunks, ep: int, step: int, seg, off, slot, shape) -> bool:
    header = chunks.get((seg, off))
    if header is None or slot is None or not 0 <= slot < header.count:
        return False
    if header.stream_key != ep or header.frame_keys[slot] != step:
        return False
    return shape is None or shape == "x".join(str(d) for d in header.shape)


def _clear_dangling(conn, chunks, statuses, report: RecoverReport) -> None:
    lost = []
    for ep, step, seg, off, slot, shape in conn.execute(
        "SELECT episode_id, step, frame_segment, frame_offset, frame_slot, frame_shape "
        "FROM steps WHERE frame_segment IS NOT NULL"
    ).fetchall():
        if not _resolves(chunks, ep, step, seg, off, slot, shape):
            lost.append((ep, step))
    conn.executemany(
        "UPDATE steps SET frame_segment = NULL, frame_offset = NULL, frame_slot = NULL "
        "WHERE episode_id = ? AND step = ?",
        lost,
    )
    counts: dict[int, int] = defaultdict(int)
    for ep, _step in lost:
        if statuses.get(ep) != "deleted":
            counts[ep] += 1
    report.frames_lost = dict(sorted(counts.items()))


def _reinsert(conn, scans: dict[int, SegmentScan], statuses, report: RecoverReport) -> None:
    have: dict[int, set[int]] = defaultdict(set)
    for ep, step in conn.execute("SELECT episode_id, step FROM steps"):
        have[ep].add(step)
    run_id = None
    recovered: dict[int, int] = defaultdict(int)
    skipped = 0
    for sid in sorted(scans):
        for off, header in sorted(scans[sid].chunks.items()):
            ep = header.stream_key
            status = statuses.get(ep)
            if status == "deleted":
                continue
            missing = [(slot, k) for slot, k in enumerate(header.frame_keys) if k not in have[ep]]
            if not missing:
                continue
            if status is None:
                if not 1 <= ep <= _MAX_SQLITE_INT:
                    skipped += len(missing)
                    continue
                if run_id is None:
                    run_id = _recovered_run(conn)
                conn.execute(
                    "INSERT INTO episodes (id, run_id, idx, status) VALUES (?, ?, ?, 'interrupted')",
                    (ep, run_id, ep),
                )
                statuses[ep] = "interrupted"
                report.episodes_created.append(ep)
            shape = "x".join(str(d) for d in header.shape)
            conn.executemany(
                "INSERT INTO steps (episode_id, step, info, frame_segment, frame_offset, "
                "frame_slot, frame_shape) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(ep, k, RECOVERED_INFO, sid, off, slot, shape) for slot, k in missing],
            )
            have[ep].update(k for _slot, k in missing)
            recovered[ep] += len(missing)
    if skipped:
        report.notes.append(f"{skipped} frames with a stream key that is not an episode id")
    report.steps_recovered = dict(sorted(recovered.items()))
    _recount(conn, report.episodes_created)


def _recovered_run(conn) -> int:
    cur = conn.execute(
        "INSERT INTO runs (env_id, created, config, stats) VALUES (?, ?, '{}', '{}')",
        (RECOVERED_ENV_ID, time.time()),
    )
    return cur.lastrowid


def _recount(conn, episode_ids) -> None:
    conn.executemany(
        "UPDATE episodes SET "
        "steps = (SELECT COUNT(*) FROM steps s WHERE s.episode_id = episodes.id), "
        "total_reward = (SELECT COALESCE(SUM(reward), 0) FROM steps s "
        "                WHERE s.episode_id = episodes.id), "
        "ended = COALESCE(ended, (SELECT MAX(wall_time) FROM steps s "
        "                         WHERE s.episode_id = episodes.id), started) "
        "WHERE id = ?",
        [(i,) for i in episode_ids],
    )


def _close_recordings(conn, report: RecoverReport) -> None:
    ids = [r[0] for r in conn.execute("SELECT id FROM episodes WHERE status = 'recording'")]
    _recount(conn, ids)
    conn.executemany("UPDATE episodes SET status = 'interrupted' WHERE id = ?", [(i,) for i in ids])
    report.episodes_interrupted = ids


def _remove_duplicates(st, scans: dict[int, SegmentScan], report: RecoverReport) -> None:
    """Delete sealed segments nothing points at whose every frame is served elsewhere
    (or belongs to a deleted episode): the copies of an interrupted gc."""
    conn = st.db.conn
    with st._db_lock:
        referenced = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT frame_segment FROM steps WHERE frame_segment IS NOT NULL"
            )
        }
        served: dict[int, set[int]] = defaultdict(set)
        for ep, step in conn.execute(
            "SELECT episode_id, step FROM steps WHERE frame_segment IS NOT NULL"
        ):
            served[ep].add(step)
        statuses = dict(conn.execute("SELECT id, status FROM episodes"))
    root = Path(st.root)
    removed = []
    for sid, scan in scans.items():
        if sid in referenced or scan.bad or not scan.chunks or not scan.sealed:
            continue
        if all(
            statuses.get(h.stream_key) == "deleted"
            or all(k in served[h.stream_key] for k in h.frame_keys)
            for h in scan.chunks.values()
        ):
            segment_path(root, sid).unlink()
            removed.append(sid)
    if removed:
        for sid in removed:
            del scans[sid]
        fsync_dir(root / SEGMENT_DIR)
        report.segments_removed += removed


def _rewrite_corrupt(st, scans: dict[int, SegmentScan], report: RecoverReport) -> None:
    """Compact segments with bad records in the middle, so no unreadable bytes remain."""
    from .gc import live_chunk_offsets

    root = Path(st.root)
    victims = []
    for sid, scan in sorted(scans.items()):
        if scan.bad:
            offsets = live_chunk_offsets(st, sid, include_deleted=True)
            size = segment_path(root, sid).stat().st_size
            victims.append(_Victim(sid, size, offsets, 0))
    if not victims:
        return
    gc_report = GcReport(dry_run=False, threshold=1.0)
    compact(st, victims, drop_deleted_rows=False, report=gc_report)
    report.segments_rewritten = gc_report.segments_deleted
