"""``framestore info``: what a store holds and what it costs on disk.

Read-only: segment states come from the files (sealed or active) and the catalogue's
``obsolete``/``compacting`` marks; nothing is written, so ``info`` works on a read-only
store and while another process records.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from typing import Any

from framestore._catalog import is_sealed, live_bytes_by_segment
from framestore._format import VERSION as SEGMENT_FORMAT_VERSION
from framestore._segments import list_segment_ids, segment_path

__all__ = ["store_info"]


def _file_size(path: str | os.PathLike) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _schema(store) -> dict[str, Any]:
    """The database schema version: migrations applied (sqlite-utils records them)."""
    import migrations
    from telemetry.db import schema_version

    applied = migrations.applied(store.db)
    return {
        "version": schema_version(store.db),
        "latest_migration": applied[-1] if applied else None,
        "pending_migrations": migrations.pending_names(store.db),
    }


def store_info(store) -> dict[str, Any]:
    """Counts and sizes of an open ``FrameStore``.

    Returns a JSON-able dict:

    - ``runs``, ``episodes`` (``live``, ``deleted``, ``by_status``), ``steps`` and
      ``frames`` (step rows / rows with a stored frame, live episodes only),
      ``frames_dropped``;
    - ``segments``: ``count``, ``by_state`` (``active``, ``sealed``, ``obsolete``, ...),
      ``bytes`` (files on disk), ``live_bytes`` (chunk records of live episodes),
      ``dead_bytes`` (the rest: deleted episodes, obsolete segments, headers and seals;
      what ``gc`` can reclaim, less the per-file overhead);
    - ``database``: ``bytes`` of ``framestore.db``, ``wal_bytes``, ``shm_bytes``;
    - ``bytes_on_disk``: segments + database files;
    - ``raw_frame_bytes``: uncompressed size of the live frames (from their shapes) and
      ``compression_ratio`` = raw frame bytes / live segment bytes (``None`` when empty);
    - ``durability``: runs per durability profile;
    - ``schema``: database schema version (migrations applied); ``format_version``:
      the segment format version this framestore writes.
    """
    conn = store.db.conn
    with store._db_lock:
        n_runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        by_status = dict(conn.execute("SELECT status, COUNT(*) FROM episodes GROUP BY status"))
        steps, frames = conn.execute(
            "SELECT COUNT(*), COUNT(s.frame_segment) FROM steps s "
            "JOIN episodes e ON e.id = s.episode_id WHERE e.status != 'deleted'"
        ).fetchone()
        raw = 0
        for shape, count in conn.execute(
            "SELECT s.frame_shape, COUNT(*) FROM steps s "
            "JOIN episodes e ON e.id = s.episode_id "
            "WHERE e.status != 'deleted' AND s.frame_segment IS NOT NULL "
            "GROUP BY s.frame_shape"
        ):
            if shape:
                raw += math.prod(int(x) for x in shape.split("x")) * count
        (dropped,) = conn.execute(
            "SELECT COALESCE(SUM(frames_dropped), 0) FROM episodes WHERE status != 'deleted'"
        ).fetchone()
        durability = dict(
            conn.execute(
                "SELECT COALESCE(durability, 'unknown'), COUNT(*) FROM runs "
                "GROUP BY durability ORDER BY durability"
            )
        )
        marks = dict(conn.execute("SELECT id, state FROM segments"))
        live = live_bytes_by_segment(store)
        schema = _schema(store)

    states: Counter[str] = Counter()
    seg_bytes = 0
    for sid in list_segment_ids(store.root):
        path = segment_path(store.root, sid)
        size = _file_size(path)
        seg_bytes += size
        state = marks.get(sid)
        if state not in ("obsolete", "compacting"):
            state = "sealed" if is_sealed(path) else "active"
        states[state] += 1
    live_bytes = sum(live.values())
    db_bytes = _file_size(store.db_path)
    wal_bytes = _file_size(f"{store.db_path}-wal")
    shm_bytes = _file_size(f"{store.db_path}-shm")
    deleted = by_status.get("deleted", 0)
    return {
        "store": str(store.root),
        "runs": n_runs,
        "episodes": {
            "live": sum(by_status.values()) - deleted,
            "deleted": deleted,
            "by_status": by_status,
        },
        "steps": steps,
        "frames": frames,
        "frames_dropped": dropped,
        "segments": {
            "count": sum(states.values()),
            "by_state": dict(sorted(states.items())),
            "bytes": seg_bytes,
            "live_bytes": live_bytes,
            "dead_bytes": max(0, seg_bytes - live_bytes),
        },
        "database": {"bytes": db_bytes, "wal_bytes": wal_bytes, "shm_bytes": shm_bytes},
        "bytes_on_disk": seg_bytes + db_bytes + wal_bytes + shm_bytes,
        "raw_frame_bytes": raw,
        "compression_ratio": round(raw / live_bytes, 2) if live_bytes else None,
        "durability": durability,
        "schema": schema,
        "format_version": SEGMENT_FORMAT_VERSION,
    }
