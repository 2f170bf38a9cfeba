"""Moving live chunks into new segments, crash-safely: what ``gc`` and ``recover`` share.

The order of the steps is the safety argument; each leaves a readable store:

1. ``copied``: the live ``CHUNK`` records of each victim segment are copied (CRC checked,
   never recompressed; records of an older format version get the current head) into new
   ``seg-NNNNNN.fseg.partial`` files, sealed and fsynced. Nothing points at them yet.
   Before each new file is created its id is added to the ``meta`` key
   ``compaction.outputs`` (committed): whatever happens next, the store knows which
   unregistered segments are copies it may delete. From version-3 segments the records
   that describe live episodes go along (``kept_records``): their ``EPISODE`` records
   (one per output segment, before the episode's first record there), ``EPISODE_END``,
   ``RUN_END`` and chunks that hold steps but no frame, so the copies still describe
   themselves (docs/FORMAT.md) and ``recover`` can rebuild the catalogue from them.
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
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._format import (
    FILE_HEADER_SIZE,
    SEAL_RECORD_SIZE,
    RecordType,
    adopted_meta,
    pack_meta,
    rekeyed_chunk_record,
)
from ..catalog import COMPACTION_OUTPUTS, Catalog
from ..disk.scan import GoodRecord, SegmentScan, scan_segment, segment_outline
from ..disk.segments import (
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
    store_tag,
)
from ..errors import CorruptData, FrameStoreError, TruncatedRecord
from ..files import fsync_dir
from ..state.bookkeeping import chunk_bytes, delete_segment_files, record_identity
from ..store import FrameStore
from ..types import EpisodeInfo
from ._described import Described

__all__ = [
    "PHASES",
    "Compaction",
    "Victim",
    "compact",
    "copy_bytes",
    "kept_records",
    "live_runs",
    "live_stream_keys",
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
    episodes_adopted: list[int] = field(default_factory=list)  # merged ones, now this store's


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


def live_stream_keys(store: FrameStore) -> set[int]:
    """Stream keys of the episodes not deleted (for segments this store wrote)."""
    statuses = store.catalog.episodes.statuses()
    return {
        key
        for key, episodes in store.catalog.episodes.stream_key_owners().items()
        if any(statuses.get(e) != "deleted" for e in episodes)
    }


def live_runs(store: FrameStore) -> set[int]:
    """Ids of the runs with an episode not deleted (their ``RUN_END`` records are kept)."""
    statuses = store.catalog.episodes.statuses()
    episodes, _runs = store.catalog.recovery.origins()
    return {run for e, (run, _started) in episodes.items() if statuses.get(e) != "deleted"}


def kept_records(
    scan: SegmentScan, live_offsets: list[int], live_keys: set[int],
    runs: set[int] = frozenset(),  # type: ignore[assignment]
) -> list[GoodRecord]:  # fmt: skip
    """The records of a version-3 segment a compaction keeps, in file order: its live
    chunks, and of the streams among ``live_keys`` (or with a live chunk here) their
    chunks without frames, ``EPISODE`` and ``EPISODE_END`` records; ``RUN_END`` records
    of the ``runs`` given (``live_runs``), or of any run when anything else is kept.
    Empty for older versions' segments (no such records)."""
    if (scan.version or 0) < 3:
        return []
    live = set(live_offsets)
    keys = live_keys | {scan.chunks[o].stream_key for o in live if o in scan.chunks}
    out = []
    for r in scan.records:
        if r.header is not None:
            if r.offset in live or (r.header.count == 0 and r.header.stream_key in keys):
                out.append(r)
        elif r.meta is not None:
            kind = scan.kind_of(r)
            if kind == "run_end" or r.meta.get("stream_key") in keys:
                out.append(r)
    if all(scan.kind_of(r) == "run_end" for r in out):
        return [r for r in out if r.meta is not None and r.meta.get("run_id") in runs]
    return out


