"""The ``segments`` table: a catalogue of segment files, reconciled with the disk.

The frame writer never touches SQLite, so the catalogue is brought up to date from the
files themselves when a recorder closes and by ``gc``, ``recover``, ``verify`` and
``info``. Files are the truth for existence and size; SQLite for ``obsolete`` marks.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ._format import (
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    RECORD_OVERHEAD,
    RecordType,
    Seal,
    read_record,
)
from ._segments import list_segment_ids, relative_segment_path, segment_path
from .errors import CorruptData

_SEAL_RECORD_SIZE = RECORD_OVERHEAD + 28


@dataclass(frozen=True)
class SegmentStat:
    id: int
    path: str
    state: str
    bytes: int
    live_bytes: int


def is_sealed(path: str | os.PathLike) -> bool:
    """True when the file ends with a well-formed SEAL record (a cheap tail check)."""
    try:
        with open(path, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            if size < _SEAL_RECORD_SIZE:
                return False
            rec = read_record(fp, size - _SEAL_RECORD_SIZE)
    except (FileNotFoundError, CorruptData):
        return False
    if rec is None or rec.type != RecordType.SEAL:
        return False
    return Seal.unpack(rec.payload).offset == size - _SEAL_RECORD_SIZE


def record_bytes(root: str | os.PathLike, segment: int, offsets) -> int:
    """Total bytes of the records starting at ``offsets`` in one segment, read from
    their headers (the file is opened once). A missing file or offset counts 0."""
    total = 0
    try:
        with open(segment_path(root, segment), "rb") as fp:
            for off in offsets:
                fp.seek(off)
                head = fp.read(RECORD_HEADER_SIZE)
                if len(head) == RECORD_HEADER_SIZE:
                    total += RECORD_HEADER.unpack(head)[2] + RECORD_OVERHEAD
    except FileNotFoundError:
        pass
    return total


def live_bytes_by_segment(store) -> dict[int, int]:
    """Bytes of chunk records referenced by live (not deleted) episodes, per segment."""
    rows = store.db.conn.execute(
        "SELECT DISTINCT s.frame_segment, s.frame_offset FROM steps s "
        "JOIN episodes e ON e.id = s.episode_id "
        "WHERE s.frame_segment IS NOT NULL AND e.status != 'deleted'"
    ).fetchall()
    offsets: dict[int, list[int]] = {}
    for seg, off in rows:
        offsets.setdefault(seg, []).append(off)
    return {seg: record_bytes(store.root, seg, offs) for seg, offs in offsets.items()}


def sync_segments(store) -> list[SegmentStat]:
    """Reconcile the ``segments`` table with the files in ``segments/``; returns it."""
    root = Path(store.root)
    db = store.db
    live = live_bytes_by_segment(store)
    existing = {r[0]: r[1] for r in db.conn.execute("SELECT id, state FROM segments")}
    stats = []
    with store._db_lock, db.atomic():
        for sid in list_segment_ids(root):
            path = segment_path(root, sid)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            state = existing.get(sid)
            if state not in ("obsolete", "compacting"):
                state = "sealed" if is_sealed(path) else "active"
            db.conn.execute(
                "INSERT INTO segments (id, path, state, bytes, live_bytes, created) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "path = excluded.path, state = excluded.state, bytes = excluded.bytes, "
                "live_bytes = excluded.live_bytes",
                (sid, relative_segment_path(sid), state, size, live.get(sid, 0), time.time()),
            )
            stats.append(
                SegmentStat(sid, relative_segment_path(sid), state, size, live.get(sid, 0))
            )
        on_disk = set(list_segment_ids(root))
        for sid, state in existing.items():
            if sid not in on_disk and state == "obsolete":
                db.conn.execute("DELETE FROM segments WHERE id = ?", (sid,))
    return stats
