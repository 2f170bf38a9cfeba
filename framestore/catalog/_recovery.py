"""What ``recover`` writes: rows rebuilt from segments, episodes closed after a crash."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from ._base import CatalogBase

#: The env id of the run that adopts episodes whose rows were lost.
RECOVERED_ENV_ID = "unknown (recovered)"
#: The info of a step row rebuilt from a segment (its action and reward are unknown).
RECOVERED_INFO = json.dumps({"recovered": True})


class RecoveryQueries(CatalogBase):
    def step_keys(self) -> dict[int, set[int]]:
        """``{episode: {steps with a row}}``."""
        have: dict[int, set[int]] = {}
        for ep, step in self._iter("SELECT episode_id, step FROM steps"):
            have.setdefault(ep, set()).add(step)
        return have

    def create_recovered_run(self) -> int:
        """A run row for episodes whose own rows were lost; returns its id."""
        with self._lock:
            cur = self._conn().execute(
                "INSERT INTO runs (env_id, created, config, stats) VALUES (?, ?, '{}', '{}')",
                (RECOVERED_ENV_ID, time.time()),
            )
            return int(cur.lastrowid)

    def create_recovered_episode(self, episode_id: int, run_id: int) -> None:
        self._exec(
            "INSERT INTO episodes (id, run_id, idx, status) VALUES (?, ?, ?, 'interrupted')",
            (episode_id, run_id, episode_id),
        )

    def insert_recovered_steps(self, rows: Iterable[tuple[int, int, int, int, int, str]]) -> int:
        """Rows ``(episode, step, segment, offset, slot, shape)`` for frames that had no
        step row: action and reward unknown, info ``{"recovered": true}``."""
        return self._exec_many(
            "INSERT INTO steps (episode_id, step, info, frame_segment, frame_offset, "
            "frame_slot, frame_shape) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (ep, k, RECOVERED_INFO, seg, off, slot, shape)
                for ep, k, seg, off, slot, shape in rows
            ],
        )

    def recount_episodes(self, episode_ids: Iterable[int]) -> None:
        """Recompute ``steps``, ``total_reward`` and a missing ``ended`` from step rows."""
        self._exec_many(
            "UPDATE episodes SET "
            "steps = (SELECT COUNT(*) FROM steps s WHERE s.episode_id = episodes.id), "
            "total_reward = (SELECT COALESCE(SUM(reward), 0) FROM steps s "
            "                WHERE s.episode_id = episodes.id), "
            "ended = COALESCE(ended, (SELECT MAX(wall_time) FROM steps s "
            "                         WHERE s.episode_id = episodes.id), started) "
            "WHERE id = ?",
            [(i,) for i in episode_ids],
        )

    def interrupt_recordings(self) -> list[int]:
        """Episodes left ``recording`` by a writer that stopped become ``interrupted``,
        their counts recomputed. Returns their ids."""
        ids = [r[0] for r in self._rows("SELECT id FROM episodes WHERE status = 'recording'")]
        self.recount_episodes(ids)
        self._exec_many(
            "UPDATE episodes SET status = 'interrupted' WHERE id = ?", [(i,) for i in ids]
        )
        return ids
