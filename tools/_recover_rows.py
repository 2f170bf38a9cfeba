"""``recover``'s decisions about rows: which frame pointers stand, which are re-linked,
kept or cleared, and which episode each frame without a row belongs to.

Rules (the reasons are in ``tools.recover``'s docstring):

- a pointer resolves when its chunk is good and holds the row's own episode, step and
  shape. One into a segment that is unavailable (missing, or its header unreadable: it
  may come back) is re-linked to another good copy of that frame if a segment holds one
  (a database older than a ``gc``), else kept unless ``drop_missing``. Any other pointer
  that does not resolve is cleared (reported lost);
- a frame without a row joins its episode only when it cannot be another recording's:
  its chunk already holds frames of that episode, or it was written after the episode's
  last frame with a row (and, for a ``complete`` episode, lies inside its step count);
- any other frame without a row is *foreign*: an earlier recording that used the same
  episode id (a crash before its episode row committed, then a recorder that did not see
  it). So is a chunk nothing points at, written before the episode's last frame with a
  row, whose steps all have rows elsewhere, unless it is a byte-identical copy of the
  chunk those rows point at (a compaction's leftover). Foreign chunks get a new episode
  id of their own (rekeyed copies), never merged.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from framestore.catalog import MAX_SQLITE_INT, Catalog, PointerRow, format_shape
from framestore.disk.scan import SegmentScan
from framestore.disk.segments import same_chunk_data, store_tag

__all__ = [
    "Foreign",
    "RowPlan",
    "adopt_rowless",
    "fix_pointers",
    "frames_not_rebuilt",
    "resolves",
]

Where = tuple[int, int]  # (segment, offset) of a chunk record


def resolves(chunks: dict, row: PointerRow) -> bool:
    """Whether ``row``'s pointer names a good chunk slot holding its own frame."""
    if not row.valid:
        return False
    header = chunks.get((row.segment, row.offset))
    if header is None or not 0 <= row.slot < header.count:
        return False
    if header.stream_key != row.expected_key or header.frame_keys[row.slot] != row.step:
        return False
    return row.shape is None or row.shape == format_shape(header.shape)


@dataclass
class RowPlan:
    """What ``fix_pointers`` decided (counts per episode)."""

    relinked: dict[int, int] = field(default_factory=dict)
    lost: dict[int, int] = field(default_factory=dict)
    kept_missing: dict[int, dict[int, int]] = field(default_factory=dict)  # seg -> ep -> n


def _copies(scans: dict[int, SegmentScan], wanted: set[tuple[int, int]]) -> dict:
    """``{(episode, step): (segment, offset, slot, header)}``: a good copy of each wanted
    frame (the first in write order)."""
    found: dict[tuple[int, int], tuple[int, int, int, object]] = {}
    if not wanted:
        return found
    for sid in sorted(scans):
        for off, header in sorted(scans[sid].chunks.items()):
            if header.stream_index:  # another stream's frames: never a render frame's copy
                continue
            for slot, k in enumerate(header.frame_keys):
                key = (header.stream_key, k)
                if key in wanted and key not in found:
                    found[key] = (sid, off, slot, header)
    return found


