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
    eps = _Episodes(cat, chunks, statuses)
    # A chunk every slot of which a row points at has nothing to adopt (merged segments
    # and gc's copies of their chunks carry source stream keys that are not episode ids).
    pointed = cat.pointers.pointed_frames()
    merged = _not_ours_to_rebuild(cat, scans)
    recovered: dict[int, int] = defaultdict(int)
    foreign = Foreign()
    skipped = 0
    for where in sorted(chunks):
        header = chunks[where]
        sid, off = where
        if header.stream_index:  # frames of a stream other than render: _recover_meta's
            continue
        if sid in merged:
            continue
        unpointed = sum((sid, off, slot) not in pointed for slot in range(header.count))
        if not unpointed:
            continue
        ep = eps.owner(header.stream_key)
        if ep is None:
            skipped += unpointed
            continue
        status = statuses.get(ep)
        if status == "deleted" or (status is None and (sid, header.stream_key) in tombstoned):
            continue
        rowless = eps.rowless(ep, header)
        keys = [k for _slot, k in rowless]
        if not rowless and not (
            status is not None and eps.older_recording(root, ep, where, header.frame_keys)
        ):
            continue
        if not 1 <= ep <= MAX_SQLITE_INT:
            skipped += len(rowless)
            continue
        if status is None:
            eps.create(ep)
        elif not rowless or not eps.owns(ep, where, keys):
            next_id = foreign.add(where, header, ep, next_id)
            continue
        shape = format_shape(header.shape)
        cat.recovery.insert_recovered_steps((ep, k, sid, off, slot, shape) for slot, k in rowless)
        eps.adopt(ep, where, keys)
        recovered[ep] += len(rowless)
    cat.recovery.recount_episodes(eps.created)
    return dict(sorted(recovered.items())), eps.created, foreign, skipped


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
    pointed = cat.pointers.pointed_frames()
    home = {
        (r.episode, r.stream, r.step): (r.segment, r.offset) for r in cat.pointers.all() if r.valid
    }
    owners = cat.episodes.stream_key_owners()
    statuses = cat.episodes.statuses()
    merged = cat.segments.merged()
    merge_episodes: dict[int, dict[int, int]] = {}  # merged segment -> source id -> here
    for m in cat.merges.records():
        for here, _source in m.segments:
            merge_episodes[here] = m.ids.get("episodes", {})
    own_tag = store_tag(cat.meta.store_id())
    out: dict[str, int] = defaultdict(int)
    for sid, scan in sorted(scans.items()):
        foreign = sid not in merged and scan.store_tag not in (0, own_tag)
        for off, header in scan.chunks.items():
            free = [
                k for slot, k in enumerate(header.frame_keys) if (sid, off, slot) not in pointed
            ]
            if not free:
                continue
            if foreign:
                out[NOT_OURS] += len(free)
                continue
            found = owners.get(header.stream_key, [])
            if sid in merged:  # its key is the source's: the note maps it to an id here
                found = [merge_episodes.get(sid, {}).get(header.stream_key)]
                found = [e for e in found if e is not None]
            live = [e for e in found if statuses.get(e) != "deleted"]
            if found and not live:
                continue  # a deleted episode's: gc reclaims them
            if not found and (sid in merged or (sid, header.stream_key) in tombstoned):
                continue  # not merged (gone from its source), or rm'd
            if len(live) != 1:
                out[NO_EPISODE] += len(free)
                continue
            homes = {home.get((live[0], header.stream_index, k)) for k in free}
            if len(homes) == 1 and None not in homes:  # a copy of the chunk its rows use?
                if same_chunk_data(root, (sid, off), homes.pop()):  # type: ignore[arg-type]
                    continue
            out[NO_ROW] += len(free)
    return dict(out)