@dataclass
class _Known:
    """What tells a merged segment's ``EPISODE`` record of an episode here: the live
    episodes by stream key, the runs' ``created`` times, the runs with a live episode."""

    by_key: dict[int, list[EpisodeInfo]]
    created: dict[int, Any]  # run id -> created
    live_runs: set[int]
    store_id: str | None
    store: FrameStore
    victims: set[int]

    @classmethod
    def of(cls, store: FrameStore, victims: list[Victim]) -> _Known:
        by_key: dict[int, list[EpisodeInfo]] = {}
        for e in store.catalog.episodes.all():
            by_key.setdefault(e.stream_key if e.stream_key is not None else e.id, []).append(e)
        _episodes, created = store.catalog.recovery.origins()
        return cls(
            by_key, created, live_runs(store), store.catalog.meta.store_id(), store,
            {v.segment for v in victims},
        )  # fmt: skip

    def all_moved(self, e: EpisodeInfo) -> bool:
        """Whether every chunk holding the episode's frames is in a victim (an episode's
        chunks carry one stream key: it is rekeyed whole or not at all)."""
        return set(self.store.catalog.episodes.chunks(e.id)) <= self.victims


class _Adoption:
    """The records of a merged segment's episodes rewritten as this store's: each chunk of
    an episode still live here under the episode's id here, its ``EPISODE``,
    ``EPISODE_END`` and ``RUN_END`` records naming its ids here and this store
    (``_format.adopted_meta``). An ``EPISODE`` record is the episode here that carries
    its stream key, run start and episode start (what tells ``rm``'s tombstones'
    episodes too), whichever store wrote it (the source, or a store the source had
    merged). Once copied so, the episode is rebuilt from the copies like one recorded
    here (docs/FORMAT.md, "Merged stores"). Chunks of no such episode (format 1-2
    segments) are copied as they are."""

    def __init__(self, scan: SegmentScan, known: _Known):
        self.known = known
        self.keys: dict[int, EpisodeInfo] = {}  # stream key in the segment -> episode here
        self.runs: dict[Any, int] = {}  # run id in the segment -> run id here
        for rec in scan.meta_records:
            meta, key = rec.meta, rec.meta.get("stream_key")
            ep, run = meta.get("episode"), meta.get("run")
            if scan.kind_of(rec) != "episode" or not isinstance(ep, dict):
                continue
            if not isinstance(run, dict) or type(key) is not int:
                continue
            found = [
                e for e in known.by_key.get(key, ())
                if e.started == ep.get("started") and known.created.get(e.run_id) == run.get("created")
            ]  # fmt: skip
            if len(found) == 1 and known.all_moved(found[0]):
                self.keys[key] = found[0]
                self.runs[run.get("id")] = found[0].run_id
            # (a deleted episode's run may still have live ones: its RUN_END is kept)
            same = [r for r, c in known.created.items() if c == run.get("created")]
            if len(same) == 1:
                self.runs.setdefault(run.get("id"), same[0])

    def kept(self, scan: SegmentScan, live_offsets: list[int]) -> list[GoodRecord]:
        """The records to copy, in file order: the live chunks, the adopted episodes'
        chunks without frames and their records."""
        live = set(live_offsets)
        out = []
        for r in scan.records:
            if r.header is not None:
                if r.offset in live or (r.header.count == 0 and r.header.stream_key in self.keys):
                    out.append(r)
            elif r.meta is not None and self.rewritten(scan.kind_of(r), r.meta) is not None:
                out.append(r)
        return out

    def rewritten(self, kind: str, meta: dict) -> tuple[int | None, bytes] | None:
        """``(stream key here, record)`` of an adopted episode's or a live run's record."""
        if kind == "run_end":
            run_id = self.runs.get(meta.get("run_id"))
            if run_id not in self.known.live_runs:
                return None
            fields = adopted_meta(kind, meta, self.known.store_id, run_id=run_id)
            return None, pack_meta(RecordType.RUN_END, fields)
        e = self.keys.get(meta.get("stream_key"))  # type: ignore[arg-type]
        if e is None or kind not in ("episode", "episode_end"):
            return None
        fields = adopted_meta(
            kind, meta, self.known.store_id, episode_id=e.id, run_id=e.run_id,
            continues=e.continues_episode,
        )  # fmt: skip
        rtype = RecordType.EPISODE if kind == "episode" else RecordType.EPISODE_END
        return e.id, pack_meta(rtype, fields)