def fix_pointers(
    cat: Catalog,
    scans: dict[int, SegmentScan],
    unavailable: set[int],
    statuses: dict[int, str],
    *,
    drop_missing: bool,
) -> RowPlan:
    """Re-link, keep or clear every pointer that does not resolve (in the caller's
    transaction)."""
    chunks = {(sid, off): h for sid, scan in scans.items() for off, h in scan.chunks.items()}
    bad = [r for r in cat.pointers.all() if not resolves(chunks, r)]
    # Only rows into a segment that is gone look for another copy (a database restored
    # from before a gc moved their frames); others keep the old rule: clear.
    copies = _copies(scans, {(r.expected_key, r.step) for r in bad if r.segment in unavailable})
    plan = RowPlan()
    relink, clear = [], []
    lost: dict[int, int] = defaultdict(int)
    relinked: dict[int, int] = defaultdict(int)
    for r in bad:
        copy = copies.get((r.expected_key, r.step)) if r.segment in unavailable else None
        if copy is not None:
            sid, off, slot, header = copy
            relink.append((r.episode, r.step, sid, off, slot, format_shape(header.shape)))
            relinked[r.episode] += 1
        elif (
            r.valid
            and r.segment in unavailable
            and not drop_missing
            and statuses.get(r.episode) != "deleted"
        ):
            per = plan.kept_missing.setdefault(r.segment, {})
            per[r.episode] = per.get(r.episode, 0) + 1
        else:
            clear.append((r.episode, r.step))
            if statuses.get(r.episode) != "deleted":
                lost[r.episode] += 1
    cat.pointers.relink(relink)
    cat.pointers.clear(clear)
    plan.relinked = dict(sorted(relinked.items()))
    plan.lost = dict(sorted(lost.items()))
    return plan


@dataclass
class Foreign:
    """Chunks of recordings whose episode id another recording took: each group becomes
    an episode of its own (``new_id``), its chunks copied under that id."""

    chunks: dict[Where, int] = field(default_factory=dict)  # chunk -> new episode id
    headers: dict[Where, object] = field(default_factory=dict)
    episodes: dict[int, int] = field(default_factory=dict)  # new id -> original id
    # original id -> (new id of its current group, the steps that group holds)
    groups: dict[int, tuple[int, set[int]]] = field(default_factory=dict, repr=False)

    def __bool__(self) -> bool:
        return bool(self.chunks)

    def add(self, where: Where, header, ep: int, next_id: int) -> int:
        """Chunk ``where`` of a recording that used id ``ep`` joins its group, or starts
        a new one under ``next_id`` when the group already holds one of its steps (then
        another recording). Returns the next free episode id."""
        new_id, steps = self.groups.get(ep, (0, set()))
        if not new_id or steps & set(header.frame_keys):  # a step seen twice: another one
            new_id, steps = next_id, set()
            next_id += 1
            self.episodes[new_id] = ep
        steps.update(header.frame_keys)
        self.groups[ep] = (new_id, steps)
        self.chunks[where] = new_id
        self.headers[where] = header
        return next_id


class _Episodes:
    """What recover knows of each episode while it walks the chunks in write order."""

    def __init__(self, cat: Catalog, chunks: dict, statuses: dict[int, str]):
        self.cat = cat
        self.statuses = statuses
        self.owners = cat.episodes.stream_key_owners()
        self.created: list[int] = []  # episodes re-created, in order
        self._run_id: int | None = None  # the run they join, created with the first
        self.have: dict[int, set[int]] = defaultdict(set, cat.recovery.step_keys())
        self.recorded = {r.episode: r.steps for r in cat.stats.episode_row_counts()}
        self.chunks_of: dict[int, set[Where]] = defaultdict(set)
        self.last: dict[int, Where] = {}
        self.at: dict[tuple[int, int], Where] = {}  # (episode, step) -> its row's chunk
        for r in cat.pointers.all():
            if resolves(chunks, r):
                where = (r.segment, r.offset)
                self.chunks_of[r.episode].add(where)
                self.last[r.episode] = max(self.last.get(r.episode, where), where)
                self.at[(r.episode, r.step)] = where

    def older_recording(self, root, ep: int, where: Where, keys: tuple[int, ...]) -> bool:
        """Whether an unreferenced chunk whose steps all have rows is another, earlier
        recording's (not a copy of the chunk its steps' rows point at)."""
        last = self.last.get(ep)
        if where in self.chunks_of[ep] or last is None or where > last:
            return False
        homes = {self.at.get((ep, k)) for k in keys}
        if len(homes) == 1 and None not in homes:
            return not same_chunk_data(root, where, homes.pop())
        return True

    def owns(self, ep: int, where: Where, keys: list[int]) -> bool:
        """Whether rowless frames ``keys`` of chunk ``where`` belong to episode ``ep``."""
        if where in self.chunks_of[ep]:
            return True
        last = self.last.get(ep)
        if last is not None and where < last:
            return False
        if self.statuses.get(ep) == "complete":
            steps = self.recorded.get(ep)
            return isinstance(steps, int) and all(k < steps for k in keys)
        return True

    def rowless(self, ep: int, header) -> list[tuple[int, int]]:
        """``(slot, step)`` of the frames of a chunk of ``ep`` that have no row."""
        return [(slot, k) for slot, k in enumerate(header.frame_keys) if k not in self.have[ep]]

    def owner(self, key: int) -> int | None:
        """The episode a chunk's stream key names (``_owner``)."""
        return _owner(key, self.owners, self.statuses)

    def create(self, ep: int) -> None:
        """Re-create episode ``ep`` (interrupted) in a run of recovered episodes."""
        if self._run_id is None:
            self._run_id = self.cat.recovery.create_recovered_run()
        self.cat.recovery.create_recovered_episode(ep, self._run_id)
        self.statuses[ep] = "interrupted"
        self.owners[ep] = [ep]
        self.created.append(ep)

    def adopt(self, ep: int, where: Where, keys: list[int]) -> None:
        """Frames ``keys`` of chunk ``where`` now have rows of episode ``ep``."""
        self.have[ep].update(keys)
        self.chunks_of[ep].add(where)
        self.last[ep] = max(self.last.get(ep, where), where)


