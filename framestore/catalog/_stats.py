"""Counts over the whole catalogue, for ``info`` and ``verify``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._base import CatalogBase
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


class StatsQueries(CatalogBase):
    def stats(self) -> CatalogStats:
        with self._lock:
            (n_runs,) = self._one("SELECT COUNT(*) FROM runs")
            by_status = dict(self._rows("SELECT status, COUNT(*) FROM episodes GROUP BY status"))
            steps, frames = self._one(
                "SELECT COUNT(*), COUNT(s.frame_segment) FROM steps s "
                "JOIN episodes e ON e.id = s.episode_id WHERE e.status != 'deleted'"
            )
            raw = 0
            for shape, count in self._rows(
                "SELECT s.frame_shape, COUNT(*) FROM steps s "
                "JOIN episodes e ON e.id = s.episode_id "
                "WHERE e.status != 'deleted' AND s.frame_segment IS NOT NULL "
                "GROUP BY s.frame_shape"
            ):
                if shape:
                    raw += math.prod(Cell("steps", "a row").shape("frame_shape", shape)) * count
            (dropped,) = self._one(
                "SELECT COALESCE(SUM(frames_dropped), 0) FROM episodes WHERE status != 'deleted'"
            )
            dropped = Cell("episodes", "the sum of").int("frames_dropped", int(dropped or 0))
            durability = dict(
                self._rows(
                    "SELECT COALESCE(durability, 'unknown'), COUNT(*) FROM runs "
                    "GROUP BY durability ORDER BY durability"
                )
            )
        return CatalogStats(n_runs, by_status, steps, frames, raw, dropped, durability)

    def episode_row_counts(self) -> list[EpisodeRowCount]:
        """For every episode: its status, the step count it records, the rows it has."""
        return [
            EpisodeRowCount(*r)
            for r in self._rows(
                "SELECT e.id, e.status, e.steps, "
                "(SELECT COUNT(*) FROM steps s WHERE s.episode_id = e.id) FROM episodes e"
            )
        ]
