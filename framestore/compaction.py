"""Moving live chunks into new segments, crash-safely: what ``gc`` and ``recover`` share.

The order of the steps is the safety argument; each leaves a readable store:

1. ``copied``: the live ``CHUNK`` records of each victim segment are copied (CRC checked,
   never recompressed; records of an older format version get the current head) into new
   ``seg-NNNNNN.fseg.partial`` files, sealed and fsynced. Nothing points at them yet.
   Before each new file is created its id is added to the ``meta`` key
   ``compaction.outputs`` (committed): whatever happens next, the store knows which
   unregistered segments are copies it may delete.
2. ``renamed``: each partial is ``os.replace``d to its final name, then the directory is
   fsynced. Still nothing points at them: a crash here leaves sealed copies without
   references, listed in ``compaction.outputs``, which the next ``gc`` or ``recover``
   deletes (``remove_leftover_outputs``).
3. ``repointed``: ONE SQLite transaction moves every step's frame pointer to the copy,
   (for ``gc``) deletes the step rows of deleted episodes, marks the old segments
   ``obsolete``, registers the copies and clears ``compaction.outputs``. Before it
   commits, readers see the old pointers; after it, the new ones. Both resolve.
4. ``deleted``: the old files are removed (a reader holding an open descriptor keeps
   reading it until it asks the database again). Leftover ``obsolete`` files are
   removed by the next ``gc`` or ``recover`` (``remove_obsolete``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ._format import SEAL_RECORD_SIZE, rekeyed_chunk_record
from .catalog import COMPACTION_OUTPUTS, Catalog
from .errors import FrameStoreError
from .files import fsync_dir
from .segments import (
    SegmentWriter,
    checked_segment_dir,
    is_sealed,
    next_segment_id,
    open_segment,
    partial_path,
    read_chunk_record,
    segment_files,
    segment_path,
    segment_version,
)
from .store import FrameStore

__all__ = [
    "PHASES",
    "Compaction",
    "Victim",
    "compact",
    "remove_leftover_outputs",
    "remove_obsolete",
]

PHASES = ("copied", "renamed", "repointed", "deleted")

Progress = Callable[[int, int], None]  # (bytes done, bytes total)
Hook = Callable[[str], None]  # called with each phase name once it is done
Moves = dict[tuple[int, int], tuple[int, int]]  # (segment, offset) -> new (segment, offset)
InRepoint = Callable[[Catalog, Moves], None]  # more changes for the repoint transaction


@dataclass
class Victim:
    """A segment to empty: the offsets of its chunks that must be kept.

    ``rekey`` maps some of those offsets to a new stream key: the chunk is copied under
    that episode id (``recover``, for frames whose id another recording took)."""

    segment: int
    size: int
    live_offsets: list[int]
    live_bytes: int
    rekey: dict[int, int] = field(default_factory=dict)


@dataclass
class Compaction:
    """What ``compact`` did."""

    segments_rewritten: list[int] = field(default_factory=list)  # had live chunks copied
    segments_written: list[int] = field(default_factory=list)  # the new segments
    segments_deleted: list[int] = field(default_factory=list)
    bytes_copied: int = 0
    steps_repointed: int = 0
    step_rows_removed: int = 0


def _call(fn: Callable | None, *args: object) -> None:
    if fn is not None:
        fn(*args)


def target_segment_bytes(store: FrameStore, victims: list[Victim]) -> int:
    """How big each new segment may grow: the largest sealed segment (at least 1 MiB)."""
    sealed = [
        path.stat().st_size
        for path in segment_files(store.root).regular.values()
        if is_sealed(path)
    ]
    return max(sealed + [v.size for v in victims] + [1 << 20])


def _copy(
    store: FrameStore, victims: list[Victim], target_bytes: int, progress: Progress | None
) -> tuple[dict[tuple[int, int], tuple[int, int]], list[SegmentWriter]]:
    """Copy live chunks into new sealed ``.partial`` segments. On error nothing is left."""
    next_id = next_segment_id(store.root)
    checked_segment_dir(store.root)
    moves: dict[tuple[int, int], tuple[int, int]] = {}
    outputs: list[SegmentWriter] = []
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
            with open_segment(segment_path(store.root, v.segment), v.segment) as fp:
                version = segment_version(fp, v.segment)
                for off in v.live_offsets:
                    raw, header = read_chunk_record(fp, v.segment, off, version=version)
                    if off in v.rekey:
                        raw = rekeyed_chunk_record(raw, v.rekey[off])
                    full = writer is not None and (
                        writer.size + len(raw) + SEAL_RECORD_SIZE > target_bytes
                    )
                    if writer is not None and not writer.empty and full:
                        finish()
                    if writer is None:
                        _announce_output(store, next_id, outputs)
                        writer = SegmentWriter.partial(store.root, next_id)
                        outputs.append(writer)
                        next_id += 1
                    moves[(v.segment, off)] = (
                        writer.segment_id,
                        writer.append(raw, frames=header.count),
                    )
                    done += len(raw)
                    _call(progress, done, total)
        finish()
    except BaseException:
        for w in outputs:
            w.discard()
        store.catalog.meta_set(COMPACTION_OUTPUTS, None)
        raise
    return moves, outputs


def _announce_output(store: FrameStore, segment_id: int, outputs: list[SegmentWriter]) -> None:
    """Commit ``segment_id`` to ``compaction.outputs`` before its file exists."""
    ids = [w.segment_id for w in outputs] + [segment_id]
    store.catalog.meta_set(COMPACTION_OUTPUTS, ids)


def compact(
    store: FrameStore,
    victims: list[Victim],
    *,
    drop_deleted_rows: bool,
    progress: Progress | None = None,
    hook: Hook | None = None,
    in_repoint: InRepoint | None = None,
) -> Compaction:
    """Copy the victims' live chunks out, repoint, delete the victims (steps 1-4 above).

    Call with the writer lock held. With ``drop_deleted_rows`` the step rows of every
    deleted episode go in the same transaction (gc); without it (recover) the chunks they
    point at are copied too (``Victim.live_offsets`` then includes them).
    ``in_repoint(catalog, moves)`` adds its own changes to the repoint transaction (rows
    for rekeyed chunks: they must commit with the copies, before the victims go).
    """
    result = Compaction()
    target = target_segment_bytes(store, victims)
    moves, outputs = _copy(store, victims, target, progress)
    _call(hook, "copied")

    for writer in outputs:
        writer.publish()
    fsync_dir(checked_segment_dir(store.root))
    _call(hook, "renamed")

    ids = [v.segment for v in victims]
    with store.transaction() as cat:
        result.steps_repointed = cat.repoint_chunks(moves)
        if in_repoint is not None:
            in_repoint(cat, moves)
        if drop_deleted_rows:
            result.step_rows_removed = cat.drop_deleted_step_rows()
        left = cat.pointer_count(ids)
        if left:  # never commit a pointer into a file about to be deleted
            raise FrameStoreError(
                f"{left} step rows still point into segments being removed; "
                "nothing was changed (run `framestore verify`)"
            )
        cat.set_segment_states(ids, "obsolete")
        for writer in outputs:
            cat.record_segment(writer.segment_id, "sealed", writer.size)
        cat.meta_set(COMPACTION_OUTPUTS, None)
    result.segments_rewritten = [v.segment for v in victims if v.live_offsets]
    result.segments_written = [w.segment_id for w in outputs]
    result.bytes_copied = sum(w.size for w in outputs)
    _call(hook, "repointed")

    store.delete_segment_files(ids)
    result.segments_deleted = ids
    _call(hook, "deleted")
    return result


def remove_obsolete(store: FrameStore) -> list[int]:
    """Delete files whose catalogue row says ``obsolete`` (left by a crashed ``gc`` after
    its transaction committed). A file some step row still points at is kept and its
    mark cleared, so it can never leave a dangling pointer. Call with the writer lock."""
    removed = []
    for sid in store.catalog.obsolete_segments():
        if store.catalog.pointer_count([sid]):
            with store.transaction() as cat:
                cat.set_segment_states([sid], "sealed")
            continue
        path = segment_path(store.root, sid)
        if path.exists() or path.is_symlink():
            removed.append(sid)
    if removed:
        store.delete_segment_files(removed)
    return removed


def remove_leftover_outputs(store: FrameStore) -> list[int]:
    """Delete the copies of a compaction that crashed before its repoint committed (the
    ids in ``compaction.outputs``; none of them is registered or pointed at, which is
    checked again here). Call with the writer lock. Returns the segments removed."""
    ids = store.catalog.meta_get(COMPACTION_OUTPUTS)
    if not isinstance(ids, list):
        return []
    rows = store.catalog.segment_rows()
    leftovers = [
        sid
        for sid in ids
        if isinstance(sid, int) and sid >= 0 and sid not in rows
        and not store.catalog.pointer_count([sid])
    ]  # fmt: skip
    checked_segment_dir(store.root)
    for sid in leftovers:
        partial_path(segment_path(store.root, sid)).unlink(missing_ok=True)
    removed = [s for s in leftovers if os.path.lexists(segment_path(store.root, s))]
    store.delete_segment_files(leftovers)
    store.catalog.meta_set(COMPACTION_OUTPUTS, None)
    return removed