class _Outputs:
    """The new segments a compaction writes, each with the streams it describes; with
    ``dry`` only their sizes (``copy_bytes``)."""

    def __init__(self, store: FrameStore, target_bytes: int, dry: bool = False):
        self.store = store
        self.dry = dry
        self.tag = store_tag(store.catalog.meta.store_id())  # the copies are this store's
        self.target = target_bytes
        self.next_id = next_segment_id(store.root)
        self.all: list = []  # SegmentWriter, or _Sizer when dry
        self.writer = None
        self.described: set[int] = set()
        self.adopted: set[int] = set()  # merged episodes written as this store's

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.seal()
            self.writer.close()
            self.writer = None

    def append(self, raw: bytes | int, frames: int, key: int | None, episode: bytes | None) -> int:
        """Append one record (after its stream's ``EPISODE`` record ``episode`` when this
        output has none yet); returns its offset. (``raw`` may be a size when dry.)"""
        extra = len(episode) if episode is not None and key not in self.described else 0
        size = raw if isinstance(raw, int) else len(raw)
        w = self.writer
        if w is not None and not w.empty:
            if w.size + extra + size + SEAL_RECORD_SIZE > self.target:
                self.finish()
        if self.writer is None:
            if self.dry:
                self.writer = _Sizer(self.next_id)
            else:
                _announce_output(self.store, self.next_id, self.all)
                self.writer = SegmentWriter.partial(self.store.root, self.next_id, self.tag)
            self.all.append(self.writer)
            self.next_id += 1
            self.described = set()
        if episode is not None and key not in self.described:
            self.writer.append(episode)
            self.described.add(key)
        return self.writer.append(raw, frames=frames)


class _Sizer:
    """A ``SegmentWriter`` that only counts (a dry run's output)."""

    def __init__(self, segment_id: int):
        self.segment_id = segment_id
        self.size = FILE_HEADER_SIZE

    @property
    def empty(self) -> bool:
        return self.size <= FILE_HEADER_SIZE

    def append(self, record: bytes | int, *, frames: int = 0) -> int:
        offset = self.size
        self.size += record if isinstance(record, int) else len(record)
        return offset

    def seal(self) -> None:
        self.size += SEAL_RECORD_SIZE

    def close(self) -> None:
        pass

    discard = close


def copy_bytes(store: FrameStore, victims: list[Victim]) -> int:
    """Bytes ``compact`` would write for ``victims`` (new segments, sealed): what a dry
    run of ``gc`` reports. Exact for segments of format 3; for older ones the chunks'
    own sizes (their copies get a slightly longer head)."""
    target = target_segment_bytes(store, victims)
    _moves, outputs, _adopted = _copy(store, victims, target, None, dry=True, adopt=True)
    return sum(w.size for w in outputs)


def _copy(
    store: FrameStore,
    victims: list[Victim],
    target_bytes: int,
    progress: Progress | None,
    *,
    dry: bool = False,
    adopt: bool = False,
) -> tuple[Moves, list[SegmentWriter], list[int]]:
    """Copy live chunks into new sealed ``.partial`` segments. On error nothing is left.
    ``dry``: write nothing, only size the outputs. ``adopt``: write the merged victims'
    episodes as this store's (``_Adoption``)."""
    copy = _Copy(store, victims, target_bytes, progress, dry=dry, adopt=adopt)
    checked_segment_dir(store.root)
    outs = copy.outs
    try:
        for v in victims:
            copy.victim(v)
        outs.finish()
        if copy.described is not None:
            outs.adopted.update(copy.described.episodes)
    except BaseException:
        for w in outs.all:
            w.discard()
        if not dry:
            store.catalog.meta.set(COMPACTION_OUTPUTS, None)
        raise
    return copy.moves, outs.all, sorted(outs.adopted)


