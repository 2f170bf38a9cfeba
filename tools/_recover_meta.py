"""``recover``'s use of what version-3 segments say about themselves (docs/FORMAT.md,
"Self-describing segments"): runs, episodes and step rows rebuilt whole from the
``EPISODE``, ``EPISODE_END`` and ``RUN_END`` records and the chunks' steps blocks; the
pointers of streams other than render from their chunks (stream index >= 1) and from the
steps blocks' ``shared`` column, their ``streams`` rows from the ``EPISODE`` records.

Only segments this store wrote are read (a merged segment's rows committed with it, and
its stream keys are its source's). A segment's records of an episode are used only when
they are that episode's: its ``EPISODE`` record names the run and start time the
catalogue holds for the id, or the catalogue does not know the id (nor another episode
carrying its stream key) and the run, if known, is the one named. Anything else (an
earlier recording that used the same id) is left to ``tools._recover_rows``, which keeps
such frames apart. Existing rows are never changed, except an episode still
``recording`` whose ``EPISODE_END`` record says how it ended.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from framestore.catalog import Catalog, format_shape
from framestore.disk.scan import SegmentScan, chunk_steps
from framestore.disk.segments import open_segment, segment_path, store_id_with_tag, store_tag
from framestore.errors import CorruptData

__all__ = ["Restored", "restore_from_segments", "store_id_of_segments"]


@dataclass
class Restored:
    """What ``restore_from_segments`` rebuilt."""

    steps: dict[int, int] = field(default_factory=dict)  # episode -> rows rebuilt whole
    episodes_created: list[int] = field(default_factory=list)
    episodes_ended: list[int] = field(default_factory=list)  # end restored from a segment
    unreadable: int = 0  # chunks whose steps block could not be read
    bare: dict[int, int] = field(default_factory=dict)  # episode -> rows of a frame alone
    recovered_run: int | None = None  # the run of those episodes

    def merge(self, other: Restored) -> None:
        """Add what another pass rebuilt (merged episodes: ``tools._recover_notes``)."""
        self.steps = dict(sorted({**self.steps, **other.steps}.items()))
        self.bare = dict(sorted({**self.bare, **other.bare}.items()))
        self.episodes_created += other.episodes_created
        self.episodes_ended += other.episodes_ended
        self.unreadable += other.unreadable


def _int(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value < 2**63 else None


class _Episodes:
    """Which ``EPISODE`` records are this catalogue's episodes (the module docstring)."""

    def __init__(self, cat: Catalog, statuses: dict[int, str]):
        self.cat = cat
        self.statuses = statuses
        self.episodes, self.runs = cat.recovery.origins()
        self.owners = cat.episodes.stream_key_owners()
        self.created: list[int] = []
        # (run id in the segment, created) -> its row's id: a run whose id a later
        # recorder took (it never committed) is rebuilt under a new id.
        self.run_ids: dict[tuple[int, Any], int] = {
            (rid, created): rid for rid, created in self.runs.items()
        }

    def run_id(self, run_id: int, created: Any) -> int | None:
        """The row id of the run a segment names (None: the catalogue has none)."""
        return self.run_ids.get((run_id, created))

    def claim(self, record: dict) -> int | None:
        """The episode id an ``EPISODE`` record describes, creating its run and episode
        rows when the catalogue lacks them; None when it is not ours to use."""
        ep, run = record.get("episode"), record.get("run")
        key = _int(record.get("stream_key"))
        if not isinstance(ep, dict) or not isinstance(run, dict) or key is None:
            return None
        eid, run_id = _int(ep.get("id")), _int(run.get("id"))
        if eid is None or run_id is None or eid == 0:
            return None
        origin = (run_id, run.get("created"))
        if eid in self.episodes:
            row_id = self.run_ids.get(origin)
            mine = row_id is not None and self.episodes[eid] == (row_id, ep.get("started"))
            return eid if mine and self.owners.get(key) == [eid] else None
        if eid in self.statuses or key in self.owners:
            return None
        row_id = self.run_ids.get(origin)
        if row_id is None:
            row_id = self.cat.recovery.restore_run(run, None if run_id in self.runs else run_id)
            self.runs[row_id] = run.get("created")
            self.run_ids[origin] = row_id
        self.cat.recovery.restore_episode(ep, row_id, key)
        self.episodes[eid] = (row_id, ep.get("started"))
        self.owners[key] = [eid]
        self.statuses[eid] = "recording"
        self.created.append(eid)
        return eid


