"""Merged episodes whose segments do not describe them, written as this store's by ``gc``
from what the catalogue holds (docs/FORMAT.md, "Merged stores").

A merged segment of format 1-2 (or a format-3 segment whose chunks its source copied
out of format 1-2 segments) has no ``EPISODE`` record and no steps blocks: once ``gc``
folds it into this store's own segments, nothing on disk would say whose its frames are,
and a catalogue rebuilt from the segments could only give them to a wrong episode or to
none. The catalogue knows: the episode whose frame pointers point into a chunk is its
owner. ``_Described`` writes each such episode whole, as if recorded here:

- its chunks under its id here, each with a steps block holding its step rows as
  stored (the steps whose frame is in the chunk; a step without a frame goes with the
  chunk of the frame before it, or the first chunk); none when a row holds NULL where a
  steps block cannot (terminated, truncated: rows ``recover`` rebuilt with a frame
  alone), so a rebuild gives those back as they are;
- its ``EPISODE`` record (before its first record in each output segment), made from
  its ``runs`` and ``episodes`` rows; after its last chunk its ``EPISODE_END`` and, once
  per run, the run's ``RUN_END`` when the run has ended.

An episode is written so only when every chunk holding its frames is a victim of this
compaction and no other live episode points into them; any other chunk is copied as it
is (``recover`` then names the frames it cannot rebuild).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from .._format import RecordType, described_chunk_record, pack_meta
from .._format.steps import StepMeta
from ..store import FrameStore

__all__ = ["Described"]

Where = tuple[int, int]  # (segment, offset) of a chunk record


@dataclass
class _Episode:
    episode_id: int
    records: tuple[bytes, bytes, bytes | None]  # EPISODE, EPISODE_END, RUN_END (or None)
    run_id: int
    steps: dict[Where, list[StepMeta]]  # the steps block of each of its chunks
    left: set[Where] = field(default_factory=set)  # chunks not copied yet


class Described:
    """The chunks of a compaction's victims that ``gc`` writes with their episode's
    metadata from the catalogue (module docstring)."""

    def __init__(self, store: FrameStore, unscribed: dict[int, set[int]]):
        """``unscribed``: each victim segment -> the offsets of its live chunks that no
        ``EPISODE`` record of the segment describes."""
        self.store = store
        self.by_chunk: dict[Where, _Episode] = {}
        self.runs_ended: set[int] = set()  # runs whose RUN_END this compaction wrote
        recovery = store.catalog.recovery
        owners: dict[Where, set[int]] = {}
        for seg, offsets in unscribed.items():
            found = recovery.chunk_owners(seg)
            for off in offsets:
                owners[(seg, off)] = found.get(off, set())
        candidates = sorted({e for eps in owners.values() if len(eps) == 1 for e in eps})
        for eid in candidates:
            chunks = {
                (seg, off)
                for seg, offs in store.catalog.episodes.chunks(eid).items()
                for off in offs
            }
            if not chunks <= set(owners) or any(owners[w] != {eid} for w in chunks):
                continue
            episode = self._describe(eid, chunks)
            if episode is not None:
                for w in chunks:
                    self.by_chunk[w] = episode

    def _describe(self, eid: int, chunks: set[Where]) -> _Episode | None:
        recovery = self.store.catalog.recovery
        described = recovery.described(eid)
        if described is None:
            return None
        run, ep, end, run_end = described
        rows = recovery.step_rows(eid)
        first: dict[Where, int] = {}
        for r in rows:
            if r[7] is not None:
                first.setdefault((r[7], r[8]), r[0])
        steps: dict[Where, list[StepMeta]] = defaultdict(list)
        current = min(chunks, key=lambda w: first.get(w, 0))
        # A steps block has no NULL for terminated or truncated: rows rebuilt without
        # their metadata (``recover``) hold NULL there; such an episode gets no steps
        # blocks, and a rebuild gives its rows back as they are, frame pointers alone.
        if any(r[3] is None or r[4] is None for r in rows):
            rows = []
        for step, action, reward, term, trunc, info, wall, seg, off, _slot, shape, obs in rows:
            if seg is not None:
                current = (seg, off)
            steps[current].append(
                StepMeta(
                    eid, step, action, reward, bool(term), bool(trunc), info, wall, shape,
                    has_frame=seg is not None, observation=obs,
                )
            )  # fmt: skip
        fields = {
            "stream_key": eid,
            "store_id": self.store.catalog.meta.store_id(),
            "run": run,
            "episode": ep,
            "codec": {"name": "unknown"},
            "streams": [{"name": "render", "dtype": "uint8", "shape": None}],
        }
        records = (
            pack_meta(RecordType.EPISODE, fields),
            pack_meta(RecordType.EPISODE_END, end),
            pack_meta(RecordType.RUN_END, run_end) if run_end["ended"] is not None else None,
        )
        return _Episode(eid, records, run["id"], dict(steps), set(chunks))

    def episode_of(self, where: Where) -> int | None:
        """The episode here a chunk is written for (None: copied as it is)."""
        e = self.by_chunk.get(where)
        return None if e is None else e.episode_id

    @property
    def episodes(self) -> list[int]:
        return sorted({e.episode_id for e in self.by_chunk.values()})

    def chunk(self, where: Where, raw: bytes) -> tuple[int, bytes, bytes, list[bytes]]:
        """``(episode id, its EPISODE record, the chunk rewritten, records to write
        after it)``: its ``EPISODE_END`` and its run's ``RUN_END`` after its last chunk."""
        e = self.by_chunk[where]
        rewritten = described_chunk_record(raw, e.episode_id, e.steps.get(where, []))
        e.left.discard(where)
        after: list[bytes] = []
        if not e.left:
            after.append(e.records[1])
            if e.records[2] is not None and e.run_id not in self.runs_ended:
                self.runs_ended.add(e.run_id)
                after.append(e.records[2])
        return e.episode_id, e.records[0], rewritten, after