def adopt_rowless(
    cat: Catalog,
    scans: dict[int, SegmentScan],
    statuses: dict[int, str],
    next_id: int,
    root,
    tombstoned: set[tuple[int, int]] = frozenset(),  # type: ignore[assignment]
) -> tuple[dict[int, int], list[int], Foreign, int]:
    """Give frames without a row one (in the caller's transaction), or mark their chunk
    foreign. Frames of a chunk a tombstone names (``tombstoned``: ``(segment, stream
    key)``) never get an episode of their own. Returns ``(steps recovered per episode,
    episodes created, foreign chunks, frames skipped)``."""
    chunks = {(sid, off): h for sid, scan in scans.items() for off, h in scan.chunks.items()}
    walk = _RowlessWalk(cat, _Episodes(cat, chunks, statuses), root, tombstoned, next_id)
    for where, header, unpointed in _unpointed_chunks(cat, scans, chunks):
        walk.chunk(where, header, unpointed)
    cat.recovery.recount_episodes(walk.eps.created)
    return dict(sorted(walk.recovered.items())), walk.eps.created, walk.foreign, walk.skipped


def _unpointed_chunks(cat: Catalog, scans: dict[int, SegmentScan], chunks: dict):
    """``(where, header, frames no row points at)`` of the render chunks of segments
    recover rebuilds rows for, in write order, that have such frames."""
    # A chunk every slot of which a row points at has nothing to adopt (merged segments
    # and gc's copies of their chunks carry source stream keys that are not episode ids).
    pointed = cat.pointers.pointed_frames()
    merged = _not_ours_to_rebuild(cat, scans)
    for where in sorted(chunks):
        header = chunks[where]
        sid, off = where
        if header.stream_index:  # frames of a stream other than render: _recover_meta's
            continue
        if sid in merged:
            continue
        unpointed = sum((sid, off, slot) not in pointed for slot in range(header.count))
        if unpointed:
            yield where, header, unpointed


