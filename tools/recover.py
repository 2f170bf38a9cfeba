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

import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from framestore import FrameStore
from framestore.catalog import MAX_SQLITE_INT, RECOVERED_ENV_ID, format_shape
from framestore.compaction import Victim, compact, remove_obsolete
from framestore.files import fsync_dir
from framestore.merging import undo_incomplete_merges
from framestore.scan import SegmentScan, scan_segment
from framestore.segments import (
    FILE_HEADER_SIZE,
    SEAL_RECORD_SIZE,
    remove_partials,
    seal_segment,
    segment_dir,
    segment_files,
    segment_path,
)

from ._store import StoreArg, opened

__all__ = ["RecoverReport", "recover", "RECOVERED_ENV_ID"]


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


def recover(store: StoreArg, *, progress=None) -> RecoverReport:
    """Repair the store at ``store`` (a path or an open, writable ``FrameStore``).

    Raises:
        StoreLocked: a recorder holds the store.
    """
    t0 = time.perf_counter()
    report = RecoverReport()
    with opened(store, readonly=False) as st, st.writer_lock():
        _recover(st, report, progress)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _recover(st: FrameStore, report: RecoverReport, progress) -> None:
    report.partials_removed = remove_partials(st.root)
    report.segments_removed += remove_obsolete(st)
    undone = len(st.catalog.incomplete_merges())
    report.segments_removed += undo_incomplete_merges(st)
    if undone:
        report.notes.append(f"{undone} interrupted merge(s) undone (their copies removed)")
    scans = _repair_segments(st, report, progress)
    chunks = {
        (sid, off): header for sid, scan in scans.items() for off, header in scan.chunks.items()
    }
    with st.transaction() as cat:
        statuses = cat.episode_statuses()
        _clear_dangling(cat, chunks, statuses, report)
        _reinsert(cat, scans, statuses, report)
        report.episodes_interrupted = cat.interrupt_recordings()
    _remove_duplicates(st, scans, report)
    _rewrite_corrupt(st, scans, report)
    st.sync_segments()
    st.reader.forget()


def _repair_segments(st: FrameStore, report: RecoverReport, progress) -> dict[int, SegmentScan]:
    files = segment_files(st.root)
    if files.directory_is_link:
        report.notes.append("segments/ is a symlink; left alone")
    for sid in files.irregular:
        report.notes.append(f"segment {sid}: not a regular file; left alone")
    scans: dict[int, SegmentScan] = {}
    paths = sorted(files.regular.items())
    for i, (sid, path) in enumerate(paths):
        if progress is not None:
            progress(i, len(paths))
        scan = scan_segment(path, sid)
        if scan.header_error is not None:
            if scan.size < FILE_HEADER_SIZE:
                # a writer died creating it: it cannot hold a frame
                path.unlink()
                fsync_dir(segment_dir(st.root))
                report.segments_removed.append(sid)
                report.bytes_discarded += scan.size
            else:
                report.notes.append(f"segment {sid}: unreadable header ({scan.header_error})")
            continue
        _repair_segment(path, scan, report)
        scans[sid] = scan
    if progress is not None:
        progress(len(paths), len(paths))
    return scans


def _repair_segment(path, scan: SegmentScan, report: RecoverReport) -> None:
    """Cut an unreadable tail and seal (corruption in the middle is left for the
    rewrite at the end)."""
    sid = scan.segment
    for bad in scan.bad:
        report.segments_corrupt.append(
            {"segment": sid, "offset": bad.offset, "end": bad.end, "error": str(bad.error)}
        )
        report.bytes_discarded += bad.end - bad.offset
    if scan.tail is None and scan.seal is not None:
        return
    good_end = scan.good_end
    removed = scan.size - good_end
    if scan.seal is None:
        seal = seal_segment(path, good_end, len(scan.chunks), scan.frames)
        scan.add_seal_record(seal, good_end + SEAL_RECORD_SIZE)
        report.segments_sealed.append(sid)
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


def _resolves(chunks, row) -> bool:
    header = chunks.get((row.segment, row.offset))
    slot = row.slot
    if header is None or slot is None or not 0 <= slot < header.count:
        return False
    if header.stream_key != row.expected_key or header.frame_keys[slot] != row.step:
        return False
    return row.shape is None or row.shape == format_shape(header.shape)


