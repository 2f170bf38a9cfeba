"""What ``recover`` writes: rows rebuilt from segments, episodes closed after a crash."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from ._base import Connection

#: The env id of the run that adopts episodes whose rows were lost.
RECOVERED_ENV_ID = "unknown (recovered)"
#: The info of a step row rebuilt from a segment (its action and reward are unknown).
RECOVERED_INFO = json.dumps({"recovered": True})


class Recovery:
    """What ``recover`` reads and writes: rows rebuilt from segments, recordings closed."""

    def __init__(self, db: Connection):
        self._db = db

    def step_keys(self) -> dict[int, set[int]]:
        """``{episode: {steps with a row}}``."""
        have: dict[int, set[int]] = {}
        for ep, step in self._db.iter("SELECT episode_id, step FROM steps"):
            have.setdefault(ep, set()).add(step)
        return have

    def create_recovered_run(self) -> int:
        """A run row for episodes whose own rows were lost; returns its id."""
        return self._db.insert(
            "INSERT INTO runs (env_id, created, config, stats) VALUES (?, ?, '{}', '{}')",
            (RECOVERED_ENV_ID, time.time()),
        )

    def create_recovered_episode(self, episode_id: int, run_id: int) -> None:
        self._db.exec(
            "INSERT INTO episodes (id, run_id, idx, status) VALUES (?, ?, ?, 'interrupted')",
            (episode_id, run_id, episode_id),
        )

    def insert_recovered_steps(self, rows: Iterable[tuple[int, int, int, int, int, str]]) -> int:
        """Rows ``(episode, step, segment, offset, slot, shape)`` for frames that had no
        step row: action and reward unknown, info ``{"recovered": true}``."""
        return self._db.exec_many(
            "INSERT INTO steps (episode_id, step, info, frame_segment, frame_offset, "
            "frame_slot, frame_shape) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (ep, k, RECOVERED_INFO, seg, off, slot, shape)
                for ep, k, seg, off, slot, shape in rows
            ],
        )

    def recount_episodes(self, episode_ids: Iterable[int]) -> None:
        """Recompute ``steps``, ``total_reward`` and a missing ``ended`` from step rows."""
        self._db.exec_many(
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
        ids = [r[0] for r in self._db.rows("SELECT id FROM episodes WHERE status = 'recording'")]
        self.recount_episodes(ids)
        self._db.exec_many(
            "UPDATE episodes SET status = 'interrupted' WHERE id = ?", [(i,) for i in ids]
        )
        return ids

    # ----------------------------------------------------------------- from segment metadata
    def origins(self) -> tuple[dict[int, tuple[Any, Any]], dict[int, Any]]:
        """``({episode id: (run id, started)}, {run id: created})``: what tells a
        segment's ``EPISODE`` record of this catalogue's episode from one of another
        recording that used the same ids."""
        episodes = {
            e: (r, s) for e, r, s in self._db.rows("SELECT id, run_id, started FROM episodes")
        }
        runs = dict(self._db.rows("SELECT id, created FROM runs"))
        return episodes, runs

    def restore_run(self, run: dict[str, Any], run_id: int | None) -> int:
        """Insert a run row from an ``EPISODE`` record's ``run`` fields (values as stored)
        under ``run_id`` (None: the next free id). Returns its id."""
        values = [run_id, *(run.get(k) for k in _RUN_FIELDS[1:])]
        return self._db.insert(
            "INSERT INTO runs (id, env_id, created, preset, host_profile, durability, "
            "config, env_spec) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )

    def restore_run_end(self, run_id: int, ended: float | None, stats: str | None) -> None:
        """A ``RUN_END`` record's values, for a run whose row does not have them."""
        self._db.exec(
            "UPDATE runs SET ended = ?, stats = ? WHERE id = ? AND ended IS NULL",
            (ended, stats, run_id),
        )

    def restore_episode(self, episode: dict[str, Any], run_id: int, stream_key: int) -> None:
        """Insert an episode row from an ``EPISODE`` record (``recording`` until its end
        is restored or it is interrupted)."""
        key = None if stream_key == episode.get("id") else stream_key
        self._db.exec(
            "INSERT INTO episodes (id, run_id, idx, seed, started, sub_env, "
            "continues_episode, reset_options, stream_key, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'recording')",
            [episode.get("id"), run_id, *(episode.get(k) for k in _EPISODE_FIELDS), key],
        )

    def restore_episode_end(self, episode_id: int, end: dict[str, Any]) -> bool:
        """An ``EPISODE_END`` record's values, for an episode still ``recording`` (its
        end never committed). Returns whether the row changed."""
        return bool(
            self._db.exec(
                "UPDATE episodes SET ended = ?, status = ?, steps = ?, total_reward = ?, "
                "terminated = ?, truncated = ?, frames_dropped = ? "
                "WHERE id = ? AND status = 'recording'",
                (
                    end.get("ended"), end.get("status"), end.get("steps"),
                    end.get("total_reward"), int(bool(end.get("terminated"))),
                    int(bool(end.get("truncated"))), end.get("frames_dropped"), episode_id,
                ),
            )
        )  # fmt: skip

    def restore_steps(self, rows: Iterable[tuple]) -> int:
        """Step rows rebuilt whole from segments: ``(episode, step, action, reward,
        terminated, truncated, info, wall_time, segment, offset, slot, shape)``; rows
        that exist are kept. Returns the rows inserted."""
        return self._db.exec_many(
            "INSERT OR IGNORE INTO steps (episode_id, step, action, reward, terminated, "
            "truncated, info, wall_time, frame_segment, frame_offset, frame_slot, "
            "frame_shape) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def restore_streams(self, episode_id: int, streams: list[dict[str, Any]]) -> int:
        """``streams`` rows from an ``EPISODE`` record's ``streams`` list (index 0,
        render, has none); rows that exist are kept. Returns the rows inserted."""
        rows = []
        for idx, st in enumerate(streams[1:], start=1):
            shape = st.get("shape")
            text = (
                "x".join(str(d) for d in shape)
                if isinstance(shape, list) and shape and all(type(d) is int for d in shape)
                else None
            )
            shared = st.get("shared_with")
            rows.append(
                (episode_id, idx, st.get("name"), st.get("dtype") or "uint8", text,
                 shared if type(shared) is int else None)
            )  # fmt: skip
        if not rows or not self._db.has_m003:
            return 0
        return self._db.exec_many(
            "INSERT OR IGNORE INTO streams (episode_id, idx, name, dtype, shape, shared_with) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [r for r in rows if isinstance(r[2], str)],
        )

    def restore_stream_frames(self, rows: Iterable[tuple]) -> int:
        """``step_frames`` rows rebuilt from segments: ``(episode, stream, step, segment,
        offset, slot, shape)``; rows that exist are kept. Returns the rows inserted."""
        if not self._db.has_m003:
            return 0
        return self._db.exec_many(
            "INSERT OR IGNORE INTO step_frames (episode_id, stream, step, frame_segment, "
            "frame_offset, frame_slot, frame_shape) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def restore_observations(self, rows: Iterable[tuple[bytes, int, int]]) -> int:
        """``(typed binary, episode, step)``: observations rebuilt from steps blocks, for
        rows that hold none. Returns the rows changed."""
        if not self._db.has_m004:
            return 0
        return self._db.exec_many(
            "UPDATE steps SET observation = ? WHERE episode_id = ? AND step = ? "
            "AND observation IS NULL",
            rows,
        )

    def step_metadata(self, episode_id: int) -> dict[int, tuple]:
        """``{step: (action, reward, terminated, truncated, info, wall_time,
        frame_shape, observation)}`` of an episode's rows, as stored (``verify`` compares
        them with the steps its segments record; observation None before m004)."""
        obs = "observation" if self._db.has_m004 else "NULL"
        return {
            row[0]: row[1:]
            for row in self._db.iter(
                "SELECT step, action, reward, terminated, truncated, info, wall_time, "
                f"frame_shape, {obs} FROM steps WHERE episode_id = ?",
                [episode_id],
            )
        }

    def writer_store_id(self, segment: int) -> str | None:
        """The id of the store that wrote ``segment``: this store's, unless the segment
        was merged from another store (then None: not known here)."""
        if self._db.has_m002 and self._db.rows(
            "SELECT 1 FROM segments WHERE id = ? AND header_id IS NOT NULL", [segment]
        ):
            return None
        row = self._db.rows("SELECT value FROM meta WHERE key = 'store_id'")
        return row[0][0] if row and isinstance(row[0][0], str) else None

    def restore_store_id(self, store_id: str) -> None:
        """The store id its segments name (a catalogue rebuilt from them)."""
        self._db.exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('store_id', ?)", [store_id])

    # ------------------------------------------------- merged episodes gc describes
    def chunk_owners(self, segment: int) -> dict[int, set[int]]:
        """``{chunk offset: {episodes}}``: the episodes not deleted whose render frame
        pointers point into each chunk of ``segment``."""
        out: dict[int, set[int]] = {}
        for off, ep in self._db.rows(
            "SELECT DISTINCT s.frame_offset, s.episode_id FROM steps s "
            "JOIN episodes e ON e.id = s.episode_id "
            "WHERE s.frame_segment = ? AND e.status != 'deleted'",
            [segment],
        ):
            out.setdefault(off, set()).add(ep)
        return out

    def step_rows(self, episode_id: int) -> list[tuple]:
        """An episode's step rows as stored, in step order: ``(step, action, reward,
        terminated, truncated, info, wall_time, segment, offset, slot, frame_shape,
        observation)`` (observation None before m004)."""
        obs = "observation" if self._db.has_m004 else "NULL"
        return self._db.rows(
            "SELECT step, action, reward, terminated, truncated, info, wall_time, "
            f"frame_segment, frame_offset, frame_slot, frame_shape, {obs} FROM steps "
            "WHERE episode_id = ? ORDER BY step",
            [episode_id],
        )

    def described(self, episode_id: int) -> tuple[dict, dict, dict, dict] | None:
        """``(run, episode, end, run end)``: an episode's ``runs`` and ``episodes`` rows
        as stored, in the fields of ``EPISODE`` (``run``, ``episode``), ``EPISODE_END``
        and ``RUN_END`` records (docs/FORMAT.md); None when there is no such episode."""
        env_spec = "r.env_spec" if self._db.has_m002 else "NULL"
        extra = "e.sub_env, e.continues_episode, e.reset_options"
        if not self._db.has_m002:
            extra = "NULL, NULL, NULL"
        row = self._db.one(
            f"SELECT r.id, r.env_id, r.created, r.preset, r.host_profile, r.durability, "
            f"r.config, {env_spec}, r.ended, r.stats, e.id, e.idx, e.seed, e.started, "
            f"{extra}, e.ended, e.status, e.steps, e.total_reward, e.terminated, "
            "e.truncated, e.frames_dropped FROM episodes e JOIN runs r ON r.id = e.run_id "
            "WHERE e.id = ?",
            [episode_id],
        )
        if row is None:
            return None
        run = dict(zip(_RUN_FIELDS, row[:8], strict=True))
        run_end = {"run_id": row[0], "ended": row[8], "stats": row[9]}
        episode = dict(zip(("id", *_EPISODE_FIELDS), row[10:17], strict=True))
        ended, status, steps, total, term, trunc, dropped = row[17:]
        end = {
            "stream_key": episode_id, "episode_id": episode_id, "ended": ended,
            "status": status, "steps": steps, "total_reward": total,
            "terminated": bool(term), "truncated": bool(trunc), "frames_dropped": dropped,
        }  # fmt: skip
        return run, episode, end, run_end

    # ----------------------------------------------------------------- tombstones (rm)
    def tombstone_entries(self, episode_ids: list[int]) -> list[dict[str, Any]]:
        """What a ``DELETED`` record says of each episode (docs/FORMAT.md): its id,
        stream key, run and the run's and its own start times (which tell it from
        another recording that used the same id), and its row's end fields (``end``)."""
        out = []
        for eid in episode_ids:
            row = self._db.one(
                f"SELECT e.id, {self._db.m002('COALESCE(e.stream_key, e.id)', 'e.id')}, "
                "e.run_id, r.created, e.started, e.ended, e.steps, e.total_reward, "
                "e.terminated, e.truncated, e.frames_dropped FROM episodes e "
                "LEFT JOIN runs r ON r.id = e.run_id WHERE e.id = ?",
                [eid],
            )
            if row is not None:
                entry = dict(zip(_TOMBSTONE_FIELDS, row[:5], strict=True))
                entry["end"] = dict(zip(_END_FIELDS, row[5:], strict=True))
                out.append(entry)
        return out

    def restore_deleted_end(self, episode_id: int, end: dict[str, Any]) -> None:
        """A tombstone's ``end`` (the row's end fields when ``rm`` ran) for an episode
        it deletes: a rebuilt catalogue may hold its ``EPISODE`` record but not its
        ``EPISODE_END`` (a gc dropped the segment holding it)."""
        values = [end.get(k) for k in _END_FIELDS]
        self._db.exec(
            f"UPDATE episodes SET {', '.join(f'{k} = ?' for k in _END_FIELDS)} WHERE id = ?",
            [*values, episode_id],
        )

    def episode_segments(self, episode_ids: list[int]) -> set[int]:
        """The segments the frame pointers of ``episode_ids`` point into (every stream)."""
        if not episode_ids:
            return set()
        marks = ",".join("?" * len(episode_ids))
        return {
            r[0]
            for r in self._db.rows(
                f"SELECT DISTINCT frame_segment FROM {self._db.frames()} "
                f"WHERE frame_segment IS NOT NULL AND episode_id IN ({marks})",
                episode_ids,
            )
        }


_TOMBSTONE_FIELDS = ("id", "stream_key", "run_id", "run_created", "started")
_END_FIELDS = ("ended", "steps", "total_reward", "terminated", "truncated", "frames_dropped")
_RUN_FIELDS = ("id", "env_id", "created", "preset", "host_profile", "durability", "config",
               "env_spec")  # fmt: skip
_EPISODE_FIELDS = ("idx", "seed", "started", "sub_env", "continues_episode", "reset_options")