class _RowlessWalk:
    """``adopt_rowless`` under way: which episode each chunk's rowless frames join, the
    foreign chunks, and the counts."""

    def __init__(self, cat: Catalog, eps: _Episodes, root, tombstoned: set[tuple[int, int]],
                 next_id: int):  # fmt: skip
        self.cat = cat
        self.eps = eps
        self.root = root
        self.tombstoned = tombstoned
        self.next_id = next_id  # the next free id for a foreign recording
        self.recovered: dict[int, int] = defaultdict(int)
        self.foreign = Foreign()
        self.skipped = 0

    def chunk(self, where: Where, header, unpointed: int) -> None:
        """Rows for the frames of the chunk at ``where`` that have none, when they join
        the episode its stream key names (re-created if it has no row); else it is
        foreign, left alone, or its frames are skipped (no episode id to give)."""
        ep = self.eps.owner(header.stream_key)
        if ep is None:
            self.skipped += unpointed
            return
        status = self.eps.statuses.get(ep)
        if self._left_alone(where, header, status):
            return
        rowless = self.eps.rowless(ep, header)
        keys = [k for _slot, k in rowless]
        if not rowless and not (
            status is not None and self.eps.older_recording(self.root, ep, where, header.frame_keys)
        ):
            return
        if not 1 <= ep <= MAX_SQLITE_INT:
            self.skipped += len(rowless)
            return
        if status is None:
            self.eps.create(ep)
        elif not rowless or not self.eps.owns(ep, where, keys):
            self.next_id = self.foreign.add(where, header, ep, self.next_id)
            return
        shape = format_shape(header.shape)
        sid, off = where
        self.cat.recovery.insert_recovered_steps(
            (ep, k, sid, off, slot, shape) for slot, k in rowless
        )
        self.eps.adopt(ep, where, keys)
        self.recovered[ep] += len(rowless)

    def _left_alone(self, where: Where, header, status: str | None) -> bool:
        """Whether the chunk's frames are a deleted episode's, or of an episode without a
        row that a tombstone names (``rm``'d): they never get rows."""
        if status == "deleted":
            return True
        return status is None and (where[0], header.stream_key) in self.tombstoned


def _not_ours_to_rebuild(cat: Catalog, scans: dict[int, SegmentScan]) -> set[int]:
    """Segments whose frames get no rows from recover: merged ones (their rows committed
    with them) and another store's that no merge brought in (left alone)."""
    merged = set(cat.segments.merged())
    own_tag = store_tag(cat.meta.store_id())
    return merged | {sid for sid, scan in scans.items() if scan.store_tag not in (0, own_tag)}


def _owner(key: int, owners: dict[int, list[int]], statuses: dict[int, str]) -> int | None:
    """The episode a chunk's stream key names: the one episode that carries it, or the
    key itself as a new episode id; None when that is ambiguous (after a merge several
    episodes can carry one key, and an id can be taken by an episode with another key)."""
    found = owners.get(key, [])
    if len(found) == 1:
        return found[0]
    if not found and key not in statuses:
        return key
    return None


def insert_foreign(cat: Catalog, foreign: Foreign, moves: dict[Where, Where]) -> list[int]:
    """Rows for rekeyed foreign chunks at their new places (inside the compaction's
    repoint transaction). Returns the episodes created."""
    run_id = cat.recovery.create_recovered_run()
    for new_id in foreign.episodes:
        cat.recovery.create_recovered_episode(new_id, run_id)
    for where, new_id in foreign.chunks.items():
        header = foreign.headers[where]
        seg, off = moves[where]
        shape = format_shape(header.shape)
        cat.recovery.insert_recovered_steps(
            (new_id, k, seg, off, slot, shape) for slot, k in enumerate(header.frame_keys)
        )
    created = sorted(foreign.episodes)
    cat.recovery.recount_episodes(created)
    return created


#: Why frames on disk have no row after ``recover`` (``frames_not_rebuilt``' keys).
NOT_OURS = "in segments another store wrote that no merge note lists (left unread)"
NO_EPISODE = "whose stream key names no episode here, or several (left unread)"
NO_ROW = "that no step row points at (left unread)"