def _clear_dangling(cat, chunks, statuses, report: RecoverReport) -> None:
    lost = [(r.episode, r.step) for r in cat.all_pointers() if not _resolves(chunks, r)]
    cat.clear_pointers(lost)
    counts: dict[int, int] = defaultdict(int)
    for ep, _step in lost:
        if statuses.get(ep) != "deleted":
            counts[ep] += 1
    report.frames_lost = dict(sorted(counts.items()))


def _owner(key: int, owners: dict[int, list[int]], statuses) -> int | None:
    """The episode a chunk's stream key names: the one episode that carries it, or the
    key itself as a new episode id; None when that is ambiguous (after a merge several
    episodes can carry one key, and an id can be taken by an episode with another key)."""
    found = owners.get(key, [])
    if len(found) == 1:
        return found[0]
    if not found and key not in statuses:
        return key
    return None


def _reinsert(cat, scans: dict[int, SegmentScan], statuses, report: RecoverReport) -> None:
    have = defaultdict(set, cat.step_keys())
    owners = cat.stream_key_owners()
    merged = cat.merged_segments()  # their rows committed with them: nothing to rebuild
    pointed = cat.pointed_frames()
    run_id = None
    recovered: dict[int, int] = defaultdict(int)
    skipped = 0
    for sid in sorted(set(scans) - set(merged)):
        for off, header in sorted(scans[sid].chunks.items()):
            if all((sid, off, slot) in pointed for slot in range(header.count)):
                continue
            ep = _owner(header.stream_key, owners, statuses)
            if ep is None:
                skipped += sum((sid, off, slot) not in pointed for slot in range(header.count))
                continue
            status = statuses.get(ep)
            if status == "deleted":
                continue
            missing = [(slot, k) for slot, k in enumerate(header.frame_keys) if k not in have[ep]]
            if not missing:
                continue
            if status is None:
                if not 1 <= ep <= MAX_SQLITE_INT:
                    skipped += len(missing)
                    continue
                if run_id is None:
                    run_id = cat.create_recovered_run()
                cat.create_recovered_episode(ep, run_id)
                statuses[ep] = "interrupted"
                owners[ep] = [ep]
                report.episodes_created.append(ep)
            shape = format_shape(header.shape)
            cat.insert_recovered_steps((ep, k, sid, off, slot, shape) for slot, k in missing)
            have[ep].update(k for _slot, k in missing)
            recovered[ep] += len(missing)
    if skipped:
        report.notes.append(
            f"{skipped} frames with a stream key that names no one episode; left unread"
        )
    report.steps_recovered = dict(sorted(recovered.items()))
    cat.recount_episodes(report.episodes_created)


def _remove_duplicates(
    st: FrameStore, scans: dict[int, SegmentScan], report: RecoverReport
) -> None:
    """Delete sealed segments nothing points at whose every frame is served elsewhere
    (or belongs to a deleted episode): the copies of an interrupted gc."""
    referenced = st.catalog.referenced_segments()
    served = defaultdict(set, st.catalog.steps_with_frames())
    statuses = st.catalog.episode_statuses()
    merged = st.catalog.merged_segments()  # stream keys there are not episode ids: gc's job
    removed = []
    for sid, scan in scans.items():
        if sid in referenced or sid in merged or scan.bad or not scan.chunks or not scan.sealed:
            continue
        if all(
            statuses.get(h.stream_key) == "deleted"
            or all(k in served[h.stream_key] for k in h.frame_keys)
            for h in scan.chunks.values()
        ):
            removed.append(sid)
    if removed:
        st.delete_segment_files(removed)
        for sid in removed:
            del scans[sid]
        report.segments_removed += removed


def _rewrite_corrupt(st: FrameStore, scans: dict[int, SegmentScan], report: RecoverReport) -> None:
    """Compact segments with bad records in the middle, so no unreadable bytes remain."""
    victims = []
    for sid, scan in sorted(scans.items()):
        if scan.bad:
            offsets = st.catalog.live_chunk_offsets(sid, include_deleted=True)
            size = segment_path(st.root, sid).stat().st_size
            victims.append(Victim(sid, size, offsets, 0))
    if victims:
        done = compact(st, victims, drop_deleted_rows=False)
        report.segments_rewritten = done.segments_deleted
