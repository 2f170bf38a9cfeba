"""Taking another store's sealed segments in, crash-safely: what ``merge`` and ``recover``
share.

A merge never rewrites a segment. Each sealed segment of the source is copied (or, for
``--move``, hard-linked) byte for byte under a new segment id of this store; its file
header keeps naming the source's id, which the catalogue records
(``segments.header_id``), and its chunks keep their stream keys, which the merged
episodes record (``episodes.stream_key``). See docs/FORMAT.md, "Merged stores".

The order of the steps is the safety argument; each leaves a store ``recover`` and
``verify`` accept:

1. ``journaled``: ONE committed ``merges`` row (state ``copying``) names the source and
   the ``(new id, source id)`` pairs, new ids above every id in use or journaled.
2. ``placed``: each segment is copied to ``seg-NNNNNN.fseg.partial``, fsynced and
   renamed to its final name, or hard-linked straight to it (a sealed file never
   changes, so two names on one inode are safe); then the directory is fsynced. Last,
   a note segment of this store (the last journaled id) records the merge's provenance
   (``MERGED`` records: the journal row as it will commit, the segments' store tags, the
   source's run and episode ids and theirs here), so ``recover`` can rebuild the journal
   and the merged-in store tags from the segments when ``framestore.db`` is lost.
   Nothing points at the new files: a crash leaves files the journal names, which
   ``undo_incomplete_merges`` (run by ``recover`` and by the next ``merge``) deletes
   together with the journal row. The source is untouched so far.
3. ``committed``: ONE transaction inserts the source's runs, episodes and steps (re-keyed,
   pointers at the new ids), the segments' rows, the merged-in store tags (``meta``)
   and marks the journal row ``done``.
4. ``removed`` (``--move`` only): the source store's files are deleted. A crash here
   leaves a half-removed source that the journal says was merged: the next ``merge``
   finishes removing it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from .._format import (
    DB_NAME,
    LOCK_NAME,
    PARTIAL_SUFFIX,
    RecordType,
    pack_notes,
    read_file_header,
    store_tag,
)
from ..disk.segments import (
    checked_segment_dir,
    segment_dir,
    segment_path,
    write_note_segment,
)
from ..errors import CorruptData, InvalidInput
from ..files import fsync_dir
from .bookkeeping import delete_segment_files, free_segment_id
from .view import StoreView

__all__ = [
    "PHASES",
    "header_id",
    "header_tag",
    "new_segment_ids",
    "place_segments",
    "refuse_unfinished_merge",
    "remove_store_files",
    "undo_incomplete_merges",
    "write_merge_note",
]

PHASES = ("journaled", "placed", "committed", "removed")

Progress = Callable[[int, int], None]  # (bytes done, bytes total)
_COPY_BLOCK = 4 * 1024 * 1024
# link() fails with these when the two paths cannot share an inode: copy instead.
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP)


def header_id(path: str | os.PathLike) -> int:
    """The segment id a segment file's header names (checked)."""
    with open(path, "rb") as fp:
        return read_file_header(fp, str(path)).segment_id


def header_tag(path: str | os.PathLike) -> int:
    """The store tag a segment file's header names (checked; 0 for versions 1-2)."""
    with open(path, "rb") as fp:
        return read_file_header(fp, str(path)).store_tag


def write_merge_note(store: StoreView, segment_id: int, fields: dict) -> int:
    """Step 2's last file: the merge's provenance, ``MERGED`` records (docs/FORMAT.md,
    "Note segments") in a note segment of this store under ``segment_id`` (journaled
    with the placed segments, so an undo deletes it with them). Returns its size."""
    records = pack_notes(RecordType.MERGED, fields, "episodes")
    return write_note_segment(
        store.root, segment_id, records, store_tag(store.catalog.meta.store_id())
    )


def new_segment_ids(store: StoreView, count: int) -> list[int]:
    """``count`` consecutive ids above every segment id in use, as a file or in the
    merge journal (call with the writer lock held). ``UnsafeStore`` when the store's
    segment directory is a link (its files, behind it, would be numbered and replaced
    unseen): checked here, before the journal row is written."""
    checked_segment_dir(store.root)
    first = free_segment_id(store)
    return list(range(first, first + count))


