"""``recover``'s use of note segments (docs/FORMAT.md, "Note segments"): the ``DELETED``
records ``rm`` writes (tombstones) and the ``MERGED`` records ``merge`` writes (a
merge's provenance: ``restore_merges`` rebuilds the merge journal, the merged segments'
rows and the merged-in store tags of a lost catalogue from them).

A tombstone is honoured for the episodes it names that are this store's: its record
carries this store's id (or, without one, its segment's header tag is this store's),
and the catalogue's episode of that id has the run start and episode start the
tombstone names (another recording that used the same id is left alone). Such an
episode that the catalogue holds live is marked deleted: either ``rm`` stopped between
writing its tombstone (its commit point) and its SQLite commit, or the catalogue was
rebuilt from segments, which describe the episode as it was recorded.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from framestore.catalog import MERGED_TAGS, Catalog, MergeRecord, format_shape
from framestore.disk.scan import SegmentScan
from framestore.disk.segments import store_tag

from ._recover_meta import Restored
from ._recover_meta import _steps_of_segment as steps_of_segment
from ._recover_meta import _stream_frames_of_segment as stream_frames_of_segment

__all__ = [
    "apply_tombstones",
    "tombstoned_chunks",
    "merge_notes",
    "restore_merged_episodes",
    "restore_merges",
    "tombstones",
]


def tombstones(scans: dict[int, SegmentScan], store_id: str | None) -> dict[int, list[dict]]:
    """``{note segment: [episode entries]}`` of the ``DELETED`` records this store wrote."""
    return {sid: note.entries for sid, note in _tombstone_notes(scans, store_id).items()}


def tombstoned_chunks(scans: dict[int, SegmentScan], store_id: str | None) -> set[tuple[int, int]]:
    """``(segment, stream key)`` of the chunks this store's tombstones name: a segment a
    tombstone lists and the stream key of an episode it names. Frames of a format 1-2
    segment say nothing else of whose they are: recover never gives them an episode
    again (an ``rm``'d episode of an old store stays gone in a rebuilt catalogue)."""
    out = set()
    for note in _tombstone_notes(scans, store_id).values():
        keys = {e.get("stream_key") for e in note.entries}
        out |= {(sid, key) for sid in note.listed for key in keys if type(key) is int}
    return out


@dataclass
class _Tombstone:
    entries: list[dict] = field(default_factory=list)
    listed: set[int] = field(default_factory=set)  # the segments it lists


def _tombstone_notes(scans: dict[int, SegmentScan], store_id: str | None) -> dict[int, _Tombstone]:
    out: dict[int, _Tombstone] = {}
    for sid, scan in sorted(scans.items()):
        for rec in scan.meta_records:
            if scan.kind_of(rec) != "deleted" or not _ours(rec.meta, scan, store_id):
                continue
            note = out.setdefault(sid, _Tombstone())
            entries, listed = rec.meta.get("episodes"), rec.meta.get("segments")
            if isinstance(entries, list):
                note.entries.extend(e for e in entries if isinstance(e, dict))
            if isinstance(listed, list):
                note.listed.update(s for s in listed if type(s) is int)
    return out


def _ours(meta: dict[str, Any], scan: SegmentScan, store_id: str | None) -> bool:
    named = meta.get("store_id")
    if isinstance(named, str):
        return named == store_id
    return bool(store_id) and scan.store_tag == store_tag(store_id)


def apply_tombstones(
    cat: Catalog, scans: dict[int, SegmentScan], statuses: dict[int, str]
) -> list[int]:
    """Mark deleted (in the caller's transaction) the live episodes this store's
    tombstones name (module docstring); ``statuses`` is updated. Returns their ids.

    Their step rows go too once a segment the tombstone lists is gone: a ``gc`` ran
    after the ``rm`` (only compactions delete segments), and gc drops every deleted
    episode's step rows; before that the catalogue held them, as rebuilt."""
    found = _tombstone_notes(scans, cat.meta.store_id())
    if not found:
        return []
    episodes, runs = cat.recovery.origins()
    doomed, collected = [], []
    for note in found.values():
        for e in note.entries:
            eid = e.get("id")
            if type(eid) is not int or statuses.get(eid) in (None, "deleted"):
                continue
            run_id, started = episodes.get(eid, (None, None))
            if (runs.get(run_id), started) == (e.get("run_created"), e.get("started")):
                doomed.append(eid)
                statuses[eid] = "deleted"
                if isinstance(e.get("end"), dict):  # (written from 0.3.x's issue 19 on)
                    cat.recovery.restore_deleted_end(eid, e["end"])
                if not note.listed <= set(scans):
                    collected.append(eid)
    doomed = sorted(set(doomed))
    if doomed:
        cat.episodes.mark_deleted(doomed)
        cat.pointers.drop_step_rows(sorted(set(collected)))
    return doomed


# --------------------------------------------------------------------------- merges
def merge_notes(scans: dict[int, SegmentScan], store_id: str | None) -> dict[int, dict]:
    """``{journal id: the MERGED fields, lists joined}`` of the notes this store wrote
    (a note split over several records repeats every field but ``episodes``); each
    with ``note``, the note segment's id."""
    out: dict[int, dict] = {}
    for sid, scan in sorted(scans.items()):
        for rec in scan.meta_records:
            meta = rec.meta
            mid = meta.get("merge_id")
            if scan.kind_of(rec) != "merged" or type(mid) is not int:
                continue
            if not _ours(meta, scan, store_id) or not _well_formed(meta):
                continue
            if mid in out:
                out[mid]["episodes"] += meta["episodes"]
            else:
                out[mid] = {**meta, "episodes": list(meta["episodes"]), "note": sid}
    return out


def _pairs(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 2 and all(type(x) is int for x in p) for p in value
    )


def _well_formed(meta: dict[str, Any]) -> bool:
    text = ("source_id", "source_path", "fingerprint", "mode")
    counts = meta.get("counts")
    return (
        all(isinstance(meta.get(k), str) for k in text)
        and all(_pairs(meta.get(k)) for k in ("segments", "runs", "episodes"))
        and isinstance(meta.get("tags"), list)
        and all(type(t) is int for t in meta["tags"])
        and isinstance(counts, dict)
        and all(type(counts.get(k)) is int for k in ("runs", "episodes", "steps"))
    )


def restore_merges(cat: Catalog, scans: dict[int, SegmentScan]) -> list[int]:
    """The journal rows of finished merges the catalogue lacks, rebuilt from their
    provenance notes (in the caller's transaction), with the rows of the segments they
    placed (their header ids) and the merged-in store tags. Returns the journal ids
    restored. A note is written after every segment of its merge was placed, so a
    merge whose note is on disk is complete on disk (one killed before its commit,
    its journal lost with the catalogue, is rolled forward)."""
    notes = merge_notes(scans, cat.meta.store_id())
    have = {m.id for m in cat.merges.records()}
    restored = []
    tags = set(cat.meta.get(MERGED_TAGS) or [])
    for mid, n in sorted(notes.items()):
        if mid in have:
            continue
        counts = n["counts"]
        cat.merges.restore(
            MergeRecord(
                id=mid, source_id=n["source_id"], source_path=n["source_path"],
                fingerprint=n["fingerprint"], mode=n["mode"], state="done",
                segments=[(a, b) for a, b in n["segments"]],
                ids={"runs": dict(n["runs"]), "episodes": dict(n["episodes"])},
                started=n.get("started"), finished=n.get("finished"),
                runs=counts["runs"], episodes=counts["episodes"], steps=counts["steps"],
            )
        )  # fmt: skip
        for new, header in n["segments"]:
            if new != n["note"] and new in scans:
                cat.segments.record(new, "sealed", scans[new].size, header_id=header)
        tags |= set(n["tags"])
        restored.append(mid)
    if restored:
        cat.meta.set(MERGED_TAGS, sorted(tags))
    return restored


def restore_merged_episodes(
    cat: Catalog,
    root,
    scans: dict[int, SegmentScan],
    statuses: dict[int, str],
    notes: dict[int, dict],
) -> Restored:
    """Runs, episodes and steps of merged episodes the catalogue lacks, rebuilt from
    the segments their merge placed (still as placed: not yet folded into this store's
    own by ``gc``) and mapped through the note's ids (in the caller's transaction): a
    segment's ``EPISODE`` record is used when the source store wrote it and the note
    maps its episode. ``statuses`` is updated. Records of stores the source had merged
    itself are not (their ids are mapped by the source's own notes, not copied)."""
    out = Restored()
    episodes, runs = cat.recovery.origins()
    have = defaultdict(set, cat.recovery.step_keys())
    pointed = cat.pointers.pointed_frames()
    restored: dict[int, int] = defaultdict(int)
    known = set(statuses)
    for n in notes.values():
        ep_map, run_map = dict(n["episodes"]), dict(n["runs"])
        for new, _header in n["segments"]:
            scan = scans.get(new)
            if scan is None or new == n["note"]:
                continue
            owner, streams = _merged_records(
                cat, scan, n["source_id"], ep_map, run_map, episodes, runs, statuses, out
            )
            _bare_merged_rows(cat, scan, ep_map, owner, statuses, have, pointed, out)
            for eid, listed in streams.items():
                cat.recovery.restore_streams(eid, listed)
            rows, stream_rows = steps_of_segment(root, scan, owner, statuses, have, pointed, out)
            for row in rows:
                restored[row[0]] += 1
            cat.recovery.restore_steps(row[:12] for row in rows)
            cat.recovery.restore_observations(
                (r[12], r[0], r[1]) for r in rows if r[12] is not None
            )
            stream_rows += stream_frames_of_segment(scan, owner, statuses, pointed, streams)
            cat.recovery.restore_stream_frames(stream_rows)
    out.steps = dict(sorted(restored.items()))
    out.episodes_created = sorted(set(statuses) - known)
    return out


def _bare_merged_rows(cat, scan, ep_map, owner, statuses, have, pointed, out: Restored) -> None:
    """Rows for the frames of a merged segment's chunks that no ``EPISODE`` record of it
    describes (a format 1-2 segment's, or chunks its source copied out of one): the
    note's map names their episode here; their metadata was only in the catalogue, so
    they get a frame pointer alone (``out.bare``, reported as metadata lost) and, when
    the episode has no row, one in a recovered run (its stream key the chunks'; left
    ``recording``: recover closes it as interrupted, counted from its rows)."""
    sid = scan.segment
    for off, header in sorted(scan.chunks.items()):
        eid = ep_map.get(header.stream_key)
        if header.stream_index or header.stream_key in owner or eid is None:
            continue
        if statuses.get(eid) == "deleted":
            continue
        rows = [
            (eid, k, sid, off, slot, format_shape(header.shape))
            for slot, k in enumerate(header.frame_keys)
            if (sid, off, slot) not in pointed and k not in have[eid]
        ]
        if not rows:
            continue
        if eid not in statuses:  # closed as interrupted, counted from its rows, at the end
            if out.recovered_run is None:
                out.recovered_run = cat.recovery.create_recovered_run()
            cat.recovery.restore_episode(
                {"id": eid, "idx": eid}, out.recovered_run, header.stream_key
            )
            statuses[eid] = "recording"
        cat.recovery.insert_recovered_steps(rows)
        have[eid].update(r[1] for r in rows)
        out.bare[eid] = out.bare.get(eid, 0) + len(rows)


def _merged_records(
    cat, scan, source_id, ep_map, run_map, episodes, runs, statuses, out: Restored
) -> tuple[dict[int, int | None], dict[int, list]]:
    """A merged segment's ``EPISODE``, ``EPISODE_END`` and ``RUN_END`` records of the
    source store, mapped through the note's ids: episodes claimed (``_merged_episode``),
    ends restored. Returns which episode each stream key is, and each episode's streams."""
    owner: dict[int, int | None] = {}
    streams: dict[int, list] = {}
    for rec in scan.meta_records:
        meta, kind = rec.meta, scan.kind_of(rec)
        key = meta.get("stream_key")
        if kind == "episode" and meta.get("store_id") == source_id:
            eid = _merged_episode(cat, meta, ep_map, run_map, episodes, runs, statuses)
            owner[key] = eid
            listed = meta.get("streams")
            if eid is not None and isinstance(listed, list):
                streams[eid] = [d for d in listed if isinstance(d, dict)]
        elif kind == "episode_end" and owner.get(key) is not None:
            if cat.recovery.restore_episode_end(owner[key], meta):
                out.episodes_ended.append(owner[key])
        elif kind == "run_end" and meta.get("run_id") in run_map:
            stats = meta.get("stats")
            cat.recovery.restore_run_end(
                run_map[meta["run_id"]], meta.get("ended"),
                stats if isinstance(stats, str) else None,
            )  # fmt: skip
    return owner, streams


def _merged_episode(cat, meta, ep_map, run_map, episodes, runs, statuses) -> int | None:
    """The id here of the merged episode an ``EPISODE`` record describes, its run and
    episode rows created when the catalogue lacks them (None: not merged by this note,
    or the id here holds another episode)."""
    ep, run = meta.get("episode"), meta.get("run")
    if not isinstance(ep, dict) or not isinstance(run, dict):
        return None
    eid, run_id = ep_map.get(ep.get("id")), run_map.get(run.get("id"))
    if eid is None or run_id is None or type(meta.get("stream_key")) is not int:
        return None
    if eid in episodes:  # restored already (another segment, or an earlier merge)
        return eid if episodes[eid] == (run_id, ep.get("started")) else None
    if run_id not in runs:
        cat.recovery.restore_run({**run, "id": run_id}, run_id)
        runs[run_id] = run.get("created")
    continues = ep_map.get(ep.get("continues_episode"))
    cat.recovery.restore_episode({**ep, "id": eid, "continues_episode": continues}, run_id,
                        meta["stream_key"])  # fmt: skip
    episodes[eid] = (run_id, ep.get("started"))
    statuses[eid] = "recording"
    return eid
