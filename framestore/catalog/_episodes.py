"""Runs, episodes and steps: what ``FrameStore`` reads, and marking episodes deleted."""

from __future__ import annotations

import json
from typing import Any

from telemetry import decode_action, decode_info

from ..types import EpisodeInfo, FrameLocation, FrameSummary, RunInfo, StepInfo, StepTrack
from ._base import END_OF_EPISODE, CatalogBase
from ._recovery import RECOVERED_INFO

_EPISODES = """
    SELECT e.id, e.run_id, r.env_id, e.idx, e.seed, e.started, e.ended, e.total_reward,
           e.terminated, e.truncated, e.status, e.frames_dropped,
           (SELECT COUNT(*) FROM steps s WHERE s.episode_id = e.id) AS n_rows,
           (SELECT COUNT(*) FROM steps s WHERE s.episode_id = e.id
                AND s.frame_segment IS NOT NULL) AS n_frames
    FROM episodes e JOIN runs r ON r.id = e.run_id
"""

_STEPS = (
    "SELECT step, action, reward, terminated, truncated, info, wall_time, frame_segment, "
    "frame_offset, frame_slot, frame_shape FROM steps "
    "WHERE episode_id = ? AND step >= ? AND step < ? ORDER BY step"
)


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"210x160x3"`` -> ``(210, 160, 3)`` (how the steps table records frame shapes)."""
    return tuple(int(x) for x in text.split("x")) if text else None


def format_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _location(seg: int | None, off: int | None, slot: int | None) -> FrameLocation | None:
    return None if seg is None else (seg, off, slot)


def _episode(r: tuple) -> EpisodeInfo:
    (eid, run_id, env_id, idx, seed, started, ended, reward, term, trunc, status, dropped,
     n_rows, n_frames) = r  # fmt: skip
    return EpisodeInfo(
        id=eid,
        run_id=run_id,
        env_id=env_id,
        index=idx,
        seed=seed,
        started=started,
        ended=ended,
        steps=n_rows,
        total_reward=reward or 0.0,
        terminated=bool(term),
        truncated=bool(trunc),
        status=status,
        frames_dropped=dropped or 0,
        frames=n_frames,
    )


class EpisodeQueries(CatalogBase):
    # ----------------------------------------------------------------- runs
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
            for r in self._dicts("SELECT * FROM runs ORDER BY id")
        ]

    def next_ids(self) -> tuple[int, int]:
        """``(run id, episode id)`` one above every id in use (call with the writer lock
        held, so no other writer can take them)."""
        run, episode = self._one(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM runs), "
            "(SELECT COALESCE(MAX(id), 0) FROM episodes)"
        )
        return run + 1, episode + 1

    # ----------------------------------------------------------------- episodes
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
        sql = _EPISODES + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY e.id"
        return [_episode(r) for r in self._rows(sql, params)]

    def episode(self, episode_id: int) -> EpisodeInfo | None:
        """One episode, deleted or not; None when there is no such id."""
        rows = self._rows(_EPISODES + " WHERE e.id = ?", [episode_id])
        return _episode(rows[0]) if rows else None

    def episode_statuses(self) -> dict[int, str]:
        return dict(self._rows("SELECT id, status FROM episodes"))

    def action_spec(self, episode_id: int) -> dict[str, Any] | None:
        """The action space description stored with the episode's run."""
        row = self._one(
            "SELECT r.config FROM runs r JOIN episodes e ON e.run_id = r.id WHERE e.id = ?",
            [episode_id],
        )
        return None if row is None else json.loads(row[0] or "{}").get("action_space")

    def mark_deleted(self, episode_ids: list[int]) -> None:
        """Mark episodes deleted (``gc`` reclaims their frames)."""
        with self.transaction():
            self._exec_many(
                "UPDATE episodes SET status = 'deleted' WHERE id = ?", [(i,) for i in episode_ids]
            )

    def stale_recordings(self) -> list[int]:
        """Episodes still marked ``recording``."""
        return [r[0] for r in self._rows("SELECT id FROM episodes WHERE status = 'recording'")]

    # ----------------------------------------------------------------- steps
    def steps(self, episode_id: int, start: int = 0, stop: int | None = None) -> list[StepInfo]:
        """Step records of an episode in step order, ``start <= step < stop``."""
        spec = self.action_spec(episode_id)
        rows = self._rows(_STEPS, [episode_id, start, END_OF_EPISODE if stop is None else stop])
        out = []
        for step, action, reward, term, trunc, info, wall, seg, off, slot, shape in rows:
            out.append(
                StepInfo(
                    episode_id=episode_id,
                    step=step,
                    action=decode_action(action, spec) if action is not None else None,
                    reward=reward,
                    terminated=bool(term),
                    truncated=bool(trunc),
                    info=decode_info(info) if info else {},
                    wall_time=wall,
                    frame=_location(seg, off, slot),
                    frame_shape=parse_shape(shape),
                )
            )
        return out

    def step_track(self, episode_id: int, start: int = 0, stop: int | None = None) -> StepTrack:
        """Rewards, actions and flags of ``start <= step < stop`` in one query (no info,
        no frame pointers): what a timeline of the episode needs."""
        spec = self.action_spec(episode_id)
        rows = self._rows(
            "SELECT step, reward, action, terminated, truncated, frame_segment IS NOT NULL, "
            "info = ? FROM steps WHERE episode_id = ? AND step >= ? AND step < ? ORDER BY step",
            [RECOVERED_INFO, episode_id, start, END_OF_EPISODE if stop is None else stop],
        )
        if not rows:
            return StepTrack((), (), (), (), (), (), ())
        steps, rewards, actions, term, trunc, has_frame, recovered = zip(*rows, strict=True)
        return StepTrack(
            steps=steps,
            rewards=rewards,
            actions=tuple(None if a is None else decode_action(a, spec) for a in actions),
            terminated=tuple(bool(t) for t in term),
            truncated=tuple(bool(t) for t in trunc),
            has_frame=tuple(bool(f) for f in has_frame),
            recovered=tuple(bool(r) for r in recovered),
        )

    def frame_locations(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> list[tuple[int, FrameLocation | None]]:
        """``(step, (segment, offset, slot) or None)`` for the episode's rows, in order."""
        rows = self._rows(
            "SELECT step, frame_segment, frame_offset, frame_slot FROM steps "
            "WHERE episode_id = ? AND step >= ? AND step < ? ORDER BY step",
            [episode_id, start, END_OF_EPISODE if stop is None else stop],
        )
        return [(step, _location(seg, off, slot)) for step, seg, off, slot in rows]

    def frame_summary(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> FrameSummary:
        """Committed steps, frame shapes and stored frames of a range of an episode."""
        with self._lock:
            (last,) = self._one("SELECT MAX(step) FROM steps WHERE episode_id = ?", [episode_id])
            end = 0 if last is None else last + 1
            stop = end if stop is None else min(stop, end)
            where = "WHERE episode_id = ? AND step >= ? AND step < ? AND frame_segment IS NOT NULL"
            params = [episode_id, start, stop]
            shapes = [
                r[0] for r in self._rows(f"SELECT DISTINCT frame_shape FROM steps {where}", params)
            ]
            (frames,) = self._one(f"SELECT COUNT(*) FROM steps {where}", params)
        return FrameSummary(end, max(stop, start), tuple(sorted(s for s in shapes if s)), frames)

    def episode_chunks(self, episode_id: int) -> dict[int, list[int]]:
        """Offsets of the chunk records holding an episode's frames, per segment."""
        out: dict[int, list[int]] = {}
        for seg, off in self._rows(
            "SELECT DISTINCT frame_segment, frame_offset FROM steps "
            "WHERE episode_id = ? AND frame_segment IS NOT NULL",
            [episode_id],
        ):
            out.setdefault(seg, []).append(off)
        return out