class _Copy:
    """One ``_copy`` under way: what decides how each victim is copied (the merged
    segments, the episodes merged ones may hold, the chunks to write with their catalogue
    metadata, this store's live streams and runs), the outputs, where each chunk went and
    the bytes copied so far (for ``progress``)."""

    def __init__(self, store: FrameStore, victims: list[Victim], target_bytes: int,
                 progress: Progress | None, *, dry: bool, adopt: bool):  # fmt: skip
        self.store = store
        self.dry = dry
        self.outs = _Outputs(store, target_bytes, dry)
        self.merged = store.catalog.segments.merged()
        self.known = _Known.of(store, victims) if self.merged and adopt else None
        self.described = _unscribed(store, victims) if adopt else None
        self.own_keys = live_stream_keys(store)
        self.own_runs = live_runs(store)
        self.moves: Moves = {}
        self.progress = progress
        self.total = sum(v.live_bytes for v in victims)
        self.done = 0

    def moved(self, segment: int, offset: int, where: tuple[int, int], size: int) -> None:
        """Note that the chunk at ``(segment, offset)`` of ``size`` bytes went ``where``."""
        self.moves[(segment, offset)] = where
        self.done += size
        _call(self.progress, self.done, self.total)

    def victim(self, v: Victim) -> None:
        """Copy what one victim keeps, the way its format and origin call for: a format 3
        segment of this store record by record (``_copy_v3``), a merged one with its
        episodes adopted when ``known``, format 1-2 segments chunk by chunk."""
        path = segment_path(self.store.root, v.segment)
        if not v.live_offsets and not _describes(path, v.segment):
            return
        with open_segment(path, v.segment) as fp:
            version = segment_version(fp, v.segment)
            if version >= 3 and v.segment not in self.merged:
                scan = scan_segment(path, v.segment)
                records = kept_records(scan, v.live_offsets, self.own_keys, self.own_runs)
                _copy_v3(fp, v, records, self)
            elif version >= 3 and self.known is not None:  # its episodes become this store's
                scan = scan_segment(path, v.segment)
                adoption = _Adoption(scan, self.known)
                _copy_v3(fp, v, adoption.kept(scan, v.live_offsets), self, adoption)
                self.outs.adopted.update(e.id for e in adoption.keys.values())
            elif self.dry:  # no data read: the chunks' sizes as they are
                for off in v.live_offsets:
                    _where(self.outs, chunk_bytes(self.store, v.segment, [off]), 1)
            else:
                self._chunks(fp, v, version)

    def _chunks(self, fp, v: Victim, version: int) -> None:
        """Copy a victim's live chunks one by one (a segment without records describing
        its episodes: format 1-2, or merged when not adopting), each with its catalogue
        metadata when ``described`` has it, else as it is or under its new stream key."""
        for off in v.live_offsets:
            raw, header = read_chunk_record(fp, v.segment, off, version=version)
            if self.described is not None and self.described.episode_of((v.segment, off)):
                where = _write_described(self.outs, self.described, v, off, raw, header.count)
                self.moved(v.segment, off, where, len(raw))
                continue
            if off in v.rekey:
                raw = rekeyed_chunk_record(raw, v.rekey[off])
            self.moved(v.segment, off, _where(self.outs, raw, header.count), len(raw))


