"""``framestore gc``: compact segments and reclaim the space of deleted episodes.

Crash safety comes from the order of the steps, each of which leaves a readable store:

1. ``copied``: the live ``CHUNK`` records of each victim segment are copied byte for byte
   (CRC checked, never recompressed) into new ``seg-NNNNNN.fseg.partial`` files, sealed
   and fsynced. Nothing points at them yet.
2. ``renamed``: each partial is ``os.replace``d to its final name, then the directory is
   fsynced. Still nothing points at them: a crash here leaves sealed segments without
   references, which the next ``gc`` deletes as fully dead (``recover`` deletes them as
   duplicates).
3. ``repointed``: ONE SQLite transaction moves every step's frame pointer to the copy,
   deletes the step rows of deleted episodes and marks the old segments ``obsolete``.
   Before it commits, readers see the old pointers; after it, the new ones. Both resolve.
4. ``deleted``: the old files are removed (a reader holding an open descriptor keeps
   reading it until it asks the database again). Leftover ``obsolete`` files are
   removed by the next ``gc`` or ``recover``.
5. ``vacuumed``: the catalogue is synced and ``VACUUM`` gives the database's free pages
   back (it cannot run inside a transaction).

Deleted episodes keep their ``episodes`` row (status ``deleted``) while their step rows
go: the row is what tells ``recover`` never to resurrect their frames, and it keeps run
statistics and episode ids stable.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from framestore import FrameStore
from framestore._catalog import is_sealed, record_bytes, sync_segments
from framestore._format import (
    MAX_RECORD_BYTES,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    RECORD_OVERHEAD,
    ChunkHeader,
    RecordType,
    read_file_header,
    read_record,
)
from framestore._lock import StoreLock
from framestore._segments import (
    PARTIAL_SUFFIX,
    SegmentWriter,
    fsync_dir,
    list_partials,
    list_segment_ids,
    parse_segment_name,
    relative_segment_path,
    segment_path,
)
from framestore.errors import CorruptRecord, FrameStoreError, InvalidInput, RecordTooLarge

__all__ = ["GcReport", "collect", "PHASES"]

PHASES = ("copied", "renamed", "repointed", "deleted", "vacuumed")
_SEAL_BYTES = RECORD_OVERHEAD + 28

Progress = Callable[[int, int], None]  # (bytes done, bytes total)
Hook = Callable[[str], None]


@dataclass
class GcReport:
    """What ``collect`` did (or, with ``dry_run``, would do).

    ``segments_rewritten`` had live chunks copied out; ``segments_deleted`` lists every
    segment file removed (rewritten ones, fully dead ones and leftovers of an earlier
    crashed ``gc``); ``segments_written`` are the new segments holding the copies.
    Byte counts for the database include its WAL file.
    """

    dry_run: bool
    threshold: float
    segments_rewritten: list[int] = field(default_factory=list)
    segments_deleted: list[int] = field(default_factory=list)
    segments_written: list[int] = field(default_factory=list)
    segment_bytes_before: int = 0
    segment_bytes_after: int = 0
    db_bytes_before: int = 0
    db_bytes_after: int = 0
    bytes_copied: int = 0
    steps_repointed: int = 0
    step_rows_removed: int = 0
    partials_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def segment_bytes_reclaimed(self) -> int:
        return self.segment_bytes_before - self.segment_bytes_after

    @property
    def db_bytes_reclaimed(self) -> int:
        return self.db_bytes_before - self.db_bytes_after

    @property
    def bytes_before(self) -> int:
        return self.segment_bytes_before + self.db_bytes_before

    @property
    def bytes_after(self) -> int:
        return self.segment_bytes_after + self.db_bytes_after

    @property
    def bytes_reclaimed(self) -> int:
        return self.bytes_before - self.bytes_after

    def as_dict(self) -> dict:
        d = asdict(self)
        d["segment_bytes_reclaimed"] = self.segment_bytes_reclaimed
        d["db_bytes_reclaimed"] = self.db_bytes_reclaimed
        d["bytes_reclaimed"] = self.bytes_reclaimed
        return d


# --------------------------------------------------------------------- shared helpers
@contextmanager
def opened(store_or_path, *, readonly: bool):
    """Yield a ``FrameStore``: the one given, or one opened (and closed) here."""
    if isinstance(store_or_path, FrameStore):
        if not readonly and store_or_path.readonly:
            raise InvalidInput("store is open read-only; this operation changes it")
        yield store_or_path
        return
    store = FrameStore.open(store_or_path, create=False, readonly=readonly)
    try:
        yield store
    finally:
        store.close()


def db_bytes(store) -> int:
    """Bytes of the database file and its WAL."""
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.stat(str(store.db_path) + suffix).st_size
        except FileNotFoundError:
            pass
    return total


def segment_files_bytes(root: Path) -> int:
    total = 0
    for sid in list_segment_ids(root):
        try:
            total += segment_path(root, sid).stat().st_size
        except FileNotFoundError:
            pass
    return total


def _call(fn, *args) -> None:
    if fn is not None:
        fn(*args)


def _query(store, sql: str, params: Iterable = ()) -> list[tuple]:
    with store._db_lock:
        return store.db.conn.execute(sql, tuple(params)).fetchall()


def read_raw_record(fp, segment: int, offset: int) -> tuple[bytes, ChunkHeader]:
    """The CHUNK record at ``offset`` exactly as stored, after checking its CRC."""
    fp.seek(offset)
    head = fp.read(RECORD_HEADER_SIZE)
    if len(head) == RECORD_HEADER_SIZE:
        length = RECORD_HEADER.unpack(head)[2]
        if length > MAX_RECORD_BYTES:
            raise RecordTooLarge(segment, offset, length, MAX_RECORD_BYTES)
        raw = head + fp.read(length + 4)
    else:
        raw = head
    rec = read_record(io.BytesIO(raw), 0, segment=segment)  # raises on a bad CRC or torn data
    if rec is None or rec.type != RecordType.CHUNK:
        raise CorruptRecord(segment, offset, "frame pointer does not point at a chunk record")
    return raw, ChunkHeader.unpack(rec.payload, segment=segment, offset=offset)


def next_segment_id(root: Path) -> int:
    """One above every segment id in use, ``.partial`` files included."""
    ids = list_segment_ids(root)
    for p in list_partials(root):
        sid = parse_segment_name(p.name.removesuffix(PARTIAL_SUFFIX))
        if sid is not None:
            ids.append(sid)
    return max(ids, default=0) + 1


def remove_partials(root: Path) -> list[str]:
    """Delete ``.partial`` files (only compaction writes them; call with the lock held)."""
    removed = []
    for p in list_partials(root):
        p.unlink(missing_ok=True)
        removed.append(p.name)
    if removed:
        fsync_dir(root / "segments")
    return removed


def remove_obsolete(store) -> list[int]:
    """Delete files whose catalogue row says ``obsolete`` (left by a crashed ``gc`` after
    its transaction committed). A file some step row still points at is kept and its
    mark cleared, so it can never leave a dangling pointer."""
    root = Path(store.root)
    removed = []
    for (sid,) in _query(store, "SELECT id FROM segments WHERE state = 'obsolete'"):
        path = segment_path(root, sid)
        (n,) = _query(store, "SELECT COUNT(*) FROM steps WHERE frame_segment = ?", [sid])[0]
        if n:
            with store._db_lock, store.db.atomic():
                store.db.conn.execute("UPDATE segments SET state = 'sealed' WHERE id = ?", (sid,))
            continue
        if path.exists() or path.is_symlink():
            store.reader.forget([sid])
            path.unlink()
            removed.append(sid)
    if removed:
        fsync_dir(root / "segments")
    return removed


# --------------------------------------------------------------------- planning
_LIVE = "(e.status IS NULL OR e.status != 'deleted')"  # orphan rows count as live: never drop them


def live_chunk_offsets(store, segment: int, *, include_deleted: bool = False) -> list[int]:
    """Offsets of the chunk records of ``segment`` that step rows point at."""
    cond = "1" if include_deleted else _LIVE
    rows = _query(
        store,
        "SELECT DISTINCT s.frame_offset FROM steps s LEFT JOIN episodes e ON e.id = s.episode_id "
        f"WHERE s.frame_segment = ? AND {cond} ORDER BY s.frame_offset",
        [segment],
    )
    return [r[0] for r in rows]


@dataclass
class _Victim:
    segment: int
    size: int
    live_offsets: list[int]
    live_bytes: int


def _plan(store, threshold: float) -> list[_Victim]:
    root = Path(store.root)
    states = dict(_query(store, "SELECT id, state FROM segments"))
    victims = []
    for sid in list_segment_ids(root):
        path = segment_path(root, sid)
        if path.is_symlink() or states.get(sid) in ("obsolete", "compacting"):
            continue
        if not is_sealed(path):  # the active segment of a writer, or one needing recover
            continue
        size = path.stat().st_size
        offsets = live_chunk_offsets(store, sid)
        live = record_bytes(root, sid, offsets)
        if not offsets or live < threshold * size:
            victims.append(_Victim(sid, size, offsets, live))
    return victims


# --------------------------------------------------------------------- compaction
def _copy(
    store, victims: list[_Victim], target_bytes: int, progress: Progress | None
) -> tuple[dict[tuple[int, int], tuple[int, int]], list[tuple[SegmentWriter, Path]]]:
    """Copy live chunks into new sealed ``.partial`` segments. On error nothing is left."""
    root = Path(store.root)
    next_id = next_segment_id(root)
    mapping: dict[tuple[int, int], tuple[int, int]] = {}
    outputs: list[tuple[SegmentWriter, Path]] = []
    writer: SegmentWriter | None = None
    total = sum(v.live_bytes for v in victims)
    done = 0

    def finish() -> None:
        nonlocal writer
        if writer is not None:
            writer.seal()
            writer.close()
            writer = None

    try:
        for v in victims:
            if not v.live_offsets:
                continue
            with open(segment_path(root, v.segment), "rb") as fp:
                read_file_header(fp, v.segment)
                for off in v.live_offsets:
                    raw, header = read_raw_record(fp, v.segment, off)
                    if (
                        writer is not None
                        and not writer.empty
                        and writer.size + len(raw) + _SEAL_BYTES > target_bytes
                    ):
                        finish()
                    if writer is None:
                        final = segment_path(root, next_id)
                        writer = SegmentWriter(
                            final.with_name(final.name + PARTIAL_SUFFIX), next_id, final_path=final
                        )
                        outputs.append((writer, final))
                        next_id += 1
                    mapping[(v.segment, off)] = (
                        writer.segment_id,
                        writer.append(raw, frames=header.count),
                    )
                    done += len(raw)
                    _call(progress, done, total)
        finish()
    except BaseException:
        for w, _final in outputs:
            w.discard()
        raise
    return mapping, outputs


def compact(
    store,
    victims: list[_Victim],
    *,
    drop_deleted_rows: bool,
    report: GcReport,
    progress: Progress | None = None,
    hook: Hook | None = None,
) -> None:
    """Copy the victims' live chunks out, repoint, delete the victims (steps 1-4 above).

    With ``drop_deleted_rows`` the step rows of every deleted episode go in the same
    transaction (gc); without it (recover) the chunks they point at are copied too.
    """
    root = Path(store.root)
    sizes = [v.size for v in victims]
    sealed_sizes = [
        segment_path(root, s).stat().st_size
        for s in list_segment_ids(root)
        if is_sealed(segment_path(root, s))
    ]
    target = max(sealed_sizes + sizes + [1 << 20])
    mapping, outputs = _copy(store, victims, target, progress)
    _call(hook, "copied")

    for writer, final in outputs:
        os.replace(writer.path, final)
    fsync_dir(root / "segments")
    _call(hook, "renamed")

    ids = [v.segment for v in victims]
    marks = ",".join("?" * len(ids))
    db = store.db
    with store._db_lock, db.atomic():
        cur = db.conn.executemany(
            "UPDATE steps SET frame_segment = ?, frame_offset = ? "
            "WHERE frame_segment = ? AND frame_offset = ?",
            [(ns, no, os_, oo) for (os_, oo), (ns, no) in mapping.items()],
        )
        repointed = max(cur.rowcount, 0)
        removed = 0
        if drop_deleted_rows:
            cur = db.conn.execute(
                "DELETE FROM steps WHERE episode_id IN "
                "(SELECT id FROM episodes WHERE status = 'deleted')"
            )
            removed = max(cur.rowcount, 0)
        if ids:
            (left,) = db.conn.execute(
                f"SELECT COUNT(*) FROM steps WHERE frame_segment IN ({marks})", ids
            ).fetchone()
            if left:  # never commit a pointer into a file about to be deleted
                raise FrameStoreError(
                    f"gc: {left} step rows still point into segments being removed; "
                    "nothing was changed (run `framestore verify`)"
                )
            db.conn.executemany(
                "UPDATE segments SET state = 'obsolete' WHERE id = ?", [(i,) for i in ids]
            )
        now = time.time()
        for writer, _final in outputs:
            db.conn.execute(
                "INSERT INTO segments (id, path, state, bytes, live_bytes, created) "
                "VALUES (?, ?, 'sealed', ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "path = excluded.path, state = excluded.state, bytes = excluded.bytes",
                (writer.segment_id, relative_segment_path(writer.segment_id), writer.size, 0, now),
            )
    report.steps_repointed += repointed
    report.step_rows_removed += removed
    report.segments_rewritten += [v.segment for v in victims if v.live_offsets]
    report.segments_written += [w.segment_id for w, _ in outputs]
    report.bytes_copied += sum(w.size for w, _ in outputs)
    _call(hook, "repointed")

    store.reader.forget(ids)  # our own descriptors: let the kernel free the space
    for sid in ids:
        segment_path(root, sid).unlink(missing_ok=True)
    fsync_dir(root / "segments")
    report.segments_deleted += ids
    _call(hook, "deleted")


def _stale_recordings(store) -> list[int]:
    return [r[0] for r in _query(store, "SELECT id FROM episodes WHERE status = 'recording'")]


# --------------------------------------------------------------------- entry point
def collect(
    store_path_or_store,
    *,
    threshold: float = 0.5,
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
        root = Path(store.root)
        report.segment_bytes_before = segment_files_bytes(root)
        report.db_bytes_before = report.db_bytes_after = db_bytes(store)
        if dry_run:
            _dry_run(store, report, threshold)
        else:
            lock = StoreLock(root).acquire()
            try:
                _run(store, report, threshold, progress, _hook)
            finally:
                lock.release()
            report.db_bytes_after = db_bytes(store)
        report.segment_bytes_after = (
            report.segment_bytes_after if dry_run else segment_files_bytes(root)
        )
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _dry_run(store, report: GcReport, threshold: float) -> None:
    root = Path(store.root)
    report.partials_removed = [p.name for p in list_partials(root)]
    obsolete = [
        sid
        for (sid,) in _query(store, "SELECT id FROM segments WHERE state = 'obsolete'")
        if segment_path(root, sid).exists()
    ]
    victims = _plan(store, threshold)
    report.segments_rewritten = [v.segment for v in victims if v.live_offsets]
    report.segments_deleted = obsolete + [v.segment for v in victims]
    live = sum(v.live_bytes for v in victims)
    n_out = 0
    if live:
        sealed = [segment_path(root, s) for s in list_segment_ids(root)]
        target = max([p.stat().st_size for p in sealed if is_sealed(p)] + [1 << 20])
        n_out = -(-live // max(1, target - 24 - _SEAL_BYTES))
    report.bytes_copied = live + n_out * (24 + _SEAL_BYTES)
    removed = sum(segment_path(root, s).stat().st_size for s in report.segments_deleted)
    report.segment_bytes_after = report.segment_bytes_before - removed + report.bytes_copied
    for v in victims:
        report.steps_repointed += _query(
            store,
            "SELECT COUNT(*) FROM steps s LEFT JOIN episodes e ON e.id = s.episode_id "
            f"WHERE s.frame_segment = ? AND {_LIVE}",
            [v.segment],
        )[0][0]
    report.step_rows_removed = _query(
        store,
        "SELECT COUNT(*) FROM steps WHERE episode_id IN "
        "(SELECT id FROM episodes WHERE status = 'deleted')",
    )[0][0]


def _run(store, report: GcReport, threshold: float, progress, hook) -> None:
    stale = _stale_recordings(store)
    if stale:
        raise InvalidInput(
            f"episode {stale[0]} was left 'recording' by a writer that stopped; its frames "
            "may have no rows yet. Run `framestore recover` first"
        )
    root = Path(store.root)
    report.partials_removed = remove_partials(root)
    report.segments_deleted += remove_obsolete(store)
    sync_segments(store)
    victims = _plan(store, threshold)
    compact(store, victims, drop_deleted_rows=True, report=report, progress=progress, hook=hook)
    sync_segments(store)  # adds the new segments, drops the rows of deleted files
    with store._db_lock:
        store.db.vacuum()
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    _call(hook, "vacuumed")
