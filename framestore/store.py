"""The FrameStore facade: one directory holding a SQLite database and segment files.

``FrameStore.open(path)`` gives reading (episodes, steps, frames) and ``recorder(...)``
composes a recording: FrameStorageService (frames) + TelemetryAsyncHub + TelemetryDBSink
(metadata and frame pointers).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from telemetry import decode_action, decode_info, open_db

from ._lock import LOCK_NAME
from ._segments import SEGMENT_DIR
from .errors import (
    EpisodeNotFound,
    FrameNotFound,
    InvalidInput,
    NotAStore,
    RunNotFound,
    StoreClosed,
)
from .reader import SegmentReader

DB_NAME = "framestore.db"
EPISODE_STATUSES = ("recording", "complete", "interrupted", "trimmed", "deleted")


@dataclass(frozen=True)
class RunInfo:
    id: int
    env_id: str
    created: float | None
    ended: float | None
    preset: str | None
    host_profile: str | None
    durability: str | None
    config: dict[str, Any]
    stats: dict[str, Any]


@dataclass(frozen=True)
class EpisodeInfo:
    id: int
    run_id: int
    env_id: str
    index: int
    seed: int | None
    started: float | None
    ended: float | None
    steps: int  # rows in the steps table (T+1 for T actions)
    total_reward: float
    terminated: bool
    truncated: bool
    status: str
    frames_dropped: int
    frames: int  # rows with a stored frame


@dataclass(frozen=True)
class StepInfo:
    episode_id: int
    step: int
    action: Any
    reward: float | None
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    wall_time: float | None
    frame: tuple[int, int, int] | None  # (segment, offset, slot); None when dropped
    frame_shape: tuple[int, ...] | None


@dataclass(frozen=True)
class FrameSummary:
    """See ``FrameStore.frame_summary``. ``shapes`` are ``"HxWxC"`` strings."""

    steps: int  # rows committed for the episode (its last step + 1)
    stop: int  # the requested stop, clipped to ``steps``
    shapes: tuple[str, ...]
    frames: int  # stored frames in the range


def _shape(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(x) for x in text.split("x")) if text else None


class FrameStore:
    """A store directory. Use ``FrameStore.open``; close it (or use ``with``).

    Reading works while another process records into the same store: SQLite runs in WAL
    mode and the database only ever points at frames that are written.
    """

    def __init__(self, root: Path, db, *, readonly: bool):
        self.root = root
        self.readonly = readonly
        self._db = db
        self._db_lock = threading.RLock()  # the GUI reads from worker threads
        self._reader = SegmentReader(root, cache_chunks=16)
        self._closed = False
        self._recorders: list = []

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        create: bool = True,
        readonly: bool = False,
        durability: str = "balanced",
    ) -> FrameStore:
        """Open (and with ``create`` make) a store directory.

        Raises ``NotAStore`` for a path that is a file, a non-empty directory that is not
        a store, or (without ``create``) a missing path; ``SchemaTooNew`` for a store
        written by a newer framestore.
        """
        root = Path(path)
        db_path = root / DB_NAME
        if root.exists() and not root.is_dir():
            raise NotAStore(str(root), "is a file, not a store directory")
        if not db_path.exists():
            if readonly or not create:
                raise NotAStore(
                    str(root),
                    "not a framestore store (no framestore.db)"
                    if root.exists()
                    else "no such store",
                )
            if root.exists() and any(
                p.name not in (SEGMENT_DIR, LOCK_NAME) for p in root.iterdir()
            ):
                raise NotAStore(str(root), "directory is not empty and is not a framestore store")
            root.mkdir(parents=True, exist_ok=True)
        db = open_db(db_path, profile=durability, readonly=readonly)
        return cls(root, db, readonly=readonly)

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def db(self):
        """The store's ``sqlite_utils.Database`` (for tools in this project)."""
        self._check_open()
        return self._db

    @property
    def reader(self) -> SegmentReader:
        self._check_open()
        return self._reader

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("store is closed")

    def _query(self, sql: str, params: Iterable = ()) -> list[sqlite3.Row]:
        self._check_open()
        with self._db_lock:
            cur = self._db.conn.execute(sql, tuple(params))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    # ----------------------------------------------------------------- runs/episodes
    def runs(self) -> list[RunInfo]:
        return [
            RunInfo(
                r["id"],
                r["env_id"],
                r["created"],
                r["ended"],
                r["preset"],
                r["host_profile"],
                r["durability"],
                json.loads(r["config"] or "{}"),
                json.loads(r["stats"] or "{}"),
            )
            for r in self._query("SELECT * FROM runs ORDER BY id")
        ]

    def run(self, run_id: int) -> RunInfo:
        for r in self.runs():
            if r.id == run_id:
                return r
        raise RunNotFound(run_id)

    _EPISODES_SQL = """
        SELECT e.*, r.env_id AS env_id,
               (SELECT COUNT(*) FROM steps s WHERE s.episode_id = e.id) AS n_rows,
               (SELECT COUNT(*) FROM steps s WHERE s.episode_id = e.id
                    AND s.frame_segment IS NOT NULL) AS n_frames
        FROM episodes e JOIN runs r ON r.id = e.run_id
    """

    def _episode(self, r: dict) -> EpisodeInfo:
        return EpisodeInfo(
            id=r["id"],
            run_id=r["run_id"],
            env_id=r["env_id"],
            index=r["idx"],
            seed=r["seed"],
            started=r["started"],
            ended=r["ended"],
            steps=r["n_rows"],
            total_reward=r["total_reward"] or 0.0,
            terminated=bool(r["terminated"]),
            truncated=bool(r["truncated"]),
            status=r["status"],
            frames_dropped=r["frames_dropped"] or 0,
            frames=r["n_frames"],
        )

    def episodes(
        self, *, run_id: int | None = None, include_deleted: bool = False
    ) -> list[EpisodeInfo]:
        """Episode records in id order (deleted ones only when asked)."""
        where, params = [], []
        if run_id is not None:
            where.append("e.run_id = ?")
            params.append(run_id)
        if not include_deleted:
            where.append("e.status != 'deleted'")
        sql = (
            self._EPISODES_SQL
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY e.id"
        )
        return [self._episode(r) for r in self._query(sql, params)]

    def episode(self, episode_id: int, *, include_deleted: bool = False) -> EpisodeInfo:
        rows = self._query(self._EPISODES_SQL + " WHERE e.id = ?", [int(episode_id)])
        if not rows or (rows[0]["status"] == "deleted" and not include_deleted):
            raise EpisodeNotFound(episode_id)
        return self._episode(rows[0])

    def _action_spec(self, episode_id: int) -> dict | None:
        rows = self._query(
            "SELECT r.config FROM runs r JOIN episodes e ON e.run_id = r.id WHERE e.id = ?",
            [episode_id],
        )
        if not rows:
            return None
        return json.loads(rows[0]["config"] or "{}").get("action_space")

    # ----------------------------------------------------------------- steps/frames
    def read_steps(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> list[StepInfo]:
        """Step records of an episode in step order, ``start <= step < stop``."""
        self.episode(episode_id)
        spec = self._action_spec(episode_id)
        rows = self._query(
            "SELECT * FROM steps WHERE episode_id = ? AND step >= ? AND step < ? ORDER BY step",
            [episode_id, start, stop if stop is not None else 2**62],
        )
        out = []
        for r in rows:
            loc = None
            if r["frame_segment"] is not None:
                loc = (r["frame_segment"], r["frame_offset"], r["frame_slot"])
            out.append(
                StepInfo(
                    episode_id=episode_id,
                    step=r["step"],
                    action=decode_action(r["action"], spec) if r["action"] is not None else None,
                    reward=r["reward"],
                    terminated=bool(r["terminated"]),
                    truncated=bool(r["truncated"]),
                    info=decode_info(r["info"]) if r["info"] else {},
                    wall_time=r["wall_time"],
                    frame=loc,
                    frame_shape=_shape(r["frame_shape"]),
                )
            )
        return out

    def frame_locations(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> list[tuple[int, tuple[int, int, int] | None]]:
        """``(step, (segment, offset, slot) or None)`` for the episode's rows, in order."""
        self.episode(episode_id)
        rows = self._query(
            "SELECT step, frame_segment, frame_offset, frame_slot FROM steps "
            "WHERE episode_id = ? AND step >= ? AND step < ? ORDER BY step",
            [episode_id, start, stop if stop is not None else 2**62],
        )
        return [
            (
                r["step"],
                None
                if r["frame_segment"] is None
                else (r["frame_segment"], r["frame_offset"], r["frame_slot"]),
            )
            for r in rows
        ]

    def frame_summary(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> FrameSummary:
        """What is committed for ``start <= step < stop`` of an episode right now: the
        step count, the distinct frame shapes and the number of stored frames (a snapshot:
        rows of a live episode keep arriving)."""
        self.episode(episode_id)
        with self._db_lock:
            conn = self._db.conn
            (last,) = conn.execute(
                "SELECT MAX(step) FROM steps WHERE episode_id = ?", (episode_id,)
            ).fetchone()
            end = 0 if last is None else last + 1
            stop = end if stop is None else min(stop, end)
            shapes = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT frame_shape FROM steps WHERE episode_id = ? AND step >= ? "
                    "AND step < ? AND frame_segment IS NOT NULL",
                    (episode_id, start, stop),
                )
            ]
            (frames,) = conn.execute(
                "SELECT COUNT(*) FROM steps WHERE episode_id = ? AND step >= ? AND step < ? "
                "AND frame_segment IS NOT NULL",
                (episode_id, start, stop),
            ).fetchone()
        return FrameSummary(end, max(stop, start), tuple(sorted(s for s in shapes if s)), frames)

    def read_frame(self, episode_id: int, step: int) -> np.ndarray:
        """The frame of one step, bit-exact (checksum verified)."""
        locs = self.frame_locations(episode_id, step, step + 1)
        if not locs:
            raise FrameNotFound(f"episode {episode_id} has no step {step}")
        if locs[0][1] is None:
            raise FrameNotFound(f"episode {episode_id} step {step} has no stored frame (dropped)")
        return self._reader.read(locs[0][1], expect_key=(episode_id, step))

    def iter_frames(
        self, episode_id: int, start: int = 0, stop: int | None = None, *, skip_missing: bool = True
    ) -> Iterator[np.ndarray]:
        """Frames of an episode in step order; memory stays O(chunk).

        Steps whose frame was dropped are skipped (or raise ``FrameNotFound`` with
        ``skip_missing=False``). Corrupt data raises; it is never yielded.
        """
        for _step, frame in self.iter_steps_frames(
            episode_id, start, stop, skip_missing=skip_missing
        ):
            yield frame

    def iter_steps_frames(
        self, episode_id: int, start: int = 0, stop: int | None = None, *, skip_missing: bool = True
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(step, frame)`` pairs in step order (see ``iter_frames``)."""
        for step, loc in self.frame_locations(episode_id, start, stop):
            if loc is None:
                if skip_missing:
                    continue
                raise FrameNotFound(f"episode {episode_id} step {step} has no stored frame")
            yield step, self._reader.read(loc, expect_key=(episode_id, step))

    def read_frames(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> list[np.ndarray]:
        """All frames of an episode (or a range) as a list. Prefer ``iter_frames`` for
        long episodes: this holds them all in memory."""
        return list(self.iter_frames(episode_id, start, stop))

    def episode_bytes(self, episode_id: int) -> int:
        """Bytes of segment records holding this episode's frames (read from record headers)."""
        from ._catalog import record_bytes

        rows = self._query(
            "SELECT DISTINCT frame_segment, frame_offset FROM steps "
            "WHERE episode_id = ? AND frame_segment IS NOT NULL",
            [episode_id],
        )
        offsets: dict[int, list[int]] = {}
        for r in rows:
            offsets.setdefault(r["frame_segment"], []).append(r["frame_offset"])
        return sum(record_bytes(self.root, seg, offs) for seg, offs in offsets.items())

    # ----------------------------------------------------------------- changes
    def delete_episodes(
        self, episode_ids: Iterable[int], *, dry_run: bool = False
    ) -> list[EpisodeInfo]:
        """Mark episodes deleted (they vanish from listings at once; ``gc`` reclaims the
        space). Unknown or already deleted ids raise ``EpisodeNotFound`` before anything
        changes. Returns the episodes deleted (or that would be, with ``dry_run``)."""
        if self.readonly:
            raise InvalidInput("store is open read-only")
        ids = list(dict.fromkeys(int(i) for i in episode_ids))
        eps = [self.episode(i) for i in ids]
        recording = [e.id for e in eps if e.status == "recording" and self._is_live(e.id)]
        if recording:
            raise InvalidInput(f"episode {recording[0]} is being recorded; stop recording first")
        if not dry_run and ids:
            with self._db_lock, self._db.atomic():
                self._db.conn.executemany(
                    "UPDATE episodes SET status = 'deleted' WHERE id = ?", [(i,) for i in ids]
                )
        return eps

    def _is_live(self, episode_id: int) -> bool:
        from ._lock import StoreLock

        if any(getattr(r, "current_episode", None) == episode_id for r in self._recorders):
            return True
        lock = StoreLock(self.root)
        try:
            lock.acquire()
        except Exception:
            return True  # another writer holds the store: the episode may be live
        lock.release()
        return False

    # ----------------------------------------------------------------- recording
    def recorder(self, env_id: str, **kwargs) -> Recorder:  # noqa: F821 - lazy import
        """Start a recording run; see ``Recorder`` for the arguments."""
        from .recorder import Recorder

        self._check_open()
        if self.readonly:
            raise InvalidInput("store is open read-only; open it without readonly to record")
        rec = Recorder(self, env_id, **kwargs)
        self._recorders.append(rec)
        return rec

    def _forget_recorder(self, rec) -> None:
        if rec in self._recorders:
            self._recorders.remove(rec)

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        if self._closed:
            return
        errors = []
        for rec in list(self._recorders):
            try:
                rec.close()
            except Exception as e:  # close everything, then report the first failure
                errors.append(e)
        self._closed = True
        self._reader.close()
        with self._db_lock:
            self._db.close()
        if errors:
            raise errors[0]

    def __enter__(self) -> FrameStore:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        return f"FrameStore({str(self.root)!r}{', readonly' if self.readonly else ''})"