def frames_not_rebuilt(
    cat: Catalog, scans: dict[int, SegmentScan], tombstoned: set[tuple[int, int]], root
) -> dict[str, int]:
    """``{why: frames}``: the frames of good chunks that no step row points at and that
    are no deleted episode's (nor a merged source's episode left out of its merge, nor an
    ``rm``'d one a tombstone names), nor a byte-identical copy of the chunk their steps'
    rows point at (a stream key and step alone can be two recordings'): what the
    catalogue does not hold, so a rebuild did not give it back."""
    rows = _WhyNoRow.of(cat, tombstoned, root)
    out: dict[str, int] = defaultdict(int)
    for sid, scan in sorted(scans.items()):
        foreign = sid not in rows.merged and scan.store_tag not in (0, rows.own_tag)
        for off, header in scan.chunks.items():
            free = rows.free(sid, off, header)
            if not free:
                continue
            why = NOT_OURS if foreign else rows.why(sid, off, header, free)
            if why is not None:
                out[why] += len(free)
    return dict(out)


@dataclass
class _WhyNoRow:
    """What the catalogue holds, to tell why a frame on disk has no step row."""

    pointed: set[tuple[int, int, int]]  # (segment, offset, slot) some row points at
    home: dict[tuple[int, int, int], Where]  # (episode, stream, step) -> its row's chunk
    owners: dict[int, list[int]]  # stream key -> the episodes that carry it
    statuses: dict[int, str]
    merged: dict[int, int]  # the merged segments (id -> the id its header names)
    merge_episodes: dict[int, dict[int, int]]  # merged segment -> source id -> id here
    own_tag: int
    tombstoned: set[tuple[int, int]]
    root: object

    @classmethod
    def of(cls, cat: Catalog, tombstoned: set[tuple[int, int]], root) -> _WhyNoRow:
        pointed = cat.pointers.pointed_frames()
        home = {
            (r.episode, r.stream, r.step): (r.segment, r.offset)
            for r in cat.pointers.all()
            if r.valid
        }
        owners = cat.episodes.stream_key_owners()
        statuses = cat.episodes.statuses()
        merged = cat.segments.merged()
        merge_episodes: dict[int, dict[int, int]] = {}
        for m in cat.merges.records():
            for here, _source in m.segments:
                merge_episodes[here] = m.ids.get("episodes", {})
        own_tag = store_tag(cat.meta.store_id())
        return cls(
            pointed, home, owners, statuses, merged, merge_episodes, own_tag, tombstoned, root
        )

    def free(self, sid: int, off: int, header) -> list[int]:
        """The steps of the chunk's frames that no row points at."""
        return [
            k for slot, k in enumerate(header.frame_keys) if (sid, off, slot) not in self.pointed
        ]

    def why(self, sid: int, off: int, header, free: list[int]) -> str | None:
        """Why the frames ``free`` of a chunk of this store (or merged) have no row, or
        None when that is as it should be (deleted, not merged, ``rm``'d, or a copy)."""
        found = self.owners.get(header.stream_key, [])
        if sid in self.merged:  # its key is the source's: the note maps it to an id here
            here = self.merge_episodes.get(sid, {}).get(header.stream_key)
            found = [] if here is None else [here]
        live = [e for e in found if self.statuses.get(e) != "deleted"]
        if found and not live:
            return None  # a deleted episode's: gc reclaims them
        if not found and (sid in self.merged or (sid, header.stream_key) in self.tombstoned):
            return None  # not merged (gone from its source), or rm'd
        if len(live) != 1:
            return NO_EPISODE
        if self._copy_of_home((sid, off), live[0], header, free):
            return None
        return NO_ROW

    def _copy_of_home(self, where: Where, episode: int, header, free: list[int]) -> bool:
        """Whether the chunk at ``where`` is a byte-identical copy of the one chunk the
        rows of its steps ``free`` point at."""
        homes = {self.home.get((episode, header.stream_index, k)) for k in free}
        if len(homes) != 1 or None in homes:
            return False
        return same_chunk_data(self.root, where, homes.pop())  # type: ignore[arg-type]
