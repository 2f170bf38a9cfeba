"""``framestore recover``: repair a store after a crash, a power loss or a bad disk.

Runs with the writer lock held. In order:

1. removes ``.partial`` files and ``obsolete`` segments left by an interrupted ``gc``;
2. cuts every segment's unreadable tail (a torn record, or garbage after a bad record
   that nothing parseable follows) at the end of its last good record, and seals it
   (truncate in place, append a SEAL record, fsync). Corruption *inside* a segment with
   good records after it is not cut: those records are kept, and the segment is rewritten
   without the bad bytes (step 6);
3. step rows whose frame pointer no longer resolves (no good chunk at the offset, slot
   out of range, chunk of another step or shape) are re-linked to another good copy of
   their frame when a segment holds one (a database restored from a backup older than a
   ``gc``); else they lose their pointer: the row, with its action, reward and flags, is
   kept and reads as a step without a frame. This is data loss and is reported per
   episode. A pointer into a segment that is only *unavailable* (the file is missing, is
   not a regular file, or its header cannot be read: it may be a file being restored, a
   permission problem or a disk not mounted) is kept and reported; only
   ``drop_missing`` (``recover --drop-missing``) forgets such frames;
4. steps the segments describe (format version 3: ``EPISODE`` records and the chunks'
   steps blocks) but the database has no row for get their row back whole: action,
   reward, flags, info, time and frame pointer as recorded; so do their episodes and
   runs (``tools._recover_meta``), and an episode left ``recording`` whose end a segment
   records gets that end. A store whose ``framestore.db`` is gone gets a new one, rebuilt
   this way (with the store id its segments name). Frames of older segments (versions
   1-2) the database has no row for (chunk stream key = episode id, frame key = step)
   get a row back without metadata: frame pointer set, action and reward NULL, info
   ``{"recovered": true}``, reported as rows whose metadata is lost. A missing episode row is created (status
   ``interrupted``) under a run with env_id ``unknown (recovered)``. Episodes whose
   status is ``deleted`` are never brought back. Frames of two recordings are never
   merged into one episode: a frame joins an existing episode only when it cannot be
   another recording's (``tools._recover_rows``); the chunks of an earlier recording
   that used the same episode id get an episode of their own (copied under a new id);
5. episodes left ``recording`` become ``interrupted`` with ``steps`` and
   ``total_reward`` recomputed from their rows;
6. segments with corruption in the middle or with such foreign chunks are compacted like
   ``gc`` does, and sealed segments that only duplicate frames other segments already
   serve (an interrupted ``gc``'s copies) are deleted; finally the catalogue is synced;
7. outside the store: shared memory blocks of recorders that died, and the staging
   directories (``.DEST.publish-XXXXXXXX``) that killed publishes left beside the store
   (in its parent directory), only those no live publish holds (each holds an flock on
   its own: ``framestore.maintenance.publish.remove_dead_staging``).

Between steps 4 and 5, the tombstones ``rm`` wrote (``DELETED`` records in note
segments) are honoured: an episode one of them names that the catalogue holds live is
marked deleted (``tools._recover_notes``), so an ``rm`` killed before its SQLite commit
is finished and an ``rm``'d episode never comes back in a rebuilt catalogue (nor do
the frames of a chunk a tombstone lists under a stream key it names get an episode).

Last, the frames of good chunks that no row points at and that are no deleted or rm'd
episode's (nor a byte-identical copy of the chunk their steps' rows point at) are
counted by reason (``frames_not_rebuilt``): data loss, reported line by line, so a
rebuild that left frames out never says "nothing lost". Duplicates step 6 deletes are
only this store's segments whose every chunk is byte-identical to the one its rows use.

The frames it reports lost are kept in the store's ``meta`` table from the transaction
that cleared their pointers until a ``recover`` completes and returns them, so an
interrupted ``recover`` run again still reports them. Running it again after that
changes nothing and reports nothing lost.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from framestore import FrameStore
from framestore.catalog import PENDING_LOSS, RECOVERED_ENV_ID
from framestore.disk.scan import SegmentScan, scan_segment
from framestore.disk.segments import (
    FILE_HEADER_SIZE,
    SEAL_RECORD_SIZE,
    cut_segment,
    list_segment_ids,
    remove_partials,
    remove_segment_file,
    same_chunk_data,
    seal_segment,
    segment_files,
    segment_path,
    store_tag,
)
from framestore.errors import CorruptData
from framestore.maintenance.compaction import (
    Victim,
    compact,
    remove_leftover_outputs,
    remove_obsolete,
)
from framestore.maintenance.publish import remove_dead_staging
from framestore.state.bookkeeping import delete_segment_files, sync_segments, writer_lock
from framestore.state.merging import undo_incomplete_merges
from framestore.store import enclosing_store
from framestore.write.service import remove_dead_shared_memory

from ._recover_meta import restore_from_segments, store_id_of_segments
from ._recover_notes import (
    apply_tombstones,
    merge_notes,
    restore_merged_episodes,
    restore_merges,
    tombstoned_chunks,
)
from ._recover_rows import (
    Foreign,
    adopt_rowless,
    fix_pointers,
    frames_not_rebuilt,
    insert_foreign,
    resolves,
)
from ._store import StoreArg, opened

__all__ = ["RecoverReport", "recover", "RECOVERED_ENV_ID"]


@dataclass
class RecoverReport:
    """What ``recover`` repaired, and what was lost.

    ``frames_lost`` maps episode id -> number of steps whose frame could not be read
    (their pointer was cleared); ``steps_recovered`` maps episode id -> step rows rebuilt
    from segments, of which ``steps_without_metadata`` could only get their frame (older
    segments hold no step metadata: action, reward and info are lost);
    ``episodes_ended`` lists episodes left ``recording`` whose end a segment recorded;
    ``catalogue_rebuilt``: ``framestore.db`` was missing and was rebuilt from segments;
    ``episodes_deleted``: episodes a tombstone of ``rm`` names that the catalogue held
    live (an ``rm`` stopped before its commit, or a rebuilt catalogue), now deleted;
    ``merges_restored``: merge journal rows rebuilt from the merges' provenance notes;
    ``frames_not_rebuilt`` counts, by why, the frames in the segments that no step row
    points at once recover is done and that are no deleted episode's (data loss: the
    catalogue does not hold them);
    ``steps_relinked`` episode id -> rows pointed at another copy of their
    frame. ``segments_unavailable`` maps a segment that rows point into but that cannot
    be read now to ``{episode id: frames}``: those pointers were kept (``missing``).
    ``episodes_split`` maps an episode created for an earlier recording's frames to the
    id that recording had used. ``bytes_discarded`` counts unreadable segment bytes
    removed. ``staging_removed``: the staging directories of killed publishes removed
    beside the store.
    """

    segments_truncated: list[dict] = field(default_factory=list)
    segments_sealed: list[int] = field(default_factory=list)
    segments_corrupt: list[dict] = field(default_factory=list)
    segments_rewritten: list[int] = field(default_factory=list)
    segments_removed: list[int] = field(default_factory=list)
    segments_unavailable: dict[int, dict[int, int]] = field(default_factory=dict)
    partials_removed: list[str] = field(default_factory=list)
    staging_removed: list[str] = field(default_factory=list)
    frames_lost: dict[int, int] = field(default_factory=dict)
    steps_recovered: dict[int, int] = field(default_factory=dict)
    steps_without_metadata: dict[int, int] = field(default_factory=dict)
    steps_relinked: dict[int, int] = field(default_factory=dict)
    episodes_created: list[int] = field(default_factory=list)
    episodes_split: dict[int, int] = field(default_factory=dict)
    episodes_interrupted: list[int] = field(default_factory=list)
    episodes_ended: list[int] = field(default_factory=list)
    episodes_deleted: list[int] = field(default_factory=list)
    merges_restored: list[int] = field(default_factory=list)
    frames_not_rebuilt: dict[str, int] = field(default_factory=dict)
    catalogue_rebuilt: bool = False
    bytes_discarded: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def data_lost(self) -> bool:
        return (
            bool(self.frames_lost)
            or self.bytes_discarded > 0
            or self.metadata_lost
            or bool(self.frames_not_rebuilt)
        )

    @property
    def metadata_lost(self) -> bool:
        """Step rows were rebuilt without their action, reward and info."""
        return bool(self.steps_without_metadata)

    @property
    def missing(self) -> bool:
        """Rows still point into segments that cannot be read (kept, not forgotten)."""
        return bool(self.segments_unavailable)

    @property
    def changed(self) -> bool:
        return any(
            (
                self.segments_truncated,
                self.segments_sealed,
                self.segments_rewritten,
                self.segments_removed,
                self.partials_removed,
                self.staging_removed,
                self.frames_lost,
                self.steps_recovered,
                self.steps_relinked,
                self.episodes_created,
                self.episodes_interrupted,
                self.episodes_ended,
                self.episodes_deleted,
                self.merges_restored,
                self.catalogue_rebuilt,
            )
        )

    def as_dict(self) -> dict:
        d = asdict(self)
        d["data_lost"] = self.data_lost
        d["metadata_lost"] = self.metadata_lost
        d["missing"] = self.missing
        d["changed"] = self.changed
        return d


def recover(store: StoreArg, *, progress=None, drop_missing: bool = False) -> RecoverReport:
    """Repair the store at ``store`` (a path or an open, writable ``FrameStore``).

    Args:
        store: a store directory or an open, writable ``FrameStore``.
        progress: called as ``progress(segments_done, segments_total)``.
        drop_missing: forget (report as lost) the frames of segments that are missing
            or unreadable, instead of keeping their pointers for when they come back.

    Raises:
        StoreLocked: a recorder holds the store.
    """
    t0 = time.perf_counter()
    report = RecoverReport()
    if _catalogue_gone(store):
        FrameStore.open(store, create=True).close()  # type: ignore[arg-type]
        report.catalogue_rebuilt = True
    with opened(store, readonly=False) as st, writer_lock(st):
        _recover(st, report, progress, drop_missing)
        parent = st.root.parent
    report.staging_removed = [str(p) for p in remove_dead_staging(parent)]
    shm = remove_dead_shared_memory()  # a killed process-writer recorder's queue
    if shm:
        mib = sum(size for _name, size in shm) / 2**20
        report.notes.append(
            f"{len(shm)} shared memory block(s) of dead recorders removed ({mib:.1f} MiB)"
        )
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _catalogue_gone(store: StoreArg) -> bool:
    """A store directory whose segments are there but whose ``framestore.db`` is not."""
    if isinstance(store, FrameStore):
        return False
    root = Path(store)
    if not root.is_dir() or not list_segment_ids(root):
        return False
    return enclosing_store(root) != Path(os.path.realpath(root))


def _recover(st: FrameStore, report: RecoverReport, progress, drop_missing: bool) -> None:
    report.partials_removed = remove_partials(st.root)
    report.segments_removed += remove_leftover_outputs(st)
    report.segments_removed += remove_obsolete(st)
    undone = len(st.catalog.merges.incomplete())
    report.segments_removed += undo_incomplete_merges(st)
    if undone:
        report.notes.append(f"{undone} interrupted merge(s) undone (their copies removed)")
    scans, unavailable = _repair_segments(st, report, progress)
    next_id = _next_episode_id(st, scans)
    with st.transaction() as cat:
        statuses = cat.episodes.statuses()
        rows = fix_pointers(cat, scans, unavailable, statuses, drop_missing=drop_missing)
        report.steps_relinked = rows.relinked
        report.segments_unavailable = rows.kept_missing
        # Until a recover completes, what this one found lost stays on record.
        cat.meta.set(PENDING_LOSS, _merge(cat.meta.get(PENDING_LOSS), rows.lost))
        # a catalogue deleted or emptied: its store id is the one its segments name
        if (report.catalogue_rebuilt or not statuses) and (sid := store_id_of_segments(scans)):
            cat.recovery.restore_store_id(sid)
        report.merges_restored = restore_merges(cat, scans)
        restored = restore_from_segments(cat, st.root, scans, statuses)
        if report.merges_restored:
            notes = merge_notes(scans, cat.meta.store_id())
            merged = restore_merged_episodes(
                cat, st.root, scans, statuses,
                {m: notes[m] for m in report.merges_restored},
            )  # fmt: skip
            restored.merge(merged)
        report.episodes_deleted = apply_tombstones(cat, scans, statuses)
        tombstoned = tombstoned_chunks(scans, cat.meta.store_id())
        found = adopt_rowless(cat, scans, statuses, next_id, st.root, tombstoned)
        bare, created, foreign, _skipped = found  # (counted by frames_not_rebuilt)
        for ep, n in restored.bare.items():  # merged frames of format 1-2 segments
            bare[ep] = bare.get(ep, 0) + n
        report.steps_without_metadata = dict(sorted(bare.items()))
        whole = defaultdict(int, restored.steps)
        for ep, n in bare.items():
            whole[ep] += n
        report.steps_recovered = dict(sorted(whole.items()))
        report.episodes_created = restored.episodes_created + created
        report.episodes_ended = restored.episodes_ended
        report.episodes_interrupted = cat.recovery.interrupt_recordings()
    if restored.unreadable:
        report.notes.append(f"{restored.unreadable} chunk(s) whose step metadata is unreadable")
    _compact(st, scans, foreign, report)
    _remove_duplicates(st, scans, report)
    _forget_gone_segments(st)
    sync_segments(st, notes=True)  # its tombstones are applied
    report.frames_not_rebuilt = frames_not_rebuilt(st.catalog, scans, tombstoned, st.root)
    st.reader.forget()
    for sid, eps in report.segments_unavailable.items():
        report.notes.append(
            f"segment {sid} cannot be read; the pointers of {sum(eps.values())} frame(s) "
            "into it were kept (restore the file and run recover again, or forget them "
            "with `recover --drop-missing`)"
        )
    report.frames_lost = _merge(st.catalog.meta.get(PENDING_LOSS), {})
    st.catalog.meta.set(PENDING_LOSS, None)


def _forget_gone_segments(st: FrameStore) -> None:
    """Drop the rows of segments whose file is gone once nothing points into them."""
    files = segment_files(st.root)
    present = set(files.regular) | set(files.irregular)
    gone = [
        sid
        for sid in st.catalog.segments.rows()
        if sid not in present and not st.catalog.pointers.count([sid])
    ]
    if gone:
        with st.transaction() as cat:
            cat.segments.forget(gone)


def _merge(stored: object, new: dict[int, int]) -> dict[int, int]:
    """Loss counts kept in ``meta`` (JSON: string keys) plus new ones."""
    out: dict[int, int] = defaultdict(int)
    if isinstance(stored, dict):
        for k, v in stored.items():
            if isinstance(k, str) and k.isdigit() and isinstance(v, int):
                out[int(k)] += v
    for k, v in new.items():
        out[k] += v
    return dict(sorted(out.items()))


def _next_episode_id(st: FrameStore, scans: dict[int, SegmentScan]) -> int:
    """An episode id above every id in the catalogue and every stream key in a segment."""
    _run, next_id = st.catalog.episodes.next_ids()
    keys = (h.stream_key for scan in scans.values() for h in scan.chunks.values())
    return max(next_id, max(keys, default=0) + 1)


def _repair_segments(
    st: FrameStore, report: RecoverReport, progress
) -> tuple[dict[int, SegmentScan], set[int]]:
    """Scan, cut and seal every readable segment. Returns the scans and the segments
    that could not be read (missing ones are added by the caller's pointer check)."""
    files = segment_files(st.root)
    unavailable: set[int] = set()  # a link or FIFO under a segment's name is not a segment
    if files.directory_is_link:
        report.notes.append("segments/ is a symlink; left alone")
    for sid in files.irregular:
        report.notes.append(f"segment {sid}: not a regular file; left alone")
    scans: dict[int, SegmentScan] = {}
    paths = sorted(files.regular.items())
    for i, (sid, path) in enumerate(paths):
        if progress is not None:
            progress(i, len(paths))
        try:
            scan = scan_segment(path, sid)
        except (OSError, CorruptData) as e:  # vanished, replaced, permission...
            unavailable.add(sid)
            report.notes.append(f"segment {sid}: cannot be read ({e}); left alone")
            continue
        if scan.header_error is not None:
            if scan.size < FILE_HEADER_SIZE:
                # a writer died creating it: it cannot hold a frame
                remove_segment_file(st.root, sid)
                report.segments_removed.append(sid)
                report.bytes_discarded += scan.size
            else:
                unavailable.add(sid)
                report.notes.append(f"segment {sid}: unreadable header ({scan.header_error})")
            continue
        _repair_segment(path, scan, report)
        scans[sid] = scan
    if progress is not None:
        progress(len(paths), len(paths))
    referenced = st.catalog.pointers.referenced_segments()
    missing = set(referenced) - set(files.regular) - set(files.irregular)
    return scans, unavailable | missing


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
        frames_in = [h for h in scan.chunks.values() if h.count]
        seal = seal_segment(path, good_end, len(frames_in), scan.frames, sid, scan.meta_bytes)
        scan.add_seal_record(seal, good_end + SEAL_RECORD_SIZE)
        report.segments_sealed.append(sid)
    else:  # sealed, with bytes after the seal: cut them
        cut_segment(path, good_end, sid)
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
    scan.size = os.lstat(path).st_size


def _compact(
    st: FrameStore, scans: dict[int, SegmentScan], foreign: Foreign, report: RecoverReport
) -> None:
    """Rewrite segments with bad records in the middle (so no unreadable bytes remain)
    and segments holding foreign chunks (copied under their new episode ids)."""
    rekey: dict[int, dict[int, int]] = defaultdict(dict)
    for (sid, off), new_id in foreign.chunks.items():
        rekey[sid][off] = new_id
    victims = []
    for sid, scan in sorted(scans.items()):
        if scan.bad or sid in rekey:
            offsets = set(st.catalog.pointers.live_chunk_offsets(sid, include_deleted=True))
            offsets |= set(rekey[sid])
            size = segment_path(st.root, sid).stat().st_size
            victims.append(Victim(sid, size, sorted(offsets), 0, rekey.get(sid, {})))
    if not victims:
        return
    created: list[int] = []

    def rows_for_foreign(cat, moves) -> None:
        if foreign:
            created.extend(insert_foreign(cat, foreign, moves))

    done = compact(st, victims, drop_deleted_rows=False, in_repoint=rows_for_foreign)
    report.segments_rewritten = done.segments_deleted
    report.episodes_created += created
    report.episodes_split = dict(foreign.episodes)
    for sid in done.segments_deleted:
        scans.pop(sid, None)


def _remove_duplicates(
    st: FrameStore, scans: dict[int, SegmentScan], report: RecoverReport
) -> None:
    """Delete sealed segments of this store nothing points at whose every frame is a
    byte-identical copy of the chunk a resolving row points at (or belongs to a deleted
    episode): the copies of an interrupted gc. Frames are matched by stream key (after a
    merge an episode's chunks carry the id it had in its source store) and then by their
    data: a stream key and step can be another recording's (a merged segment whose note
    was lost carries its source's keys). A segment another store wrote is never one."""
    chunks = {(sid, off): h for sid, scan in scans.items() for off, h in scan.chunks.items()}
    referenced = st.catalog.pointers.referenced_segments()
    merged = st.catalog.segments.merged()  # their rows committed with them: gc's job
    own_tag = store_tag(st.catalog.meta.store_id())
    home: dict[tuple[int, int], tuple[int, int]] = {}  # (stream key, step) -> its chunk
    for row in st.catalog.pointers.all():
        if resolves(chunks, row):
            home[(row.expected_key, row.step)] = (row.segment, row.offset)  # type: ignore[assignment]
    statuses = st.catalog.episodes.statuses()
    owners = st.catalog.episodes.stream_key_owners()

    def deleted(key: int) -> bool:
        found = owners.get(key, [])
        return bool(found) and all(statuses.get(e) == "deleted" for e in found)

    def copied(sid: int, off: int, h) -> bool:
        homes = {home.get((h.stream_key, k)) for k in h.frame_keys}
        if len(homes) != 1 or None in homes:
            return False
        return same_chunk_data(st.root, (sid, off), homes.pop())  # type: ignore[arg-type]

    removed = []
    for sid, scan in scans.items():
        if sid in referenced or sid in merged or scan.bad or not scan.chunks or not scan.sealed:
            continue
        if scan.store_tag not in (0, own_tag):
            continue
        if all(deleted(h.stream_key) or copied(sid, off, h) for off, h in scan.chunks.items()):
            removed.append(sid)
    if removed:
        delete_segment_files(st, removed)
        for sid in removed:
            del scans[sid]
        report.segments_removed += removed
