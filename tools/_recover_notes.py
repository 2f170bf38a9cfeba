"""``recover``'s use of note segments (docs/FORMAT.md, "Note segments"): the ``DELETED``
records ``rm`` writes (tombstones) and the ``MERGED`` records ``merge`` writes.

A tombstone is honoured for the episodes it names that are this store's: its record
carries this store's id (or, without one, its segment's header tag is this store's),
and the catalogue's episode of that id has the run start and episode start the
tombstone names (another recording that used the same id is left alone). Such an
episode that the catalogue holds live is marked deleted: either ``rm`` stopped between
writing its tombstone (its commit point) and its SQLite commit, or the catalogue was
rebuilt from segments, which describe the episode as it was recorded.
"""

from __future__ import annotations

from typing import Any

from framestore.catalog import Catalog
from framestore.scan import SegmentScan
from framestore.segments import store_tag

__all__ = ["apply_tombstones", "tombstones"]


def tombstones(scans: dict[int, SegmentScan], store_id: str | None) -> dict[int, list[dict]]:
    """``{note segment: [episode entries]}`` of the ``DELETED`` records this store wrote."""
    out: dict[int, list[dict]] = {}
    for sid, scan in sorted(scans.items()):
        for rec in scan.meta_records:
            if scan.kind_of(rec) != "deleted" or not _ours(rec.meta, scan, store_id):
                continue
            entries = rec.meta.get("episodes")
            if isinstance(entries, list):
                out.setdefault(sid, []).extend(e for e in entries if isinstance(e, dict))
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
    tombstones name (module docstring); ``statuses`` is updated. Returns their ids."""
    found = tombstones(scans, cat.store_id())
    if not found:
        return []
    episodes, runs = cat.origins()
    doomed = []
    for entries in found.values():
        for e in entries:
            eid = e.get("id")
            if type(eid) is not int or statuses.get(eid) in (None, "deleted"):
                continue
            run_id, started = episodes.get(eid, (None, None))
            if (runs.get(run_id), started) == (e.get("run_created"), e.get("started")):
                doomed.append(eid)
                statuses[eid] = "deleted"
    doomed = sorted(set(doomed))
    if doomed:
        cat.mark_deleted(doomed)
    return doomed
