"""Counts over the whole catalogue, for ``info`` and ``verify``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._base import Connection
from ._validate import Cell


@dataclass(frozen=True)
class CatalogStats:
    runs: int
    episodes_by_status: dict[str, int]
    steps: int  # step rows of live episodes
    frames: int  # of them, rows with a stored frame
    raw_frame_bytes: int  # uncompressed size of those frames (from their shapes)
    frames_dropped: int
    runs_by_durability: dict[str, int]


@dataclass(frozen=True)
class EpisodeRowCount:
    episode: int
    status: str
    steps: int | None  # what the episode row says
    rows: int  # step rows it has


class Stats:
    """Counts over the whole catalogue, and the checks of a published store's totals."""

    def __init__(self, db: Connection):
        self._db = db

    def summary(self) -> CatalogStats:
        """Runs, episodes by status, live steps, frames and their raw bytes."""
        with self._db.lock:
            (n_runs,) = self._db.one("SELECT COUNT(*) FROM runs")
            by_status = dict(self._db.rows("SELECT status, COUNT(*) FROM episodes GROUP BY status"))
            if self._db.has_totals:
                steps, frames, raw = self._totals_sums()
            else:
                steps, frames, raw = self._step_sums()
            (dropped,) = self._db.one(
                "SELECT COALESCE(SUM(frames_dropped), 0) FROM episodes WHERE status != 'deleted'"
            )
            dropped = Cell("episodes", "the sum of").int("frames_dropped", int(dropped or 0))
            durability = dict(
                self._db.rows(
                    "SELECT COALESCE(durability, 'unknown'), COUNT(*) FROM runs "
                    "GROUP BY durability ORDER BY durability"
                )
            )
        return CatalogStats(n_runs, by_status, steps, frames, raw, dropped, durability)

    def _step_sums(self) -> tuple[int, int, int]:
        """``(steps, frames, raw frame bytes)`` of live episodes, from the steps table."""
        steps, frames = self._db.one(
            "SELECT COUNT(*), COUNT(s.frame_segment) FROM steps s "
            "JOIN episodes e ON e.id = s.episode_id WHERE e.status != 'deleted'"
        )
        raw = 0
        for shape, count in self._db.rows(
            "SELECT s.frame_shape, COUNT(*) FROM steps s "
            "JOIN episodes e ON e.id = s.episode_id "
            "WHERE e.status != 'deleted' AND s.frame_segment IS NOT NULL "
            "GROUP BY s.frame_shape"
        ):
            if shape:
                raw += math.prod(Cell("steps", "a row").shape("frame_shape", shape)) * count
        return steps, frames, raw

    def _totals_sums(self) -> tuple[int, int, int]:
        """The same, from a published store's per-episode totals."""
        row = self._db.one(
            "SELECT COALESCE(SUM(t.steps), 0), COALESCE(SUM(t.frames), 0), "
            "COALESCE(SUM(t.raw_frame_bytes), 0) FROM episode_totals t "
            "JOIN episodes e ON e.id = t.episode_id WHERE e.status != 'deleted'"
        )
        return int(row[0]), int(row[1]), int(row[2])

    def episode_total_bytes(self, episode_id: int) -> int | None:
        """Bytes of the chunk records holding an episode's frames, as a published store's
        totals say; None when there are none (then count them from the steps)."""
        if not self._db.has_totals:
            return None
        row = self._db.one(
            "SELECT chunk_bytes FROM episode_totals WHERE episode_id = ?", [int(episode_id)]
        )
        if row is None:
            return 0
        return None if row[0] is None else int(row[0])

    def live_total_bytes(self) -> int | None:
        """Bytes of the chunk records of every live episode, from a published store's
        totals; None when there are none or one episode's is unknown."""
        if not self._db.has_totals:
            return None
        unknown, total = self._db.one(
            "SELECT COUNT(*) - COUNT(t.chunk_bytes), COALESCE(SUM(t.chunk_bytes), 0) "
            "FROM episode_totals t JOIN episodes e ON e.id = t.episode_id "
            "WHERE e.status != 'deleted'"
        )
        return None if unknown else int(total)

    def totals_problem(self, steps: int, frames: int) -> str | None:
        """What is wrong with a published store's totals (loaded with
        ``Tables.add_episode_totals``) that should count ``steps`` and ``frames`` in all, one
        row per episode: a negative count, an episode without totals or totals of no
        episode, other sums. None when they hold."""
        row = self._db.one(
            "SELECT COUNT(*), COALESCE(SUM(steps), 0), COALESCE(SUM(frames), 0), "
            "COALESCE(MIN(MIN(steps), MIN(frames), MIN(raw_frame_bytes), "
            "MIN(COALESCE(chunk_bytes, 0))), 0), "
            "(SELECT COUNT(*) FROM episodes e WHERE e.id NOT IN "
            "(SELECT episode_id FROM episode_totals)), "
            "COALESCE(SUM(episode_id NOT IN (SELECT id FROM episodes)), 0), "
            "COALESCE(SUM(frames > steps), 0) FROM episode_totals"
        )
        _rows, total_steps, total_frames, lowest, uncounted, strays, over = row
        if lowest < 0:
            return "a negative count"
        if uncounted or strays:
            return "not one row per published episode"
        if over:
            return "an episode with more frames than steps"
        if (total_steps, total_frames) != (steps, frames):
            return (
                f"{total_steps} steps and {total_frames} frames in all, the manifest counts "
                f"{steps} and {frames}"
            )
        return None

    def totals_disagreement(self) -> tuple[int, str] | None:
        """``(episode, what differs)`` for the first episode whose totals (a published
        store's) disagree with its step rows, once both are loaded; else None."""
        if not self._db.has_totals:
            return None
        row = self._db.one(
            "SELECT e.id, COALESCE(t.steps, 0), COALESCE(t.frames, 0), "
            "(SELECT COUNT(*) FROM steps s WHERE s.episode_id = e.id), "
            "(SELECT COUNT(frame_segment) FROM steps s WHERE s.episode_id = e.id) "
            "FROM episodes e LEFT JOIN episode_totals t ON t.episode_id = e.id "
            "WHERE COALESCE(t.steps, 0) != (SELECT COUNT(*) FROM steps s WHERE s.episode_id = e.id) "
            "OR COALESCE(t.frames, 0) != "
            "(SELECT COUNT(frame_segment) FROM steps s WHERE s.episode_id = e.id) "
            "ORDER BY e.id LIMIT 1"
        )
        if row is None:
            return None
        eid, steps, frames, rows, stored = row
        return int(
            eid
        ), f"totals say {steps} steps, {frames} frames; its rows hold {rows}, {stored}"

    def stream_totals_problem(self, stream_frames: int) -> str | None:
        """What is wrong with a published store's per-stream totals (loaded with
        ``Tables.add_stream_totals``, after ``streams`` and the episode totals) that should count
        ``stream_frames`` frames in all, one row per ``streams`` row: a negative count,
        raw bytes without frames, a row of no stream or a stream without one, more frames
        than the episode's steps, another sum. None when they hold."""
        row = self._db.one(
            "SELECT COALESCE(SUM(x.frames), 0), "
            "COALESCE(MIN(MIN(x.frames), MIN(x.raw_frame_bytes)), 0), "
            "COALESCE(SUM(x.frames = 0 AND x.raw_frame_bytes > 0), 0), "
            "COALESCE(SUM(NOT EXISTS (SELECT 1 FROM streams t WHERE t.episode_id = x.episode_id "
            " AND t.idx = x.stream)), 0), "
            "(SELECT COUNT(*) FROM streams t WHERE NOT EXISTS (SELECT 1 FROM stream_totals y "
            " WHERE y.episode_id = t.episode_id AND y.stream = t.idx)), "
            "COALESCE(SUM(x.frames > COALESCE((SELECT e.steps FROM episode_totals e "
            " WHERE e.episode_id = x.episode_id), 0)), 0) FROM stream_totals x"
        )
        total, lowest, rawless, strays, uncounted, over = row
        if lowest < 0:
            return "a negative count"
        if rawless:
            return "raw bytes of no frames"
        if strays or uncounted:
            return "not one row per stream of a published episode"
        if over:
            return "a stream with more frames than its episode's steps"
        if total != stream_frames:
            return f"{total} frames in all, the manifest counts {stream_frames}"
        return None

    def stream_totals_disagreement(self) -> tuple[int, str] | None:
        """``(episode, what differs)`` for the first episode whose per-stream totals (a
        published store's) disagree with its step_frames rows, once those are loaded."""
        if not self._db.has_stream_totals:
            return None
        row = self._db.one(
            "SELECT x.episode_id, x.stream, x.frames, (SELECT COUNT(f.frame_segment) "
            " FROM step_frames f WHERE f.episode_id = x.episode_id AND f.stream = x.stream) "
            "AS n FROM stream_totals x WHERE x.frames != n ORDER BY x.episode_id, x.stream LIMIT 1"
        )
        if row is None:
            return None
        eid, stream, frames, rows = row
        return int(eid), f"totals say {frames} frames of stream {stream}; its rows hold {rows}"

    def episode_row_counts(self) -> list[EpisodeRowCount]:
        """For every episode: its status, the step count it records, the rows it has."""
        return [
            EpisodeRowCount(*r)
            for r in self._db.rows(
                "SELECT e.id, e.status, e.steps, "
                "(SELECT COUNT(*) FROM steps s WHERE s.episode_id = e.id) FROM episodes e"
            )
        ]