def _unscribed(store: FrameStore, victims: list[Victim]) -> Described:
    """The victims' live chunks no ``EPISODE`` record of their segment describes (all of
    a format 1-2 segment's, this store's or merged), to be written with the catalogue's
    metadata (``_described``). Reads record heads only (``segment_outline``); a victim
    whose records cannot be walked has none (its chunks are copied as they are)."""
    unscribed: dict[int, set[int]] = {}
    for v in victims:
        if not v.live_offsets:
            continue
        try:
            outline = segment_outline(segment_path(store.root, v.segment), v.segment)
        except (OSError, CorruptData):
            continue
        if outline is None:
            continue
        described = _described_chunks(store, v.segment, outline)
        unscribed[v.segment] = {off for off in v.live_offsets if off not in described}
    return Described(store, unscribed)


def _described_chunks(store: FrameStore, segment: int, outline) -> set[int]:
    """The chunks of ``segment`` an ``EPISODE`` record of it describes: one of the same
    stream key, run start and episode start as the chunk's one owner in the catalogue
    (``chunk_owners``). The key alone is not enough: a gc of an earlier release copied
    a merged format 1-2 episode's chunks, under its source key, into one segment with
    this store's format-3 episodes, whose ids (their keys) it may share."""
    records = {record_identity(m) for m in outline.episodes}
    if not records:
        return set()
    owners = store.catalog.recovery.chunk_owners(segment)
    entries = store.catalog.recovery.tombstone_entries(sorted(set().union(*owners.values())))
    started = {e["id"]: (e.get("run_created"), e.get("started")) for e in entries}
    return {
        off
        for off, eps in owners.items()
        if len(eps) == 1
        and (outline.chunk_keys.get(off), *started.get(next(iter(eps)), (None, None))) in records
    }


def _write_described(
    outs: _Outputs, described: Described, v: Victim, off: int, raw: bytes, frames: int
) -> tuple[int, int]:
    """Write a chunk with its episode's metadata (``_described``); returns where."""
    eid, episode, rewritten, after = described.chunk((v.segment, off), raw)
    where = _where(outs, rewritten, frames, eid, episode)
    for rec in after:
        _where(outs, rec, 0, eid, episode)
    return where


def _describes(path, segment: int) -> bool:
    """Whether a segment without live frames may still hold records describing live
    episodes (format version 3); False when it cannot be read (nothing live to lose)."""
    try:
        with open_segment(path, segment) as fp:
            return segment_version(fp, segment) >= 3
    except (OSError, CorruptData):
        return False


def _where(outs: _Outputs, raw: bytes | int, frames: int, key: int | None = None,
           episode: bytes | None = None) -> tuple[int, int]:  # fmt: skip
    offset = outs.append(raw, frames, key, episode)
    assert outs.writer is not None
    return outs.writer.segment_id, offset


def _copy_v3(fp, v: Victim, records: list[GoodRecord], copy: _Copy,
             adopt: _Adoption | None = None) -> None:  # fmt: skip
    """Copy a version-3 victim's kept records (``kept_records``: CRC checked by the scan
    that found them) byte for byte, each stream's ``EPISODE`` record ahead of its first
    record per output; with ``adopt`` (a merged segment) its episodes' records rewritten
    as this store's (``_Adoption``); the chunks ``copy.described`` has (no ``EPISODE``
    record describes them) written with their catalogue metadata (``_described``)."""
    episodes: dict[int, bytes] = {}  # each stream's EPISODE record, by stream key
    described = copy.described
    for r in records:
        raw = _read_kept(fp, v.segment, r)
        if r.header is None:
            _copy_meta_record(copy.outs, r, raw, episodes, adopt)
        elif described is not None and described.episode_of((v.segment, r.offset)) is not None:
            where = _write_described(copy.outs, described, v, r.offset, raw, r.header.count)
            copy.moved(v.segment, r.offset, where, len(raw))
        elif adopt is not None:
            _copy_adopted_chunk(copy, v, r, raw, adopt, episodes)
        else:
            _copy_own_chunk(copy, v, r, raw, episodes)


