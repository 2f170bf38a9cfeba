"""``framestore info``: what a store holds and what it costs on disk.

Read-only: segment states come from the files (sealed or active) and the catalogue's
``obsolete``/``compacting`` marks; nothing is written, so ``info`` works on a read-only
store and while another process records.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from framestore import FrameStore
from framestore.disk.segments import VERSION, list_segment_ids
from framestore.state.bookkeeping import segment_state

from .gc import DEFAULT_THRESHOLD, gc_blocker, reclaimable

__all__ = ["store_info", "store_state"]


def store_state(store: FrameStore) -> dict[str, Any]:
    """What state the store is in, for read-only verbs to say: ``state`` is
    ``published`` (never changes), ``recording`` (a writer holds the lock: figures are a
    snapshot), ``needs recover`` (a writer stopped mid-recording, or a merge did: run
    ``framestore recover``) or ``idle``; ``detail`` says it in words and
    ``writer_running`` is the lock's answer (None when it cannot be told)."""
    if store.published:
        return {"state": "published", "writer_running": False, "detail": "read-only copy"}
    running = store.writer_running()
    if running:
        return {
            "state": "recording",
            "writer_running": True,
            "detail": "a writer is recording: these figures are a snapshot",
        }
    blocked = gc_blocker(store)
    if blocked is not None:
        return {"state": "needs recover", "writer_running": running, "detail": blocked}
    return {"state": "idle", "writer_running": running, "detail": "no writer"}


def store_info(store: FrameStore) -> dict[str, Any]:
    """Counts and sizes of an open ``FrameStore``.

    Returns a JSON-able dict:

    - ``runs``, ``episodes`` (``live``, ``deleted``, ``by_status``), ``steps`` and
      ``frames`` (step rows / rows with a stored frame, live episodes only),
      ``frames_dropped``; ``streams``: stored frames per stream name (``render`` first;
      a frame stored once for two streams counts in both);
    - ``segments``: ``count``, ``by_state`` (``active``, ``sealed``, ``obsolete``, ...),
      ``bytes`` (files on disk), ``live_bytes`` (chunk records of live episodes),
      ``overhead_bytes`` (file headers and seals), ``dead_bytes`` (the rest: deleted
      episodes, obsolete segments), ``reclaimable_bytes`` (what ``framestore gc`` frees
      now, at ``gc_threshold``) and ``reclaimable_all_bytes`` (with ``--threshold 1``);
      see ``framestore.DiskUsage``;
    - ``database``: ``bytes`` of ``framestore.db``, ``wal_bytes``, ``shm_bytes``;
    - ``bytes_on_disk``: segments + database files (what ``record`` reports too);
    - ``raw_frame_bytes``: uncompressed size of the live frames of every stream (from
      their shapes; a frame stored once for two streams counted once) and
      ``compression_ratio`` = raw frame bytes / live segment bytes (``None`` when empty);
    - ``durability``: runs per durability profile;
    - ``schema``: database schema version (migrations applied); ``format_version``:
      the segment format version this framestore writes;
    - ``state``: see ``store_state`` (a live store and a crashed one are reported, not
      refused). A published store has no WAL, SHM or reclaimable bytes (``None``).
    """
    stats = store.catalog.stats.summary()
    marks = store.catalog.segments.states()
    usage = store.disk_usage()
    live_bytes = usage.live
    states = Counter(segment_state(store, sid, marks) for sid in list_segment_ids(store.root))
    by_status = stats.episodes_by_status
    deleted = by_status.get("deleted", 0)
    streams = store.catalog.streams.totals()
    raw = stats.raw_frame_bytes + sum(r for _n, r in streams.values())
    frozen = store.published  # nothing to reclaim, no WAL: it never changes
    return {
        "store": str(store.root),
        "runs": stats.runs,
        "episodes": {
            "live": sum(by_status.values()) - deleted,
            "deleted": deleted,
            "by_status": by_status,
        },
        "steps": stats.steps,
        "frames": stats.frames,
        "frames_dropped": stats.frames_dropped,
        "streams": {"render": stats.frames, **{n: f for n, (f, _r) in streams.items()}},
        "segments": {
            "count": sum(states.values()),
            "by_state": dict(sorted(states.items())),
            "bytes": usage.segments,
            "live_bytes": live_bytes,
            "overhead_bytes": usage.overhead,
            "dead_bytes": usage.dead,
            "reclaimable_bytes": None if frozen else reclaimable(store, DEFAULT_THRESHOLD),
            "reclaimable_all_bytes": None if frozen else reclaimable(store, 1.0),
            "gc_threshold": DEFAULT_THRESHOLD,
        },
        "database": {
            "bytes": usage.database,
            "wal_bytes": None if frozen else usage.wal,
            "shm_bytes": None if frozen else usage.shm,
        },
        "bytes_on_disk": usage.total,
        "raw_frame_bytes": raw,
        "compression_ratio": round(raw / live_bytes, 2) if live_bytes else None,
        "durability": stats.runs_by_durability,
        "schema": store.catalog.connection.schema(),
        "format_version": VERSION,
        "state": store_state(store),
    }
