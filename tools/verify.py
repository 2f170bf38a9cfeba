"""``framestore verify``: check every checksum, pointer and catalogue entry of a store.

Read-only: opens the database read-only, never takes the writer lock, never follows a
path stored in SQLite (segment files are only ever named from their id) and never opens
a symlink or anything but a regular file. Each problem names the segment/offset and,
where steps are affected, the episode and steps.

While a recorder writes, verify checks what was committed when it started: it reads the
database in one read transaction whose snapshot is taken *before* the segments are
scanned, so every pointer it checks names bytes written before the scan began (rows
commit only after their frames are written). The writer's newest segment is "in
progress": its unfinished tail is reported as such, not as damage.

While a merge runs (or a recorder starts) verify sees the store before or after it, or
says it is in progress: what the snapshot cannot explain (a segment file without a row,
a ``.partial`` file, an unfinished merge journal) is settled after the snapshot ends, by
looking again: a file the catalogue registered since, a file the merge journal names
with the header it was placed for while a writer holds the lock, or a partial file
while a writer holds the lock is in progress, not damage (``_settle``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from framestore import FrameStore
from framestore.catalog import MERGED_TAGS, PointerRow, format_shape
from framestore.disk.scan import BadRecord, SegmentScan, problem_kind, scan_segment
from framestore.disk.segments import (
    FOREIGN_SEGMENT,
    SegmentFiles,
    list_partials,
    relative_segment_path,
    segment_dir,
    segment_files,
    store_tag,
)
from framestore.errors import CorruptCatalog, CorruptData

from ._store import StoreArg, opened
from ._verify_published import check_objects, check_pointers_remote
from ._verify_report import Problem, VerifyReport
from ._verify_steps import check_step_metadata

__all__ = ["Problem", "VerifyReport", "verify"]

#: A segment registered as merged whose header names a store no merge brought in.
NOT_MERGED_IN = (
    "segment written by a store never merged into this one (its file header's store tag "
    "is neither this store's nor a merged-in store's)"
)

Progress = Callable[[int, int], None]  # (segments done, segments total)


@dataclass
class _Unsettled:
    """What the snapshot alone cannot tell from damage: settled after it ends."""

    rowless: dict[int, int | None] = field(default_factory=dict)  # segment -> header id
    foreign: set[int] = field(default_factory=set)  # rowless ones another store wrote
    partials: list[str] = field(default_factory=list)  # names of .partial files
    merges: list[str] = field(default_factory=list)  # sources of unfinished merges


# --------------------------------------------------------------------- verify
def verify(
    store: StoreArg, *, quick: bool = False, progress: Progress | None = None
) -> VerifyReport:
    """Check a store without changing it.

    A published store (a directory or a URL) is also checked object by object against
    its manifest (size and SHA-256, each object read whole); at a URL, where segments
    cannot be scanned as files, every frame pointer is read through the store instead
    (each chunk's CRC, framing and frame keys).

    Args:
        store: a store directory, a published store's directory or URL, or an open
            ``FrameStore``.
        quick: check checksums, pointers and sizes but do not decompress chunks; for a
            published store, skip the whole-object SHA-256 check.
        progress: called as ``progress(done, total)`` (segments; bytes of objects for
            the manifest check).
    """
    t0 = time.perf_counter()
    report = VerifyReport(quick=quick)
    unsettled = _Unsettled()
    with opened(store, readonly=True) as st:
        report.writer_running = None if st.remote else st.writer_running()  # no lock at a URL
        try:
            if st.published and not quick:  # every object against the manifest, whole
                check_objects(st, report, progress)
            # The snapshot is pinned by the first query, before any segment is scanned.
            with st.catalog.connection.read_snapshot():
                if _check_database(st, report):
                    if st.remote:  # segments at a URL: read through the store, chunk by chunk
                        check_pointers_remote(st, report)
                    else:
                        files = _check_files(st, report, unsettled)
                        scans = _scan_all(st, report, files, quick, progress, unsettled)
                        _check_pointers(st, report, scans, files)
                        if not quick:
                            check_step_metadata(st, report, scans)
                    _check_episodes(st, report)
            if not st.remote:
                _settle(st, report, unsettled)
        except (CorruptCatalog, sqlite3.DatabaseError) as e:
            report.problems.append(Problem("database", f"cannot read the catalogue: {e}"))
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _check_database(st: FrameStore, report: VerifyReport) -> bool:
    """SQLite's structure check, then the type and range of every trusted column.
    Returns False when the database is too damaged to check anything else against it."""
    add = report.problems.append
    damage = st.catalog.checks.integrity_problems()
    for text in damage[:10]:
        add(Problem("database", f"SQLite integrity check: {text}"))
    values = st.catalog.checks.value_problems()
    for v in values:
        add(Problem("bad value", str(v)))
    return not damage and not any(v.table == "segments" for v in values)


def _check_files(st: FrameStore, report: VerifyReport, unsettled: _Unsettled) -> SegmentFiles:
    """Files on disk against the segments table (canonical names only; links and other
    non-regular files are reported, never opened)."""
    add = report.problems.append
    running = report.writer_running
    files = segment_files(st.root)
    if files.directory_is_link:
        add(Problem("bad path", "segments/ is a symlink; not followed"))
    for sid, p in files.irregular.items():
        add(Problem("bad path", f"{p.name} is not a regular file; not opened", sid))
    if running is not True:  # a running gc or merge writes these while holding the lock
        unsettled.partials += [p.name for p in list_partials(st.root)]
        unsettled.merges += [m.source_path for m in st.catalog.merges.incomplete()]
    for sid, (path, state) in sorted(st.catalog.segments.rows().items()):
        if path != relative_segment_path(sid):
            add(
                Problem("bad path", f"segments row path {path!r} is not canonical; not opened", sid)
            )
        if sid not in files.regular and state != "obsolete":
            add(Problem("missing segment", f"{relative_segment_path(sid)} is missing", sid))
        if sid in files.regular and state == "obsolete" and running is not True:
            add(Problem("obsolete leftover", "obsolete segment still on disk", sid))
    return files


def _scan_all(
    st: FrameStore,
    report: VerifyReport,
    files: SegmentFiles,
    quick: bool,
    progress: Progress | None,
    unsettled: _Unsettled,
) -> dict[int, SegmentScan]:
    """Every record of every segment file: checksums, framing, seals. A file without a
    row is settled after the snapshot (``_settle``): its header is checked there."""
    rows = st.catalog.segments.rows()
    merged = st.catalog.segments.merged()  # their file headers name their source id
    tags = _StoreTags.of(st, merged)
    running = report.writer_running
    active = max(files.regular, default=None) if running else None
    scans: dict[int, SegmentScan] = {}
    total = len(files.regular)
    for i, (sid, path) in enumerate(sorted(files.regular.items())):
        try:
            scan = scans[sid] = scan_segment(path, sid, decode=not quick)
        except (FileNotFoundError, CorruptData) as e:  # replaced or removed since listed
            report.problems.append(Problem("bad path", f"{path.name}: {e}", sid))
            continue
        report.segments_checked += 1
        report.bytes_checked += scan.size
        report.records_checked += len(scan.records)
        report.frames_checked += scan.frames
        in_progress = bool(running) and sid == active
        if in_progress and scan.tail is not None:
            report.in_progress.append(
                f"segment {sid} is being written: {scan.size - scan.tail.offset} byte(s) after "
                "its last complete record"
            )
        # another store's segment that no merge brought in: one line says so (its header
        # naming another id follows from that)
        foreign = tags.foreign(scan)
        if sid not in rows:
            unsettled.rowless[sid] = scan.header_id
            if foreign:
                unsettled.foreign.add(sid)
        obsolete = rows.get(sid, ("", ""))[1] == "obsolete"
        header = merged.get(sid, sid) if sid in rows and not foreign else None
        _report_scan(report, scan, in_progress, obsolete, header)
        # a file without a row yet (a merge placing it, a writer's new one) is settled
        # after the snapshot; a merged one carries its source store's tag
        wrong_tag = tags.problem(scan) if sid in rows else None
        if wrong_tag is not None:
            report.problems.append(wrong_tag)
        if progress is not None:
            progress(i + 1, total)
    return scans


@dataclass(frozen=True)
class _StoreTags:
    """The store tags (file headers) a segment of this store may carry: its own, or for
    a merged segment the tag of a store merged in."""

    own: int  # 0: not checked (a published store: its manifest vouches for its files)
    merged: dict[int, int]  # merged segment -> the header id it was placed with
    merged_in: set[int] | None  # the stores merged in (None: merged before they were recorded)

    @classmethod
    def of(cls, st: FrameStore, merged: dict[int, int]) -> _StoreTags:
        # (a published store's catalogue has no store id; its manifest vouches for its files)
        own = 0 if st.published else store_tag(st.catalog.meta.store_id())
        listed = None if st.published else st.catalog.meta.get(MERGED_TAGS)
        return cls(own, merged, set(listed) if isinstance(listed, list) else None)

    def foreign(self, scan: SegmentScan) -> bool:
        """Another store's segment that no merge brought in."""
        return (
            bool(self.own)
            and scan.store_tag not in (0, self.own)
            and scan.segment not in self.merged
        )

    def problem(self, scan: SegmentScan) -> Problem | None:
        """What is wrong with a registered segment's tag, if anything."""
        if not self.own or scan.store_tag in (0, self.own):
            return None
        if scan.segment not in self.merged:
            return Problem("corrupt", FOREIGN_SEGMENT, scan.segment, 0)
        if self.merged_in is not None and scan.store_tag not in self.merged_in:
            return Problem("corrupt", NOT_MERGED_IN, scan.segment, 0)
        return None


def _report_scan(
    report: VerifyReport,
    scan: SegmentScan,
    in_progress: bool,
    obsolete: bool,
    header_id: int | None,
) -> None:
    """A segment's scan as problems; ``header_id`` None: its header is checked later."""
    add = report.problems.append
    sid = scan.segment
    if scan.header_error is not None:
        add(Problem(problem_kind(scan.header_error), str(scan.header_error), sid, 0))
        return
    if header_id is not None and scan.header_id != header_id:
        add(Problem("corrupt", f"file header names segment {scan.header_id}", sid, 0))
    for bad in scan.bad:
        add(Problem(problem_kind(bad.error), bad.error.detail, sid, bad.offset))
    tail = scan.tail
    if tail is not None and not (in_progress and problem_kind(tail.error) == "torn tail"):
        add(Problem(problem_kind(tail.error), tail.error.detail, sid, tail.offset))
    if scan.seal is None and not in_progress and not obsolete:
        add(Problem("unsealed", "segment has no seal record (run `framestore recover`)", sid))


def _settle(st: FrameStore, report: VerifyReport, unsettled: _Unsettled) -> None:
    """After the snapshot: look again at what it could not explain. A writer that holds
    the lock now (a merge or gc that started while verify ran) owns partial files and
    its unfinished journal; a file without a row is fine when the catalogue registered
    it since (with the header recorded for it), when a journal names it with the header
    it was placed for, or when a recorder holding the lock writes it under its own id."""
    add = report.problems.append
    running = st.writer_running() is True or report.writer_running is True
    # One snapshot for the three: read apart, a merge committing between them left its
    # placed segment neither registered nor journaled ("not merged in", seen under load).
    with st.catalog.connection.read_snapshot():
        rows = st.catalog.segments.rows()
        merged = st.catalog.segments.merged()
        journal = {
            new: (header, m.source_path)
            for m in st.catalog.merges.incomplete()
            for new, header in m.segments
        }
    for name in unsettled.partials:
        if running:
            report.in_progress.append(f"{name}: being written by the writer holding the lock")
        elif (segment_dir(st.root) / name).exists():
            add(Problem("partial leftover", f"{name}: left by an interrupted gc or merge"))
    for source in unsettled.merges:
        if running:
            report.in_progress.append(f"a merge from {source} is in progress")
        else:
            add(Problem("interrupted merge", f"merge of {source} did not finish "
                        "(run `framestore recover`, or the merge again)"))  # fmt: skip
    _settle_rowless(report, unsettled, running, rows, merged, journal)


def _settle_rowless(
    report: VerifyReport,
    unsettled: _Unsettled,
    running: bool,
    rows: dict,
    merged: dict[int, int],
    journal: dict[int, tuple[int, str]],
) -> None:
    """The files that had no row in the snapshot (``_settle``'s docstring)."""
    add = report.problems.append
    for sid, header in sorted(unsettled.rowless.items()):
        if sid in rows and header == merged.get(sid, sid):
            report.in_progress.append(f"segment {sid} was registered while verify ran")
        elif sid in journal and header == journal[sid][0]:
            if running:
                report.in_progress.append(
                    f"segment {sid} is being placed by a merge from {journal[sid][1]}"
                )
            # else: the "interrupted merge" problem names it (recover removes it)
        elif running and header == sid and sid > max(rows, default=0):
            continue  # a recorder's newest segment, not registered until it closes
        elif sid in unsettled.foreign:
            add(Problem("unexpected segment", f"{FOREIGN_SEGMENT}, not merged in", sid))
        else:
            add(Problem("unexpected segment", "file has no row in the segments table", sid))
            if header is not None and header != sid:
                add(Problem("corrupt", f"file header names segment {header}", sid, 0))


def _bad_region(scan: SegmentScan, off: int) -> BadRecord | None:
    for b in [*scan.bad, *([scan.tail] if scan.tail else [])]:
        if b.offset <= off < b.end:
            return b
    return None


def _pointer_problem(
    row: PointerRow, scans: dict[int, SegmentScan], files: SegmentFiles
) -> tuple[str, int, str] | None:
    """What is wrong with one frame pointer: ``(kind, offset or -1, detail)`` or None."""
    seg, off, slot = row.segment, row.offset, row.slot
    scan = scans.get(seg)
    if scan is None:
        why = "is not a regular file" if seg in files.irregular else "does not exist"
        return "dangling pointer", -1, f"segment {seg} {why}"
    header = scan.chunks.get(off)
    if header is None:
        if scan.header_error is not None:
            return problem_kind(scan.header_error), 0, "segment header unreadable"
        bad = _bad_region(scan, off)
        if bad is not None:
            return problem_kind(bad.error), bad.offset, f"frame unreadable: {bad.error.detail}"
        return "dangling pointer", off, "no chunk record starts at this offset"
    if slot is None or not 0 <= slot < header.count:
        return "slot out of range", off, f"slot {slot} of a {header.count}-frame chunk"
    want = format_shape(header.shape)
    if row.shape is not None and row.shape != want:
        return "shape mismatch", off, f"row says {row.shape}, chunk holds {want}"
    if header.stream_key != row.expected_key or header.frame_keys[slot] != row.step:
        return (
            "key mismatch",
            off,
            f"chunk frame is episode {header.stream_key} step {header.frame_keys[slot]}",
        )
    # a stream's frame is in a chunk of its own stream, or is the step's render frame
    # (stored once for both); a render pointer never points into another stream's chunk
    if header.stream_index not in (row.stream, 0):
        return (
            "stream mismatch",
            off,
            f"chunk is of stream index {header.stream_index}, the row of stream {row.stream}",
        )
    return None


def _check_pointers(
    st: FrameStore, report: VerifyReport, scans: dict[int, SegmentScan], files: SegmentFiles
) -> None:
    """Every live frame pointer resolves to the frame of its own episode and step.
    Problems are grouped per (kind, segment, offset, episode), naming every step."""
    affected: dict[tuple[str, int, int, int], list[int]] = {}
    details: dict[tuple[str, int, int, int], str] = {}
    for row in st.catalog.pointers.iter_live():
        report.steps_checked += 1
        if not row.valid:
            continue  # reported by the value checks ("bad value")
        found = _pointer_problem(row, scans, files)
        if found is None:
            continue
        kind, off, detail = found
        key = (kind, row.segment, off, row.episode)
        affected.setdefault(key, []).append(row.step)
        details.setdefault(key, detail)
    # a corrupt record nothing points at is still reported once (its data is gone);
    # one that steps point at is replaced by the same problem naming them
    pointed = {(seg, off) for (_k, seg, off, _e) in affected}
    report.problems[:] = [
        p
        for p in report.problems
        if not (p.kind in ("checksum", "corrupt", "torn tail") and (p.segment, p.offset) in pointed)
    ]
    for (kind, seg, off, ep), steps in affected.items():
        report.problems.append(
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


def _check_episodes(st: FrameStore, report: VerifyReport) -> None:
    add = report.problems.append
    for row in st.catalog.stats.episode_row_counts():
        report.episodes_checked += 1
        if row.status == "complete" and row.steps is not None and row.steps != row.rows:
            add(
                Problem(
                    "step count",
                    f"episode says {row.steps} steps but has {row.rows} rows",
                    episode=row.episode,
                )
            )
        if row.status == "recording" and report.writer_running is False:
            add(
                Problem(
                    "stale recording",
                    "episode left 'recording' and no writer holds the store "
                    "(run `framestore recover`)",
                    episode=row.episode,
                )
            )