def _read_kept(fp, segment: int, r: GoodRecord) -> bytes:
    """The bytes of a record the scan found (header, payload, CRC), read again."""
    fp.seek(r.offset)
    raw = fp.read(r.end - r.offset)
    if len(raw) != r.end - r.offset:
        raise TruncatedRecord(segment, r.offset, r.end - r.offset, len(raw))
    return raw


def _copy_meta_record(outs: _Outputs, r: GoodRecord, raw: bytes, episodes: dict[int, bytes],
                      adopt: _Adoption | None) -> None:  # fmt: skip
    """An ``EPISODE`` record is held back until its stream's first record in an output;
    any other record (``EPISODE_END``, ``RUN_END``) is copied after it. With ``adopt``
    each is rewritten as this store's first."""
    if adopt is not None:
        key, raw = adopt.rewritten(SegmentScan.kind_of(r), r.meta)  # type: ignore[misc,arg-type]
        if r.type == RecordType.EPISODE:
            episodes[key] = raw
            return
    else:
        key = r.meta.get("stream_key") if r.meta is not None else None
        if key is not None and r.type == RecordType.EPISODE:
            episodes[key] = raw
            return
    _where(outs, raw, 0, key, episodes.get(key) if key is not None else None)


def _copy_adopted_chunk(copy: _Copy, v: Victim, r: GoodRecord, raw: bytes, adopt: _Adoption,
                        episodes: dict[int, bytes]) -> None:  # fmt: skip
    """A merged segment's chunk: under its episode's id here when that episode is
    adopted, else as it is (its live frames)."""
    assert r.header is not None
    e = adopt.keys.get(r.header.stream_key)
    if e is None:  # not adopted: its live frames copied as they are
        copy.moved(v.segment, r.offset, _where(copy.outs, raw, r.header.count), len(raw))
        return
    raw = rekeyed_chunk_record(raw, e.id)
    where = _where(copy.outs, raw, r.header.count, e.id, episodes.get(e.id))
    if r.header.count:
        copy.moved(v.segment, r.offset, where, len(raw))


def _copy_own_chunk(copy: _Copy, v: Victim, r: GoodRecord, raw: bytes,
                    episodes: dict[int, bytes]) -> None:  # fmt: skip
    """A chunk of this store's segment: byte for byte after its stream's ``EPISODE``
    record, or under a new episode id (``Victim.rekey``) on its own."""
    assert r.header is not None
    if r.offset in v.rekey:  # another recording's frames, under a new episode id
        raw = rekeyed_chunk_record(raw, v.rekey[r.offset])
        where = _where(copy.outs, raw, r.header.count)
    else:
        key = r.header.stream_key
        where = _where(copy.outs, raw, r.header.count, key, episodes.get(key))
    if r.header.count:
        copy.moved(v.segment, r.offset, where, len(raw))


def _announce_output(store: FrameStore, segment_id: int, outputs: list[SegmentWriter]) -> None:
    """Commit ``segment_id`` to ``compaction.outputs`` before its file exists."""
    ids = [w.segment_id for w in outputs] + [segment_id]
    store.catalog.meta.set(COMPACTION_OUTPUTS, ids)