@dataclass
class _SegmentMeta:
    """What the segments' ``EPISODE``, ``EPISODE_END`` and ``RUN_END`` records say, read
    segment by segment and restored once all are read."""

    eps: _Episodes
    streams: dict[int, list] = field(default_factory=dict)  # episode id -> its streams
    ends: dict[int, dict] = field(default_factory=dict)  # episode id -> its EPISODE_END
    run_ends: dict[int, dict] = field(default_factory=dict)  # run row id -> its RUN_END
    run_created: dict[Any, Any] = field(default_factory=dict)  # run id -> its created time

    def read(self, scan: SegmentScan) -> dict[int, int | None]:
        """One segment's records, in order; returns which episode each stream key of the
        segment is (None: not ours to use)."""
        owner: dict[int, int | None] = {}
        for rec in scan.meta_records:
            kind, meta = scan.kind_of(rec), rec.meta
            key = _int(meta.get("stream_key"))
            if kind == "episode" and key is not None:
                owner[key] = self._episode(meta)
            elif kind == "episode_end" and key is not None:
                eid = owner.get(key)
                if eid is not None and eid == meta.get("episode_id"):
                    self.ends[eid] = meta
            elif kind == "run_end" and _int(meta.get("run_id")) is not None:
                created = self.run_created.get(meta["run_id"])
                row_id = self.eps.run_id(meta["run_id"], created)
                if row_id is not None:
                    self.run_ends[row_id] = meta
            if kind == "episode" and isinstance(meta.get("run"), dict):
                run = meta["run"]
                self.run_created[run.get("id")] = run.get("created")
        return owner

    def _episode(self, meta: dict) -> int | None:
        """Claim an ``EPISODE`` record's episode and keep the longest streams list seen."""
        eid = self.eps.claim(meta)
        listed = meta.get("streams")
        if eid is not None and isinstance(listed, list):
            if len(listed) > len(self.streams.get(eid, ())):
                self.streams[eid] = [d for d in listed if isinstance(d, dict)]
        return eid

    def restore(self, cat: Catalog, out: Restored) -> None:
        """The streams rows, episode ends and run ends the records describe."""
        for eid, listed in self.streams.items():
            cat.recovery.restore_streams(eid, listed)
        for eid, end in self.ends.items():
            if cat.recovery.restore_episode_end(eid, end):
                out.episodes_ended.append(eid)
        for run_id, end in self.run_ends.items():
            stats = end.get("stats")
            cat.recovery.restore_run_end(
                run_id, end.get("ended"), stats if isinstance(stats, str) else None
            )


def restore_from_segments(
    cat: Catalog, root, scans: dict[int, SegmentScan], statuses: dict[int, str]
) -> Restored:
    """Rebuild from this store's version-3 segments the rows the catalogue lacks (in the
    caller's transaction). ``statuses`` is updated with the episodes created."""
    out = Restored()
    merged = cat.segments.merged()
    eps = _Episodes(cat, statuses)
    records = _SegmentMeta(eps)
    have = defaultdict(set, cat.recovery.step_keys())
    pointed = cat.pointers.pointed_frames()
    restored: dict[int, int] = defaultdict(int)
    own_tag = store_tag(cat.meta.store_id())
    for sid in sorted(scans):
        scan = scans[sid]
        if sid in merged or (scan.version or 0) < 3 or scan.store_tag not in (0, own_tag):
            continue  # (another store's segment, not merged: verify reports it)
        owner = records.read(scan)
        rows, stream_rows = _steps_of_segment(root, scan, owner, eps.statuses, have, pointed, out)
        for row in rows:
            restored[row[0]] += 1
        cat.recovery.restore_steps(row[:12] for row in rows)
        cat.recovery.restore_observations(
            (row[12], row[0], row[1]) for row in rows if row[12] is not None
        )
        stream_rows += _stream_frames_of_segment(
            scan, owner, eps.statuses, pointed, records.streams
        )
        cat.recovery.restore_stream_frames(stream_rows)
    records.restore(cat, out)
    out.steps = dict(sorted(restored.items()))
    out.episodes_created = eps.created
    return out


