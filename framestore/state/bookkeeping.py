"""What maintenance does to a store beside reading it: functions taking a store
(a ``StoreView``: ``FrameStore`` is one).

``gc`` (``compaction`` and ``tools.gc``), ``recover``, ``merge`` and the ``Recorder``
share these; a user reading or recording never needs them, so they are not members of
``FrameStore``:

- ``writer_lock(store)``: hold the store's one-writer lock;
- ``next_ids(store)``: the run and episode ids a new recording starts from;
- ``sync_segments(store)``: reconcile the catalogue's ``segments`` table with the files;
- ``delete_segment_files(store, ids)``: delete segment files nothing points into;
- ``delete_episodes_noted(store, ids)``: ``rm``'s commit, with its tombstone (a
  ``DELETED`` record in a note segment, docs/FORMAT.md) written first; its two steps
  (``plan_tombstone``, ``commit_deletion``) for a recorder whose writer writes the
  tombstone;
- ``chunk_bytes``, ``live_bytes_by_segment``, ``file_bytes``, ``segment_state``: sizes
  and states of segments as the files and the catalogue tell them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._format import RecordType, pack_notes, record_extent, store_tag
from ..catalog import COMPACTION_OUTPUTS
from ..disk._lock import StoreLock
from ..disk.scan import SegmentOutline, scan_segment, segment_outline
from ..disk.segments import (
    checked_segment_dir,
    is_note_segment,
    is_sealed,
    list_segment_ids,
    next_segment_id,
    open_segment,
    segment_files,
    segment_path,
    write_note_segment,
)
from ..errors import CorruptData, InvalidInput, UnsafeStore
from ..files import fsync_dir
from .view import StoreView

if TYPE_CHECKING:
    from ..catalog import Catalog

__all__ = [
    "Tombstone",
    "chunk_bytes",
    "commit_deletion",
    "delete_episodes_noted",
    "delete_segment_files",
    "described_segments",
    "free_segment_id",
    "file_bytes",
    "live_bytes_by_segment",
    "next_ids",
    "plan_tombstone",
    "segment_outlines",
    "segment_state",
    "sync_segments",
    "writer_lock",
]

#: Stream keys at or above this are not taken as episode ids (SQLite integers, with room).
_MAX_NEW_ID = 2**62


def _writable_catalog(store: StoreView) -> Catalog:
    """The store's catalogue for a change: ``StoreClosed`` after ``close()``,
    ``InvalidInput`` when the store is open read-only."""
    catalog = store.catalog
    if store.readonly:
        raise InvalidInput("store is open read-only; this operation changes it")
    return catalog


@contextmanager
def writer_lock(store: StoreView) -> Iterator[None]:
    """Hold the store's one-writer lock (``StoreLocked`` if a recorder or another
    maintenance command holds it)."""
    _writable_catalog(store)
    lock = StoreLock(store.root).acquire()
    try:
        yield
    finally:
        lock.release()


def next_ids(store: StoreView) -> tuple[int, int]:
    """``(run id, episode id)`` for a new recording: above every id the catalogue
    holds and every episode id (chunk stream key) in a segment the catalogue has not
    registered, i.e. frames of a writer that died before its rows committed. Call with
    the writer lock held. Registered segments need no look: a segment is registered
    only once its frames have rows (``gc`` refuses unregistered ones)."""
    run, episode = store.catalog.episodes.next_ids()
    rows = store.catalog.segments.rows()
    for sid, path in segment_files(store.root).regular.items():
        if sid in rows:
            continue
        try:
            scan = scan_segment(path, sid)
        except (OSError, CorruptData):
            continue
        keys = (h.stream_key for h in scan.chunks.values() if h.stream_key < _MAX_NEW_ID)
        episode = max(episode, max(keys, default=0) + 1)
    return run, episode


def chunk_bytes(store: StoreView, segment: int, offsets: Iterable[int]) -> int:
    """Total bytes of the records starting at ``offsets`` in one segment, read from
    their headers (the file is opened once). A missing file or offset counts 0."""
    source = store.reader.source
    if source is not None:
        return sum(source.record_bytes(segment, off) for off in offsets)
    try:
        with open_segment(segment_path(store.root, segment), segment) as fp:
            return sum(record_extent(fp, off) for off in offsets)
    except (FileNotFoundError, CorruptData, UnsafeStore):  # missing, a link, a FIFO...
        return 0


def live_bytes_by_segment(store: StoreView) -> dict[int, int]:
    """Bytes of chunk records referenced by live (not deleted) episodes, per segment."""
    return {
        seg: chunk_bytes(store, seg, offs)
        for seg, offs in store.catalog.pointers.live_chunks().items()
    }


def file_bytes(store: StoreView) -> dict[str, int]:
    """Bytes on disk: ``segments`` (files), ``database``, ``wal``, ``shm``."""

    def size(path: str | os.PathLike) -> int:
        try:
            return os.lstat(path).st_size
        except FileNotFoundError:
            return 0

    db_path = store.db_path
    return {
        "segments": sum(size(segment_path(store.root, s)) for s in list_segment_ids(store.root)),
        "database": size(db_path),
        "wal": size(f"{db_path}-wal"),
        "shm": size(f"{db_path}-shm"),
    }


def segment_state(store: StoreView, segment: int, marks: dict[int, str] | None = None) -> str:
    """``obsolete``/``compacting`` as the catalogue marks it, else ``sealed`` or
    ``active`` as the file says."""
    mark = (store.catalog.segments.states() if marks is None else marks).get(segment)
    if mark in ("obsolete", "compacting"):
        return mark
    return "sealed" if is_sealed(segment_path(store.root, segment)) else "active"


def sync_segments(store: StoreView, *, notes: bool = False) -> None:
    """Reconcile the catalogue's ``segments`` table with the files in ``segments/``.

    Files are the truth for existence and size (a sealed segment ends with a SEAL
    record); the catalogue for ``obsolete``/``compacting`` marks. A note segment the
    catalogue has no row for is left so unless ``notes`` (``recover``, once it applied
    them): ``rm`` and ``merge`` register theirs in their own commit, so such a note is a
    tombstone whose commit did not happen (a killed or failed ``rm``), and without a row
    verify flags it and gc refuses until recover finishes that rm."""
    catalog = _writable_catalog(store)
    live = live_bytes_by_segment(store)
    marks = catalog.segments.states()
    rows = catalog.segments.rows() if not notes else {}
    files = segment_files(store.root)
    on_disk = list(files.regular) + list(files.irregular)
    with store.transaction() as cat:
        for sid, path in files.regular.items():
            if not notes and sid not in rows and is_note_segment(path, sid):
                continue
            try:
                size = os.lstat(path).st_size
            except FileNotFoundError:
                continue
            cat.segments.record(sid, segment_state(store, sid, marks), size, live.get(sid, 0))
        gone = set(marks) - set(on_disk)
        cat.segments.forget(s for s in gone if marks[s] == "obsolete")


def delete_segment_files(store: StoreView, segments: Iterable[int]) -> None:
    """Delete segment files (after the catalogue stopped pointing into them)."""
    ids = list(segments)
    store.reader.forget(ids)  # our own descriptors: let the kernel free the space
    directory = checked_segment_dir(store.root)
    for sid in ids:
        segment_path(store.root, sid).unlink(missing_ok=True)
    fsync_dir(directory)


def free_segment_id(store: StoreView) -> int:
    """The first segment id above every id in use, as a file, reserved by the merge
    journal or reserved by a compaction that has not finished (``compaction.outputs``:
    gc removes those ids as leftovers, so a segment placed there would be deleted with
    them) (call with the writer lock held): a merge's or an ``rm``'s new segment."""
    journaled = [new for m in store.catalog.merges.records() for new, _src in m.segments]
    reserved = store.catalog.meta.get(COMPACTION_OUTPUTS)
    compacting = [i for i in reserved if isinstance(i, int)] if isinstance(reserved, list) else []
    return max([next_segment_id(store.root), *(i + 1 for i in journaled + compacting)])


def segment_outlines(root) -> dict[int, SegmentOutline | None]:
    """``segment_outline`` of every segment file (None: its records cannot all be
    walked); files whose header is unreadable hold no record anyone reads: left out."""
    out: dict[int, SegmentOutline | None] = {}
    for sid, path in segment_files(root).regular.items():
        try:
            out[sid] = segment_outline(path, sid)
        except (OSError, CorruptData):
            continue
    return out


def described_segments(
    root, entries: list[dict], outlines: dict[int, SegmentOutline | None] | None = None
) -> set[int]:
    """The segments holding an ``EPISODE`` record of one of the episodes a tombstone's
    ``entries`` name (the same stream key, run start and episode start), and the
    segments whose records cannot all be walked (they may hold one). Reads only record
    headers, chunk heads and ``EPISODE`` payloads, never frames (``segment_outline``;
    ``outlines``: those of ``segment_outlines``, read once for several tombstones)."""
    wanted = {(e.get("stream_key"), e.get("run_created"), e.get("started")) for e in entries}
    if outlines is None:
        outlines = segment_outlines(root)
    return {
        sid
        for sid, outline in outlines.items()
        if outline is None or any(record_identity(m) in wanted for m in outline.episodes)
    }


def record_identity(meta: dict) -> tuple:
    """An ``EPISODE`` record's stream key, run start and episode start: which recording
    it describes (a stream key alone can be two recordings')."""
    run, ep = meta.get("run"), meta.get("episode")
    return (
        meta.get("stream_key"),
        run.get("created") if isinstance(run, dict) else None,
        ep.get("started") if isinstance(ep, dict) else None,
    )


@dataclass(frozen=True)
class Tombstone:
    """An ``rm``'s tombstone before it is written (``plan_tombstone``): the episodes,
    their ``DELETED`` records, the segments holding their frames (whose live bytes the
    commit recomputes) and the lowest segment id the note segment may take."""

    episode_ids: list[int]
    records: list[bytes]
    held: frozenset[int]
    first_id: int


def plan_tombstone(store: StoreView, episode_ids: list[int]) -> Tombstone:
    """The tombstone of ``episode_ids`` (call with the writer lock held, by this process
    or by its recorder: ``first_id`` is above every id in use or reserved). Its records
    name each episode's id, stream key, run and start times, its row's end fields, and
    the segments that hold its records: those its frame pointers name and every segment
    with an ``EPISODE`` record of it (``described_segments``: a version-3 segment
    holding any record of an episode holds its ``EPISODE`` record, so its chunks without
    frames and its ``EPISODE_END``, however far after its last frame, are covered; a
    segment being written whose tail cannot be walked is listed): ``gc`` drops the
    tombstone once none of them is left. The episodes must be finished: their rows all
    committed."""
    catalog = _writable_catalog(store)
    entries = catalog.recovery.tombstone_entries(episode_ids)
    held = catalog.recovery.episode_segments(episode_ids)
    listed = sorted(held | described_segments(store.root, entries))
    store_id = catalog.meta.store_id()
    fields = {"store_id": store_id, "deleted": time.time(), "segments": listed,
              "episodes": entries}  # fmt: skip
    records = pack_notes(RecordType.DELETED, fields, "episodes")
    return Tombstone(list(episode_ids), records, frozenset(held), free_segment_id(store))


def commit_deletion(store: StoreView, tomb: Tombstone, segment_id: int, size: int) -> None:
    """``rm``'s SQLite commit, once its tombstone is on disk as note segment
    ``segment_id`` of ``size`` bytes: ONE transaction marks the episodes deleted,
    registers the note segment and recomputes the live bytes of the segments that held
    them."""
    with store.transaction() as cat:
        cat.episodes.mark_deleted(tomb.episode_ids)
        cat.segments.record(segment_id, "sealed", size)
        # what gc and `info` read: the held segments' live bytes without these episodes
        cat.segments.set_live_bytes(
            {s: chunk_bytes(store, s, cat.pointers.live_chunk_offsets(s)) for s in tomb.held}
        )


def delete_episodes_noted(store: StoreView, episode_ids: list[int]) -> int:
    """``rm``'s commit (call with the writer lock held; docs/RELIABILITY.md, "The
    catalogue itself lost", Deletions). Returns the note segment's id.

    1. A note segment holding ``DELETED`` records (a tombstone, ``plan_tombstone``) for
       the episodes is written: ``.partial``, fsynced, renamed, directory fsynced.
    2. ONE transaction marks the episodes deleted and registers the note segment
       (``commit_deletion``).

    A crash between 1 and 2 leaves a tombstone the catalogue does not know: the rm
    happened (its commit point is the tombstone on disk); ``recover`` finishes it, and
    ``gc`` refuses to run until then (a segment without a row).

    While a recorder holds the store, its writer writes the tombstone instead (the one
    process that may write segments, and the one that hands out segment ids):
    ``Recorder.delete_episodes`` runs the same two steps through it.
    """
    tomb = plan_tombstone(store, episode_ids)
    store_id = store.catalog.meta.store_id()
    size = write_note_segment(store.root, tomb.first_id, tomb.records, store_tag(store_id))
    commit_deletion(store, tomb, tomb.first_id, size)
    return tomb.first_id