def compact(
    store: FrameStore,
    victims: list[Victim],
    *,
    drop_deleted_rows: bool,
    progress: Progress | None = None,
    hook: Hook | None = None,
    in_repoint: InRepoint | None = None,
    adopt_merged: bool = False,
) -> Compaction:
    """Copy the victims' live chunks out, repoint, delete the victims (steps 1-4 above).

    Call with the writer lock held. With ``drop_deleted_rows`` the step rows of every
    deleted episode go in the same transaction (gc); without it (recover) the chunks they
    point at are copied too (``Victim.live_offsets`` then includes them).
    ``in_repoint(catalog, moves)`` adds its own changes to the repoint transaction (rows
    for rekeyed chunks: they must commit with the copies, before the victims go).
    ``adopt_merged`` (gc, which rewrites every segment of a merge together): the live
    episodes of merged victims are written as this store's (``_Adoption``); their
    ``stream_key`` is cleared in the repoint transaction.
    """
    result = Compaction()
    target = target_segment_bytes(store, victims)
    moves, outputs, adopted = _copy(store, victims, target, progress, adopt=adopt_merged)
    _call(hook, "copied")

    for writer in outputs:
        writer.publish()
    fsync_dir(checked_segment_dir(store.root))
    _call(hook, "renamed")

    ids = [v.segment for v in victims]
    with store.transaction() as cat:
        result.steps_repointed = cat.pointers.repoint_chunks(moves)
        if in_repoint is not None:
            in_repoint(cat, moves)
        if drop_deleted_rows:
            result.step_rows_removed = cat.pointers.drop_deleted_step_rows()
        cat.episodes.own_stream_keys(adopted)  # their chunks now carry their ids
        left = cat.pointers.count(ids)
        if left:  # never commit a pointer into a file about to be deleted
            raise FrameStoreError(
                f"{left} step rows still point into segments being removed; "
                "nothing was changed (run `framestore verify`)"
            )
        cat.segments.set_states(ids, "obsolete")
        for writer in outputs:
            cat.segments.record(writer.segment_id, "sealed", writer.size)
        cat.meta.set(COMPACTION_OUTPUTS, None)
    result.segments_rewritten = [v.segment for v in victims if v.live_offsets]
    result.segments_written = [w.segment_id for w in outputs]
    result.bytes_copied = sum(w.size for w in outputs)
    result.episodes_adopted = adopted
    _call(hook, "repointed")

    delete_segment_files(store, ids)
    result.segments_deleted = ids
    _call(hook, "deleted")
    return result


def remove_obsolete(store: FrameStore) -> list[int]:
    """Delete files whose catalogue row says ``obsolete`` (left by a crashed ``gc`` after
    its transaction committed). A file some step row still points at is kept and its
    mark cleared, so it can never leave a dangling pointer. Call with the writer lock."""
    removed = []
    for sid in store.catalog.segments.obsolete():
        if store.catalog.pointers.count([sid]):
            with store.transaction() as cat:
                cat.segments.set_states([sid], "sealed")
            continue
        path = segment_path(store.root, sid)
        if path.exists() or path.is_symlink():
            removed.append(sid)
    if removed:
        delete_segment_files(store, removed)
    return removed


def _written_by_a_recorder(store: FrameStore, segment: int) -> bool:
    """A regular file under ``segment`` that has no seal: no compaction's copy."""
    path = segment_path(store.root, segment)
    try:
        return stat.S_ISREG(os.lstat(path).st_mode) and not is_sealed(path)
    except FileNotFoundError:
        return False


def remove_leftover_outputs(store: FrameStore) -> list[int]:
    """Delete the copies of a compaction that crashed before its repoint committed (the
    ids in ``compaction.outputs``; none of them is registered or pointed at, which is
    checked again here). Call with the writer lock. Returns the segments removed.

    A copy is renamed into place sealed (``_Outputs``): an unsealed file under a
    reserved id is not one but a recorder's segment (a recorder of an older version
    took the id; one killed before its rows committed leaves its frames there alone).
    It is left for ``recover`` to give its frames rows."""
    ids = store.catalog.meta.get(COMPACTION_OUTPUTS)
    if not isinstance(ids, list):
        return []
    rows = store.catalog.segments.rows()
    leftovers = [
        sid
        for sid in ids
        if isinstance(sid, int) and sid >= 0 and sid not in rows
        and not store.catalog.pointers.count([sid])
    ]  # fmt: skip
    checked_segment_dir(store.root)
    for sid in leftovers:
        partial_path(segment_path(store.root, sid)).unlink(missing_ok=True)
    leftovers = [s for s in leftovers if not _written_by_a_recorder(store, s)]
    removed = [s for s in leftovers if os.path.lexists(segment_path(store.root, s))]
    delete_segment_files(store, leftovers)
    store.catalog.meta.set(COMPACTION_OUTPUTS, None)
    return removed