def _stream_frames_of_segment(scan, owner, statuses, pointed, streams) -> list[tuple]:
    """``step_frames`` rows for the frames of streams other than render (chunks of stream
    index >= 1) of one segment that no row points at. A frame's shape is its stream's
    (the ``EPISODE`` record's) when the sizes agree (a frame stack is kept as rows),
    else the chunk's."""
    rows: list[tuple] = []
    sid = scan.segment
    for off, header in scan.chunks.items():
        eid = owner.get(header.stream_key)
        if eid is None or header.stream_index == 0 or statuses.get(eid) == "deleted":
            continue
        listed = streams.get(eid, [])
        declared = (
            listed[header.stream_index].get("shape") if header.stream_index < len(listed) else None
        )
        shape = format_shape(header.shape)
        if isinstance(declared, list) and declared and all(type(d) is int for d in declared):
            if math.prod(declared) == math.prod(header.shape):
                shape = "x".join(str(d) for d in declared)
        for slot, k in enumerate(header.frame_keys):
            if (sid, off, slot) not in pointed:
                rows.append((eid, header.stream_index, k, sid, off, slot, shape))
    return rows


def _steps_of_segment(
    root, scan, owner, statuses, have, pointed, out: Restored
) -> tuple[list[tuple], list[tuple]]:
    """Rows for the steps of one segment's chunks that have none (module docstring), and
    the ``step_frames`` rows of the streams that share those steps' render frames."""
    rows: list[tuple] = []
    stream_rows: list[tuple] = []
    sid = scan.segment
    wanted = []
    for off, header in scan.chunks.items():
        eid = owner.get(header.stream_key)
        if eid is None or not header.steps_length or statuses.get(eid) == "deleted":
            continue
        unpointed = any((sid, off, slot) not in pointed for slot in range(header.count))
        if unpointed or header.steps_count > header.count:
            wanted.append((off, header, eid))
    if not wanted:
        return rows, stream_rows
    with open_segment(segment_path(root, sid), sid) as fp:
        for off, header, eid in sorted(wanted, key=lambda w: w[0]):
            try:
                steps = chunk_steps(fp, sid, off, header)
            except CorruptData:
                out.unreadable += 1
                continue
            slots = {k: i for i, k in enumerate(header.frame_keys)}
            for s in steps:
                if s.step in have[eid]:
                    continue
                slot = slots.get(s.step) if s.has_frame else None
                where = (sid, off, slot) if slot is not None else (None, None, None)
                rows.append(
                    (eid, s.step, s.action, s.reward, int(s.terminated), int(s.truncated),
                     s.info, s.wall_time, *where, s.frame_shape, s.observation)
                )  # fmt: skip
                if slot is not None:  # streams whose frame is this render frame
                    stream_rows += [(eid, i, s.step, *where, s.frame_shape) for i in s.shared]
                have[eid].add(s.step)
    return rows, stream_rows


def store_id_of_segments(scans: dict[int, SegmentScan]) -> str | None:
    """The store id the segments name: the one the note segments (``DELETED``,
    ``MERGED``: written by this store alone) carry, tagged with it; without notes, the
    one most segments carry in ``EPISODE`` records whose file header is tagged with it
    (None when none is)."""
    votes: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    for scan in scans.values():
        for rec in scan.meta_records:
            sid, kind = rec.meta.get("store_id"), scan.kind_of(rec)
            if kind not in ("episode", "deleted", "merged") or not isinstance(sid, str):
                continue
            if scan.store_tag == store_tag(sid):
                (votes if kind == "episode" else notes)[sid] += 1
                break
    # Note segments (rm, merge) are only ever this store's (merge copies none): their id
    # decides; a merged store's segments of another store may outnumber its own. A store
    # of format 1-2 segments names itself nowhere else.
    votes = notes or votes
    if votes:
        return votes.most_common(1)[0][0]
    return _id_of_tag(scans)


def _id_of_tag(scans: dict[int, SegmentScan]) -> str | None:
    """Without notes or ``EPISODE`` records (a format 1-2 store an earlier gc, or one
    stopped before it wrote them, left format-3 segments in): nothing on disk names the
    store's id, but its segments carry its tag. The tag most of them carry (a merged
    store's segments are another's: the fewer, unless it holds more merged than own)
    is this store's, and an id with that tag (``store_id_with_tag``) names the store
    from then on: its segments read as its own. None when no segment is tagged or two
    tags are as common."""
    tags = Counter(scan.store_tag for scan in scans.values() if scan.store_tag)
    top = tags.most_common(2)
    if not top or (len(top) == 2 and top[0][1] == top[1][1]):
        return None
    return store_id_with_tag(top[0][0])
