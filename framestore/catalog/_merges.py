"""What ``merge`` reads from a source store and writes into the destination: the merge
journal (``merges``) and runs, episodes and steps as raw rows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._base import Connection

#: Columns copied from a source's ``runs`` rows (the id is given anew).
RUN_COLUMNS = (
    "env_id", "created", "ended", "preset", "host_profile", "durability", "config", "stats",
    "env_spec",
)  # fmt: skip
#: Columns copied from a source's ``episodes`` rows (id, run_id, continues_episode and
#: stream_key are mapped).
EPISODE_COLUMNS = (
    "idx", "seed", "started", "ended", "steps", "total_reward", "terminated", "truncated",
    "status", "frames_dropped", "sub_env", "reset_options",
)  # fmt: skip
#: Columns of a ``steps`` row as merge copies it (episode and segment are mapped).
STEP_COLUMNS = (
    "episode_id", "step", "action", "reward", "terminated", "truncated", "info", "wall_time",
    "frame_segment", "frame_offset", "frame_slot", "frame_shape",
)  # fmt: skip
#: ``step_frames`` (m003) as merge copies it: the segment is at index 3.
STREAM_FRAME_COLUMNS = (
    "episode_id", "stream", "step", "frame_segment", "frame_offset", "frame_slot", "frame_shape",
)  # fmt: skip
STREAM_COLUMNS = ("episode_id", "idx", "name", "dtype", "shape", "shared_with")


@dataclass(frozen=True)
class MergeRecord:
    """One row of the merge journal: a source store merged (or being merged) in."""

    id: int
    source_id: str
    source_path: str
    fingerprint: str
    mode: str  # copy | move
    state: str  # copying | done
    # (segment id here, the segment id its file header names: the source's id for it,
    # or the first id of a segment the source had merged itself)
    segments: list[tuple[int, int]]
    ids: dict[str, dict[int, int]]  # {"runs": {source id: id here}, "episodes": {...}}
    started: float | None
    finished: float | None
    runs: int
    episodes: int
    steps: int


def _record(r: tuple) -> MergeRecord:
    (mid, source_id, path, fingerprint, mode, state, segments, ids, started, finished, runs,
     episodes, steps) = r  # fmt: skip
    raw_ids = json.loads(ids or "{}")
    return MergeRecord(
        id=mid,
        source_id=source_id,
        source_path=path,
        fingerprint=fingerprint,
        mode=mode,
        state=state,
        segments=[(int(a), int(b)) for a, b in json.loads(segments)],
        ids={k: {int(a): int(b) for a, b in v.items()} for k, v in raw_ids.items()},
        started=started,
        finished=finished,
        runs=runs or 0,
        episodes=episodes or 0,
        steps=steps or 0,
    )


def _ids_text(ids: Mapping[str, Mapping[int, int]]) -> str:
    """The journal's ``ids`` column: JSON, keys as text, in the maps' order."""
    return json.dumps({k: {str(a): b for a, b in v.items()} for k, v in ids.items()})


_MERGE_COLUMNS = (
    "id, source_id, source_path, fingerprint, mode, state, segments, ids, started, finished, "
    "runs, episodes, steps"
)


class Merges:
    """The merge journal, a source store's rows as ``merge`` reads them, and those rows
    inserted into the destination."""

    def __init__(self, db: Connection):
        self._db = db

    # ----------------------------------------------------------------- identity
    def fingerprint_rows(self) -> list[tuple]:
        """What says whether a store changed since it was merged: its runs and its live
        episodes with their step counts and statuses."""
        runs = self._db.rows("SELECT id, env_id, created, ended FROM runs ORDER BY id")
        eps = self._db.rows(
            "SELECT e.id, e.run_id, e.status, (SELECT COUNT(*) FROM steps s "
            "WHERE s.episode_id = e.id) FROM episodes e WHERE e.status != 'deleted' ORDER BY e.id"
        )
        return [("runs", *r) for r in runs] + [("episodes", *e) for e in eps]

    # ----------------------------------------------------------------- the journal
    def records(self) -> list[MergeRecord]:
        """Every journal row, oldest first (none for a store of an older schema)."""
        if not self._db.has_m002:
            return []
        return [
            _record(r) for r in self._db.rows(f"SELECT {_MERGE_COLUMNS} FROM merges ORDER BY id")
        ]

    def incomplete(self) -> list[MergeRecord]:
        """Journal rows of merges that stopped before their source's rows committed."""
        return [m for m in self.records() if m.state == "copying"]

    def begin(
        self,
        source_id: str,
        source_path: str,
        fingerprint: str,
        mode: str,
        segments: list[tuple[int, int]],
    ) -> int:
        """Journal a merge about to copy ``segments`` (commits at once: a crash from here
        on leaves a row saying which files to remove). Returns the journal id."""
        with self._db.transaction():
            return self._db.insert(
                "INSERT INTO merges (source_id, source_path, fingerprint, mode, state, "
                "segments, started) VALUES (?, ?, ?, ?, 'copying', ?, ?)",
                (source_id, source_path, fingerprint, mode, json.dumps(segments), time.time()),
            )

    def finish(
        self,
        merge_id: int,
        ids: Mapping[str, Mapping[int, int]],
        steps: int,
        finished: float | None = None,
    ) -> None:
        """Mark a merge done (call in the transaction that inserts the source's rows);
        ``finished``: the time its provenance note names (default: now)."""
        self._db.exec(
            "UPDATE merges SET state = 'done', finished = ?, ids = ?, runs = ?, episodes = ?, "
            "steps = ? WHERE id = ?",
            (
                time.time() if finished is None else finished,
                _ids_text(ids),
                len(ids.get("runs", {})),
                len(ids.get("episodes", {})),
                steps,
                merge_id,
            ),
        )

    def restore(self, record: MergeRecord) -> None:
        """A finished merge's journal row rebuilt from its provenance note (``recover``
        of a lost catalogue), under its own id."""
        self._db.exec(
            f"INSERT INTO merges ({_MERGE_COLUMNS}) VALUES ({', '.join('?' * 13)})",
            (
                record.id, record.source_id, record.source_path, record.fingerprint,
                record.mode, "done", json.dumps(record.segments), _ids_text(record.ids),
                record.started, record.finished, record.runs, record.episodes, record.steps,
            ),
        )  # fmt: skip

    def forget(self, merge_id: int) -> None:
        """Remove a journal row (an interrupted merge, once its copies are gone)."""
        with self._db.transaction():
            self._db.exec("DELETE FROM merges WHERE id = ?", (merge_id,))

    # ----------------------------------------------------------------- a source's rows
    def export_runs(self) -> list[dict[str, Any]]:
        """Every run row, as stored (``env_spec`` is None on an older schema)."""
        cols = ", ".join(
            c if c != "env_spec" else f"{self._db.m002('env_spec')} AS env_spec"
            for c in RUN_COLUMNS
        )
        return self._db.dicts(f"SELECT id, {cols} FROM runs ORDER BY id")

    def export_episodes(self) -> list[dict[str, Any]]:
        """Every episode row that is not deleted, as stored, with its stream key."""
        cols = ", ".join(
            c if c not in ("sub_env", "reset_options") else f"{self._db.m002(c)} AS {c}"
            for c in EPISODE_COLUMNS
        )
        return self._db.dicts(
            f"SELECT id, run_id, {cols}, "
            f"{self._db.m002('continues_episode')} AS continues_episode, "
            f"{self._db.m002('COALESCE(stream_key, id)', 'id')} AS stream_key "
            "FROM episodes WHERE status != 'deleted' ORDER BY id"
        )

    def iter_step_rows(self, episode_ids: Iterable[int]) -> Iterator[tuple]:
        """The step rows of ``episode_ids`` as stored (``STEP_COLUMNS``), in key order."""
        cols = ", ".join(STEP_COLUMNS)
        for eid in episode_ids:
            yield from self._db.iter(
                f"SELECT {cols} FROM steps WHERE episode_id = ? ORDER BY step", (eid,)
            )

    def iter_stream_rows(self, episode_ids: Iterable[int]) -> Iterator[tuple]:
        """The ``step_frames`` rows of ``episode_ids`` (``STREAM_FRAME_COLUMNS``: streams
        other than render, m003), in key order; none in an older store."""
        if not self._db.has_m003:
            return
        cols = ", ".join(STREAM_FRAME_COLUMNS)
        for eid in episode_ids:
            yield from self._db.iter(
                f"SELECT {cols} FROM step_frames WHERE episode_id = ? ORDER BY stream, step",
                (eid,),
            )

    def export_streams(self, episode_ids: Iterable[int]) -> list[tuple]:
        """The ``streams`` rows of ``episode_ids`` (``STREAM_COLUMNS``)."""
        if not self._db.has_m003:
            return []
        cols = ", ".join(STREAM_COLUMNS)
        return [
            r
            for eid in episode_ids
            for r in self._db.rows(
                f"SELECT {cols} FROM streams WHERE episode_id = ? ORDER BY idx", (eid,)
            )
        ]

    def iter_observation_rows(self, episode_ids: Iterable[int]) -> Iterator[tuple]:
        """``(episode_id, step, observation)`` of the rows of ``episode_ids`` that hold
        one (m004)."""
        if not self._db.has_m004:
            return
        for eid in episode_ids:
            yield from self._db.iter(
                "SELECT episode_id, step, observation FROM steps WHERE episode_id = ? "
                "AND observation IS NOT NULL ORDER BY step",
                (eid,),
            )

    # ----------------------------------------------------------------- into this store
    def import_streams(self, rows: Iterable[tuple]) -> int:
        """Insert ``streams`` rows (``STREAM_COLUMNS``, already mapped)."""
        marks = ", ".join("?" * len(STREAM_COLUMNS))
        return self._db.exec_many(
            f"INSERT INTO streams ({', '.join(STREAM_COLUMNS)}) VALUES ({marks})", rows
        )

    def import_stream_rows(self, rows: Iterable[tuple]) -> int:
        """Insert ``step_frames`` rows (``STREAM_FRAME_COLUMNS``, already mapped)."""
        marks = ", ".join("?" * len(STREAM_FRAME_COLUMNS))
        return self._db.exec_many(
            f"INSERT INTO step_frames ({', '.join(STREAM_FRAME_COLUMNS)}) VALUES ({marks})", rows
        )

    def import_observations(self, rows: Iterable[tuple]) -> int:
        """Set ``(episode_id, step, observation)`` on step rows (already mapped)."""
        return self._db.exec_many(
            "UPDATE steps SET observation = ? WHERE episode_id = ? AND step = ?",
            ((obs, eid, step) for eid, step, obs in rows),
        )

    def import_run(self, run_id: int, row: Mapping[str, Any]) -> None:
        """Insert a run row copied from another store under ``run_id``."""
        marks = ", ".join("?" * (len(RUN_COLUMNS) + 1))
        self._db.exec(
            f"INSERT INTO runs (id, {', '.join(RUN_COLUMNS)}) VALUES ({marks})",
            (run_id, *(row[c] for c in RUN_COLUMNS)),
        )

    def import_episode(
        self,
        episode_id: int,
        run_id: int,
        row: Mapping[str, Any],
        *,
        continues: int | None,
        stream_key: int,
    ) -> None:
        """Insert an episode row copied from another store (its chunks keep
        ``stream_key``)."""
        cols = ("id", "run_id", *EPISODE_COLUMNS, "continues_episode", "stream_key")
        values = (episode_id, run_id, *(row[c] for c in EPISODE_COLUMNS), continues, stream_key)
        self._db.exec(
            f"INSERT INTO episodes ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            values,
        )

    def import_steps(self, rows: Iterable[tuple]) -> int:
        """Insert step rows (``STEP_COLUMNS``, already mapped); returns how many."""
        marks = ", ".join("?" * len(STEP_COLUMNS))
        return self._db.exec_many(
            f"INSERT INTO steps ({', '.join(STEP_COLUMNS)}) VALUES ({marks})", rows
        )
