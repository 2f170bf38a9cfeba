"""``framestore gc``: compact segments and reclaim the space of deleted episodes.

The crash-safety argument (copy, rename, repoint in one transaction, delete) is written
out in ``framestore.maintenance.compaction``, which does the moving; this module decides which
segments to empty and reports. A fifth phase, ``vacuumed``, syncs the catalogue and runs
``VACUUM`` to give the database's free pages back (it cannot run inside a transaction).

Deleted episodes keep their ``episodes`` row (status ``deleted``) while their step rows
go: the row is what tells ``recover`` never to resurrect their frames, and it keeps run
statistics and episode ids stable.

gc only ever deletes frames that a committed deletion made dead. It refuses (one line:
run ``framestore recover`` first) while the catalogue may not know every frame:

- an episode is still marked ``recording`` (a writer died; its last frames have no rows);
- a segment file has no row in the ``segments`` table. Every segment is registered once
  all of its frames have rows (a recorder registers its segments when it closes,
  ``recover`` when it has rebuilt the rows, a compaction in its repoint transaction), so
  an unregistered segment holds frames the catalogue may not know: a recording killed
  before its episode row committed, or a ``framestore.db`` older than its segments (a
  restored backup, an empty database). The copies of a crashed compaction are the one
  exception: they are listed in ``compaction.outputs`` and deleted first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from framestore import FrameStore, InvalidInput
from framestore.catalog import COMPACTION_OUTPUTS
from framestore.disk.scan import SegmentScan, scan_segment
from framestore.disk.segments import (
    is_note_segment,
    is_sealed,
    list_partials,
    remove_partials,
    segment_files,
    segment_path,
    segment_seal,
)
from framestore.errors import CorruptData
from framestore.maintenance.compaction import PHASES as COMPACTION_PHASES
from framestore.maintenance.compaction import (
    Victim,
    compact,
    copy_bytes,
    kept_records,
    live_runs,
    live_stream_keys,
    remove_leftover_outputs,
    remove_obsolete,
)
from framestore.state.bookkeeping import (
    chunk_bytes,
    delete_segment_files,
    described_segments,
    file_bytes,
    segment_outlines,
    sync_segments,
    writer_lock,
)
from framestore.state.merging import refuse_unfinished_merge

from ._gcpolicy import DEFAULT_THRESHOLD
from ._store import StoreArg, opened

__all__ = ["DEFAULT_THRESHOLD", "GcReport", "collect", "gc_blocker", "PHASES", "reclaimable"]

PHASES = (*COMPACTION_PHASES, "vacuumed")

Progress = Callable[[int, int], None]  # (bytes done, bytes total)
Hook = Callable[[str], None]


@dataclass
class GcReport:
    """What ``collect`` did (or, with ``dry_run``, would do).

    ``segments_rewritten`` had live chunks copied out; ``segments_deleted`` lists every
    segment file removed (rewritten ones, fully dead ones and leftovers of an earlier
    crashed ``gc``); ``segments_written`` are the new segments holding the copies.
    Byte counts for the database include its WAL file. A dry run leaves
    ``db_bytes_after`` None: the size after ``VACUUM`` is known only once it ran.
    ``blocked`` says why ``gc`` itself would not run now (a writer holds the store, or
    ``recover`` must run first); a dry run reports the plan for the registered segments
    anyway (it is exact for them: frames without rows are only in unregistered ones).
    """

    dry_run: bool
    threshold: float
    segments_rewritten: list[int] = field(default_factory=list)
    segments_deleted: list[int] = field(default_factory=list)
    segments_written: list[int] = field(default_factory=list)
    segment_bytes_before: int = 0
    segment_bytes_after: int = 0
    db_bytes_before: int = 0
    db_bytes_after: int | None = 0
    blocked: str | None = None
    bytes_copied: int = 0
    steps_repointed: int = 0
    step_rows_removed: int = 0
    partials_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def segment_bytes_reclaimed(self) -> int:
        return self.segment_bytes_before - self.segment_bytes_after

    @property
    def db_bytes_reclaimed(self) -> int | None:
        if self.db_bytes_after is None:
            return None
        return self.db_bytes_before - self.db_bytes_after

    @property
    def bytes_before(self) -> int:
        return self.segment_bytes_before + self.db_bytes_before

    @property
    def bytes_after(self) -> int | None:
        if self.db_bytes_after is None:
            return None
        return self.segment_bytes_after + self.db_bytes_after

    @property
    def bytes_reclaimed(self) -> int | None:
        after = self.bytes_after
        return None if after is None else self.bytes_before - after

    def as_dict(self) -> dict:
        d = asdict(self)
        d["segment_bytes_reclaimed"] = self.segment_bytes_reclaimed
        d["db_bytes_reclaimed"] = self.db_bytes_reclaimed
        d["bytes_reclaimed"] = self.bytes_reclaimed
        return d


def _db_bytes(store: FrameStore) -> int:
    """Bytes of the database file and its WAL."""
    sizes = file_bytes(store)
    return sizes["database"] + sizes["wal"]


def _plan(store: FrameStore, threshold: float) -> list[Victim]:
    """Sealed segments whose live fraction is below ``threshold`` (or that hold nothing
    live). Active segments (a writer's, or one needing ``recover``) are never victims."""
    states = store.catalog.segments.states()
    merged = store.catalog.segments.merged()
    live_keys: set[int] | None = None
    victims = []
    spared = []  # sealed segments not chosen
    for sid, path in segment_files(store.root).regular.items():
        if states.get(sid) in ("obsolete", "compacting") or sid not in states:
            continue
        if not is_sealed(path):
            continue
        size = path.stat().st_size
        offsets = store.catalog.pointers.live_chunk_offsets(sid)
        live = chunk_bytes(store, sid, offsets)
        if not offsets:
            if live_keys is None:
                live_keys, runs = live_stream_keys(store), live_runs(store)
            if sid not in merged and _only_descriptions(path, sid, live_keys, runs):
                continue
        # `threshold 1` rewrites every sealed segment, dead bytes or not (a file's header
        # and seal count as not live): what upgrades format-1 segments and folds merged
        # ones into this store's own.
        if not offsets or live < threshold * size:
            victims.append(Victim(sid, size, offsets, live))
        else:
            spared.append(Victim(sid, size, offsets, live))
    return victims + _rest_of_merges(store, victims, spared)


def _rest_of_merges(store: FrameStore, victims: list[Victim], spared: list[Victim]) -> list[Victim]:
    """The other segments of each merge a victim was placed by: gc writes a merged
    episode's chunks under its id here (``compaction._Adoption``), so every segment
    holding its chunks must be rewritten in the same compaction (the catalogue has one
    stream key per episode)."""
    chosen = {v.segment for v in victims}
    whole: set[int] = set()
    for m in store.catalog.merges.records():
        placed = {here for here, _header in m.segments}
        if placed & chosen:
            whole |= placed
    return [v for v in spared if v.segment in whole]


def _only_descriptions(path, sid: int, live_keys: set[int], runs: set[int]) -> bool:
    """Whether a segment without live frames holds nothing but records describing live
    episodes (format 3: their ends, steps without frames): nothing to reclaim, and a
    copy would be the same again at the next gc."""
    try:
        scan = scan_segment(path, sid)
    except (OSError, CorruptData):
        return False
    if _is_note_segment(scan):
        return True  # a tombstone or a merge's provenance: _drop_spent_tombstones' care
    kept = kept_records(scan, [], live_keys, runs)
    return bool(kept) and all(r in kept for r in scan.records if scan.kind_of(r) != "seal")


def _is_note_segment(scan: SegmentScan) -> bool:
    """A sealed segment of ``DELETED``/``MERGED`` records only (docs/FORMAT.md, "Note
    segments")."""
    kinds = {scan.kind_of(r) for r in scan.records} - {"seal"}
    return scan.sealed and bool(kinds) and kinds <= {"deleted", "merged"}


def _spent_tombstones(store: FrameStore, going: set[int] = frozenset()) -> list[int]:
    """The note segments holding only tombstones of this store none of whose listed
    segments is left (or in ``going``: deleted by this gc first) and no segment of which
    holds an ``EPISODE`` record of an episode they name (a copy a recover's compaction
    made, or a record a tombstone written before issue 19 did not list): every record of
    the episodes they name is gone, nothing is left for a rebuilt catalogue to bring
    back."""
    files = segment_files(store.root).regular
    outlines: dict | None = None  # read once, when a tombstone's list is spent
    spent = []
    for sid, path in sorted(files.items()):
        scan = _tombstones_only(store, sid, path, going)
        if scan is None:
            continue
        listed = _note_items(scan, "segments")
        if any(s in files and s != sid and s not in going for s in listed):
            continue
        if outlines is None:
            outlines = segment_outlines(store.root)
        entries = [e for e in _note_items(scan, "episodes") if isinstance(e, dict)]
        described = described_segments(store.root, entries, outlines) - going - {sid}
        if not described:
            spent.append(sid)
    return spent


def _tombstones_only(store: FrameStore, sid: int, path, going: set[int]) -> SegmentScan | None:
    """The scan of segment ``sid`` when it is a note segment of tombstones only (no
    frame, no step row pointing into it, no ``MERGED`` record) and not in ``going``;
    else None (a segment that cannot be read too)."""
    seal = segment_seal(path)  # a note holds no frame: others are never read here
    if sid in going or seal is None or seal.frames or store.catalog.pointers.count([sid]):
        return None
    try:
        scan = scan_segment(path, sid)
    except (OSError, CorruptData):
        return None
    if not _is_note_segment(scan) or any(scan.kind_of(r) == "merged" for r in scan.records):
        return None
    return scan


def _note_items(scan: SegmentScan, key: str) -> list:
    """The items of the list ``key`` (``segments``, ``episodes``) of every note record of
    ``scan``, joined (a record splits a long list, docs/FORMAT.md; a field that is not a
    list has none)."""
    return [
        item
        for r in scan.meta_records
        for item in (r.meta.get(key) if isinstance(r.meta.get(key), list) else ())
    ]


def _drop_spent_tombstones(store: FrameStore) -> list[int]:
    """Delete the spent tombstones (after the compaction deleted its victims, so every
    segment they listed is gone first). Returns their ids."""
    spent = _spent_tombstones(store)
    if spent:  # as compaction does: obsolete first, so a crash leaves a known leftover
        with store.transaction() as cat:
            cat.segments.set_states(spent, "obsolete")
        delete_segment_files(store, spent)
    return spent


# --------------------------------------------------------------------- entry point
def collect(
    store_path_or_store: StoreArg,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    dry_run: bool = False,
    progress: Progress | None = None,
    _hook: Hook | None = None,
) -> GcReport:
    """Compact sealed segments whose live fraction is below ``threshold``.

    Args:
        store_path_or_store: a store directory or an open (writable) ``FrameStore``.
        threshold: rewrite a sealed segment when live bytes / file bytes is below this
            (0..1). Segments with no live chunk are always deleted.
        dry_run: report what would happen; change nothing (no lock, no writes).
        progress: called as ``progress(bytes_copied, bytes_to_copy)``.
        _hook: called with each phase name in ``PHASES`` once it is done (tests raise
            from it to simulate a crash).

    Raises:
        StoreLocked: a recorder holds the store.
        InvalidInput: a bad threshold, or episodes left ``recording`` by a crashed writer
            (their frames may have no rows yet: run ``recover`` first).
        CorruptData: a live chunk failed its checksum (nothing was changed).
    """
    if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise InvalidInput(f"threshold must be between 0 and 1, got {threshold!r}")
    t0 = time.perf_counter()
    report = GcReport(dry_run=dry_run, threshold=float(threshold))
    with opened(store_path_or_store, readonly=dry_run) as store:
        report.segment_bytes_before = file_bytes(store)["segments"]
        report.db_bytes_before = report.db_bytes_after = _db_bytes(store)
        if dry_run:
            report.db_bytes_after = None  # known once VACUUM ran
            _dry_run(store, report, threshold)
        else:
            with writer_lock(store):
                _run(store, report, threshold, progress, _hook)
            report.db_bytes_after = _db_bytes(store)
            report.segment_bytes_after = file_bytes(store)["segments"]
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def gc_blocker(store: FrameStore) -> str | None:
    """Why ``collect`` would not run on ``store`` now, in words (None: it would): a
    published store never changes, a writer holds the lock, or the catalogue may not
    know every frame (``recover`` first). Takes no lock and changes nothing."""
    if store.published:
        return "a published store never changes; there is nothing for gc to do"
    if store.writer_running():
        return "a writer is recording into the store; gc runs once it has finished"
    try:
        _refuse_unless_catalogue_complete(store, leftovers=True)
    except InvalidInput as e:
        return str(e)
    return None


def _refuse_unless_catalogue_complete(store: FrameStore, *, leftovers: bool) -> None:
    """``InvalidInput`` (run ``recover`` first) while frames may lack rows (see the module
    docstring). With ``leftovers`` the copies of a crashed compaction do not count."""
    stale = store.catalog.episodes.stale_recordings()
    if stale:
        raise InvalidInput(
            f"episode {stale[0]} was left 'recording' by a writer that stopped; its frames "
            "may have no rows yet. Run `framestore recover` first"
        )
    refuse_unfinished_merge(store)
    rows = store.catalog.segments.rows()
    outputs = store.catalog.meta.get(COMPACTION_OUTPUTS) if leftovers else None
    known = set(rows) | set(outputs if isinstance(outputs, list) else [])
    files = segment_files(store.root).regular
    unknown = sorted(set(files) - known)
    notes = [s for s in unknown if is_note_segment(files[s], s)]
    if notes:
        raise InvalidInput(
            f"segment {notes[0]} is a tombstone whose rm did not commit (killed, or its "
            "commit failed); the deletion took effect. Run `framestore recover` to finish it"
        )
    if unknown:
        raise InvalidInput(
            f"segment {unknown[0]} is not in the catalogue ({len(unknown)} such segment(s): "
            "frames of a recording that did not finish, or a database older than its "
            "segments); gc could delete frames that have no rows. Run `framestore recover` first"
        )


def reclaimable(store: FrameStore, threshold: float = DEFAULT_THRESHOLD) -> int:
    """Segment bytes ``collect(store, threshold=threshold)`` would free (its dry run:
    nothing is changed, no lock taken; see ``gc_blocker`` for whether it can run now).
    Database pages freed by ``gc`` are not counted."""
    report = GcReport(dry_run=True, threshold=float(threshold))
    report.segment_bytes_before = file_bytes(store)["segments"]
    _dry_run(store, report, threshold)
    return max(0, report.segment_bytes_reclaimed)


def _dry_run(store: FrameStore, report: GcReport, threshold: float) -> None:
    report.blocked = gc_blocker(store)
    root = store.root
    report.partials_removed = [p.name for p in list_partials(root)]
    obsolete = [s for s in store.catalog.segments.obsolete() if segment_path(root, s).exists()]
    victims = _plan(store, threshold)
    report.segments_rewritten = [v.segment for v in victims if v.live_offsets]
    outputs = store.catalog.meta.get(COMPACTION_OUTPUTS)
    leftovers = [
        s
        for s in (outputs if isinstance(outputs, list) else [])
        if isinstance(s, int) and segment_path(root, s).exists()
    ]
    report.segments_deleted = leftovers + obsolete + [v.segment for v in victims]
    report.segments_deleted += _spent_tombstones(store, set(report.segments_deleted))
    report.bytes_copied = copy_bytes(store, victims)
    removed = sum(segment_path(root, s).stat().st_size for s in report.segments_deleted)
    report.segment_bytes_after = report.segment_bytes_before - removed + report.bytes_copied
    report.steps_repointed = sum(store.catalog.pointers.live_count(v.segment) for v in victims)
    report.step_rows_removed = store.catalog.pointers.deleted_step_rows()


def _run(store: FrameStore, report: GcReport, threshold: float, progress, hook) -> None:
    _refuse_unless_catalogue_complete(store, leftovers=True)
    report.partials_removed = remove_partials(store.root)
    report.segments_deleted += remove_leftover_outputs(store)
    _refuse_unless_catalogue_complete(store, leftovers=False)
    report.segments_deleted += remove_obsolete(store)
    sync_segments(store)
    victims = _plan(store, threshold)
    done = compact(
        store, victims, drop_deleted_rows=True, progress=progress, hook=hook, adopt_merged=True
    )
    report.steps_repointed += done.steps_repointed
    report.step_rows_removed += done.step_rows_removed
    report.segments_rewritten += done.segments_rewritten
    report.segments_written += done.segments_written
    report.bytes_copied += done.bytes_copied
    report.segments_deleted += done.segments_deleted
    report.segments_deleted += _drop_spent_tombstones(store)
    sync_segments(store)  # adds the new segments, drops the rows of deleted files
    store.catalog.connection.compact_database()
    if hook is not None:
        hook("vacuumed")