def _copy_file(src: Path, final: Path, done: int, total: int, progress: Progress | None) -> int:
    """Copy ``src`` to ``final`` through ``final.partial``: fsynced, then renamed."""
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    try:
        with open(src, "rb") as fin, open(partial, "xb") as fout:
            while block := fin.read(_COPY_BLOCK):
                fout.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return done


def place_segments(
    src_root: str | os.PathLike,
    dest_root: str | os.PathLike,
    pairs: list[tuple[int, int]],
    *,
    link: bool,
    progress: Progress | None = None,
) -> int:
    """Put each source segment ``(new id, source id)`` of ``pairs`` into ``dest_root``
    under its new id: hard-linked with ``link`` when both are on one file system, else
    copied. Returns how many were linked. The destination directory is fsynced."""
    sources = [(segment_path(dest_root, new), segment_path(src_root, old)) for new, old in pairs]
    total = sum(src.stat().st_size for _final, src in sources)
    done = linked = 0
    checked_segment_dir(dest_root, create=True)  # never through a link
    for final, src in sources:
        if link:
            try:
                os.link(src, final, follow_symlinks=False)
            except OSError as e:
                if e.errno not in _NO_LINK:
                    raise
            else:
                linked += 1
                done += src.stat().st_size
                if progress is not None:
                    progress(done, total)
                continue
        done = _copy_file(src, final, done, total, progress)
    fsync_dir(checked_segment_dir(dest_root))
    return linked


def refuse_unfinished_merge(store: StoreView) -> None:
    """Raise ``InvalidInput`` while a merge into ``store`` is unfinished: its journal
    reserves segment ids that a recording or a gc could otherwise take. Call with the
    writer lock held."""
    merges = store.catalog.merges.incomplete()
    if merges:
        raise InvalidInput(
            f"a merge from {merges[0].source_path} into this store stopped before its "
            "commit; its segment ids are reserved. Run `framestore recover` (or the same "
            "merge) first"
        )


def undo_incomplete_merges(store: StoreView) -> list[int]:
    """Delete what merges that stopped before their commit placed (step 2), and their
    journal rows. A file is only deleted when no step row points into it and its header
    names the source segment it was placed for. Call with the writer lock held.
    Returns the segment ids removed."""
    checked_segment_dir(store.root)  # never delete through a link
    removed: list[int] = []
    for m in store.catalog.merges.incomplete():
        ours_here = []
        for new, old in m.segments:  # old: the id the placed file's header names
            final = segment_path(store.root, new)
            final.with_name(final.name + PARTIAL_SUFFIX).unlink(missing_ok=True)
            if not final.is_file() or final.is_symlink():
                continue
            try:
                ours = header_id(final) == old
            except CorruptData:
                ours = False
            if ours and not store.catalog.pointers.count([new]):
                ours_here.append(new)
        if ours_here:
            delete_segment_files(store, ours_here)
        store.catalog.merges.forget(m.id)
        removed += ours_here
    return removed


def remove_store_files(root: str | os.PathLike) -> None:
    """Delete a store's own files (segments, database, lock) and then its directories
    when nothing else is left in them: what ``merge --move`` does to a merged source.
    Segments go first, so a crash leaves a database that still names the store."""
    root = Path(root)
    seg = segment_dir(root)
    if seg.is_dir() and not seg.is_symlink():
        for path in list(seg.iterdir()):
            if path.name.endswith((".fseg", PARTIAL_SUFFIX)) and not path.is_dir():
                path.unlink(missing_ok=True)
        fsync_dir(seg)
        try:
            seg.rmdir()
        except OSError:
            pass  # something else lives there: leave it
    for name in (f"{DB_NAME}-wal", f"{DB_NAME}-shm", DB_NAME, LOCK_NAME):
        (root / name).unlink(missing_ok=True)
    try:
        root.rmdir()
    except OSError:
        pass
