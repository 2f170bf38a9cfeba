"""Runs, episodes and steps: what ``FrameStore`` reads, and marking episodes deleted."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

# telemetry's decoders load numpy: named through the package so that they load on the
# first step read, not when a store is listed.
import telemetry

from .._format import MAX_SEGMENT_ID, RENDER_STREAM
from ..errors import InvalidInput
from ..types import EpisodeInfo, FrameLocation, FrameSummary, RunInfo, StepInfo, StepTrack
from ._base import END_OF_EPISODE, Connection
from ._recovery import RECOVERED_INFO
from ._validate import MAX_SLOT, Cell, valid_shape

EPISODE_STATUSES = ("recording", "complete", "interrupted", "trimmed", "deleted")

_EPISODES = """
    SELECT e.id, e.run_id, r.env_id, e.idx, e.seed, e.started, e.ended, e.total_reward,
           e.terminated, e.truncated, e.status, e.frames_dropped, {counts},
           {m002},
           {m003}
    FROM episodes e JOIN runs r ON r.id = e.run_id{joins}
"""
_COUNTS_FROM_STEPS = (
    "(SELECT COUNT(*) FROM steps s WHERE s.episode_id = e.id), "
    "(SELECT COUNT(*) FROM steps s WHERE s.episode_id = e.id AND s.frame_segment IS NOT NULL)"
)
# A published store's per-episode totals: its listing never reads the steps table.
_COUNTS_FROM_TOTALS = "COALESCE(t.steps, 0), COALESCE(t.frames, 0)"
_TOTALS_JOIN = " LEFT JOIN episode_totals t ON t.episode_id = e.id"
# Stream names cannot hold a comma (STREAM_NAME): the list comes back as one text.
_EPISODES_M003 = (
    "(SELECT group_concat(name, ',') FROM "
    "(SELECT name FROM streams st WHERE st.episode_id = e.id ORDER BY st.idx))"
)
_EPISODES_M002 = "e.sub_env, e.continues_episode, e.reset_options, COALESCE(e.stream_key, e.id)"
_EPISODES_M001 = "NULL, NULL, NULL, e.id"

_STEPS = (
    "SELECT step, action, reward, terminated, truncated, info, wall_time, frame_segment, "
    "frame_offset, frame_slot, frame_shape FROM steps "
    "WHERE episode_id = ? AND step >= ? AND step < ? ORDER BY step"
)
#: ``frame_runs``: rows with a pointer (or any pointer column, or a step not an integer:
#: whatever ``frame_locations`` would refuse) grouped by chunk and ``slot - step``, which
#: stays the same along a run; ``ints`` counts the rows whose step and slot are integers
#: (segment and offset are the group's own values, checked once a run).
_RUNS = (
    "SELECT MIN(step), COUNT(*), MAX(step), frame_segment, frame_offset, MIN(frame_slot), "
    "MAX(frame_slot), SUM(typeof(step) = 'integer' AND typeof(frame_slot) = 'integer') "
    "FROM steps WHERE episode_id = ? AND step >= ? AND step < ? AND (frame_segment IS NOT "
    "NULL OR frame_offset IS NOT NULL OR frame_slot IS NOT NULL OR typeof(step) != 'integer') "
    "GROUP BY frame_segment, frame_offset, frame_slot - step ORDER BY 1"
)


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"210x160x3"`` -> ``(210, 160, 3)`` (how the steps table records frame shapes);
    ``CorruptCatalog`` for text that is not a frame shape."""
    return Cell("steps", "a row").shape("frame_shape", text) if text else None


@functools.lru_cache(maxsize=256)
def format_shape(shape: tuple[int, ...]) -> str:
    """``"210x160x3"``: the ``frame_shape`` column's text (made once per shape: the
    recorder asks for every frame)."""
    text = _SHAPE_TEXT.get(shape) if type(shape) is tuple else None
    if text is None:
        text = "x".join(str(d) for d in shape)
        if (
            type(shape) is tuple
            and len(_SHAPE_TEXT) < _SHAPE_TEXTS
            and all(type(d) is int for d in shape)
        ):
            _SHAPE_TEXT[shape] = text
    return text


#: The texts ``format_shape`` made, by shape (a recording has a few shapes; the first
#: ``_SHAPE_TEXTS`` are kept).
_SHAPE_TEXT: dict[tuple[int, ...], str] = {}
_SHAPE_TEXTS = 256


def _plain_location(seg: Any, off: Any, slot: Any) -> bool:
    """Whether a stored pointer is three plain integers in range (no error to name)."""
    return (
        type(seg) is int
        and type(off) is int
        and type(slot) is int
        and 0 <= seg <= MAX_SEGMENT_ID
        and off >= 0
        and 0 <= slot <= MAX_SLOT
    )


def _step_cell(episode_id: Any, step: Any) -> Cell:
    return Cell("steps", f"episode {episode_id} step {step}")


def _episode(r: tuple) -> EpisodeInfo:
    (eid, run_id, env_id, idx, seed, started, ended, reward, term, trunc, status, dropped,
     n_rows, n_frames, sub_env, continues, options, stream_key, streams) = r  # fmt: skip
    c = Cell("episodes", f"id {eid!r}")
    names = Cell("streams", f"episode {eid!r}").text("name", streams)
    return EpisodeInfo(
        id=c.int("id", eid),
        run_id=c.int("run_id", run_id),
        env_id=Cell("runs", f"id {run_id!r}").text("env_id", env_id, null=False),
        index=c.int("idx", idx, null=True),
        seed=c.int("seed", seed, null=True),
        started=c.real("started", started),
        ended=c.real("ended", ended),
        steps=n_rows,
        total_reward=c.real("total_reward", reward) or 0.0,
        terminated=c.flag("terminated", term),
        truncated=c.flag("truncated", trunc),
        status=c.text("status", status, null=False, choices=EPISODE_STATUSES),
        frames_dropped=c.int("frames_dropped", dropped, null=True, lo=0) or 0,
        frames=n_frames,
        sub_env=c.int("sub_env", sub_env, null=True, lo=0),
        continues_episode=c.int("continues_episode", continues, null=True, lo=1),
        reset_options=c.json_object("reset_options", options) if options is not None else None,
        stream_key=c.int("stream_key", stream_key, lo=0),
        streams=(RENDER_STREAM, *names.split(",")) if names else (RENDER_STREAM,),
    )


def _run(r: dict[str, Any]) -> RunInfo:
    c = Cell("runs", f"id {r['id']!r}")
    return RunInfo(
        c.int("id", r["id"]),
        c.text("env_id", r["env_id"], null=False),
        c.real("created", r["created"]),
        c.real("ended", r["ended"]),
        c.text("preset", r["preset"]),
        c.text("host_profile", r["host_profile"]),
        c.text("durability", r["durability"]),
        c.json_object("config", r["config"]),
        c.json_object("stats", r["stats"]),
        c.json_object("env_spec", r["env_spec"]) if r.get("env_spec") is not None else None,
    )


class Episodes:
    """Runs, episodes and their steps as ``FrameStore`` reads them; episodes marked
    deleted."""

    def __init__(self, db: Connection):
        self._db = db

    # ----------------------------------------------------------------- runs
    def runs(self) -> list[RunInfo]:
        return [_run(r) for r in self._db.dicts("SELECT * FROM runs ORDER BY id")]

    def next_ids(self) -> tuple[int, int]:
        """``(run id, episode id)`` one above every id in use, episode ids also above
        every stream key a merged episode's chunks carry (call with the writer lock
        held, so no other writer can take them)."""
        run, episode = self._db.one(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM runs), "
            "(SELECT MAX(COALESCE(MAX(id), 0), COALESCE(MAX(stream_key), 0)) FROM episodes)"
        )
        run = Cell("runs", "the highest").int("id", run, lo=0, hi=2**62)
        episode = Cell("episodes", "the highest").int("id", episode, lo=0, hi=2**62)
        return run + 1, episode + 1

    # ----------------------------------------------------------------- episodes
    def all(self, *, run_id: int | None = None, include_deleted: bool = False) -> list[EpisodeInfo]:
        """Episode records in id order (deleted ones only when asked)."""
        where, params = [], []
        if run_id is not None:
            where.append("e.run_id = ?")
            params.append(run_id)
        if not include_deleted:
            where.append("e.status != 'deleted'")
        sql = self._episodes_sql() + (" WHERE " + " AND ".join(where) if where else "")
        return [_episode(r) for r in self._db.rows(sql + " ORDER BY e.id", params)]

    def get(self, episode_id: int) -> EpisodeInfo | None:
        """One episode, deleted or not; None when there is no such id."""
        rows = self._db.rows(self._episodes_sql() + " WHERE e.id = ?", [episode_id])
        return _episode(rows[0]) if rows else None

    def _episodes_sql(self) -> str:
        totals = self._db.has_totals
        return _EPISODES.format(
            m002=self._db.m002(_EPISODES_M002, _EPISODES_M001),
            m003=_EPISODES_M003 if self._db.has_m003 else "NULL",
            counts=_COUNTS_FROM_TOTALS if totals else _COUNTS_FROM_STEPS,
            joins=_TOTALS_JOIN if totals else "",
        )

    def stream_key(self, episode_id: int) -> int:
        """The stream key of an episode's chunks: its id, unless it was merged from
        another store (its chunks keep the key they were written with)."""
        row = self._db.one(
            f"SELECT {self._db.m002('COALESCE(stream_key, id)', 'id')} FROM episodes WHERE id = ?",
            [episode_id],
        )
        return episode_id if row is None else int(row[0])

    def stream_key_owners(self) -> dict[int, list[int]]:
        """``{stream key: [episode ids whose chunks carry it]}`` (several only after a
        merge: each source numbered its episodes from 1)."""
        out: dict[int, list[int]] = {}
        for key, eid in self._db.rows(
            f"SELECT {self._db.m002('COALESCE(stream_key, id)', 'id')}, id FROM episodes"
        ):
            out.setdefault(key, []).append(eid)
        return out

    def statuses(self) -> dict[int, str]:
        """``{episode id: status}`` of every episode, deleted ones included."""
        out = {}
        for eid, status in self._db.rows("SELECT id, status FROM episodes"):
            c = Cell("episodes", f"id {eid!r}")
            out[c.int("id", eid)] = c.text("status", status, null=False, choices=EPISODE_STATUSES)
        return out

    def action_spec(self, episode_id: int) -> dict[str, Any] | None:
        """The action space description stored with the episode's run."""
        row = self._db.one(
            "SELECT r.id, r.config FROM runs r JOIN episodes e ON e.run_id = r.id WHERE e.id = ?",
            [episode_id],
        )
        if row is None:
            return None
        spec = Cell("runs", f"id {row[0]!r}").json_object("config", row[1]).get("action_space")
        if spec is not None and not isinstance(spec, dict):
            raise Cell("runs", f"id {row[0]!r}").bad("config", "action_space is not an object")
        return spec

    def mark_deleted(self, episode_ids: list[int]) -> None:
        """Mark episodes deleted (``gc`` reclaims their frames)."""
        with self._db.transaction():
            self._db.exec_many(
                "UPDATE episodes SET status = 'deleted' WHERE id = ?", [(i,) for i in episode_ids]
            )

    def own_stream_keys(self, episode_ids: list[int]) -> None:
        """Their chunks carry their own ids now (``gc`` wrote a merged episode's chunks
        as this store's): ``stream_key`` NULL. In the caller's transaction."""
        if episode_ids and self._db.has_m002:
            self._db.exec_many(
                "UPDATE episodes SET stream_key = NULL WHERE id = ?", [(i,) for i in episode_ids]
            )

    def stale_recordings(self) -> list[int]:
        """Episodes still marked ``recording``."""
        return [
            Cell("episodes", "recording").int("id", r[0])
            for r in self._db.rows("SELECT id FROM episodes WHERE status = 'recording'")
        ]

    # ----------------------------------------------------------------- steps
    def steps(self, episode_id: int, start: int = 0, stop: int | None = None) -> list[StepInfo]:
        """Step records of an episode in step order, ``start <= step < stop``."""
        spec = self.action_spec(episode_id)
        rows = self._db.rows(_STEPS, [episode_id, start, END_OF_EPISODE if stop is None else stop])
        return [_step(episode_id, row, spec) for row in rows]

    def step_track(self, episode_id: int, start: int = 0, stop: int | None = None) -> StepTrack:
        """Rewards, actions and flags of ``start <= step < stop`` in one query (no info,
        no frame pointers): what a timeline of the episode needs."""
        spec = self.action_spec(episode_id)
        rows = self._db.rows(
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
            actions=_decoded_actions(actions, spec),
            terminated=tuple(bool(t) for t in term),
            truncated=tuple(bool(t) for t in trunc),
            has_frame=tuple(bool(f) for f in has_frame),
            recovered=tuple(bool(r) for r in recovered),
        )

    def frame_locations(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> list[tuple[int, FrameLocation | None]]:
        """``(step, (segment, offset, slot) or None)`` for the episode's rows, in order."""
        rows = self._db.rows(
            "SELECT step, frame_segment, frame_offset, frame_slot FROM steps "
            "WHERE episode_id = ? AND step >= ? AND step < ? ORDER BY step",
            [episode_id, start, END_OF_EPISODE if stop is None else stop],
        )
        out = []
        for step, seg, off, slot in rows:
            # The common case checked inline (a replay reads every row); anything else
            # goes through the full check, which names what is wrong.
            if type(step) is int and step >= 0 and seg is None and off is None and slot is None:
                out.append((step, None))
            elif type(step) is int and step >= 0 and _plain_location(seg, off, slot):
                out.append((step, (seg, off, slot)))
            else:
                c = _step_cell(episode_id, step)
                out.append((c.int("step", step, lo=0), c.location(seg, off, slot)))
        return out

    def frame_runs(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> list[tuple[int, int, FrameLocation]] | None:
        """The episode's stored frames as runs, in step order: ``(first step, count,
        (segment, offset, first slot))`` for steps ``first <= step < first + count`` in
        consecutive slots of one chunk (steps without a frame lie between runs). One
        row per run, not per step: SQLite groups the rows by chunk and ``slot - step``.

        None when any row is not plain (a pointer or step of the wrong type or out of
        range, a run with a gap): the caller then reads ``frame_locations``, whose
        checks name what is wrong."""
        rows = self._db.rows(_RUNS, [episode_id, start, END_OF_EPISODE if stop is None else stop])
        out = []
        for first, count, last, seg, off, slot, last_slot, ints in rows:
            if not (
                ints == count
                and type(first) is int
                and first >= 0
                and last - first + 1 == count
                and _plain_location(seg, off, slot)
                and type(last_slot) is int
                and last_slot <= MAX_SLOT
            ):
                return None
            out.append((first, count, (seg, off, slot)))
        return out

    def frame_summary(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> FrameSummary:
        """Committed steps, frame shapes and stored frames of a range of an episode."""
        with self._db.lock:
            (last,) = self._db.one("SELECT MAX(step) FROM steps WHERE episode_id = ?", [episode_id])
            last = Cell("steps", f"episode {episode_id}").int("step", last, null=True, lo=0)
            end = 0 if last is None else min(last + 1, END_OF_EPISODE)
            stop = end if stop is None else min(stop, end)
            where = "WHERE episode_id = ? AND step >= ? AND step < ? AND frame_segment IS NOT NULL"
            params = [episode_id, start, stop]
            shapes = [
                r[0]
                for r in self._db.rows(f"SELECT DISTINCT frame_shape FROM steps {where}", params)
            ]
            (frames,) = self._db.one(f"SELECT COUNT(*) FROM steps {where}", params)
        cell = Cell("steps", f"episode {episode_id}")
        for shape in shapes:
            cell.shape("frame_shape", shape)
        return FrameSummary(end, max(stop, start), tuple(sorted(s for s in shapes if s)), frames)

    def chunks(self, episode_id: int) -> dict[int, list[int]]:
        """Offsets of the chunk records holding an episode's frames, per segment."""
        out: dict[int, list[int]] = {}
        for seg, off, slot in self._db.rows(
            f"SELECT DISTINCT frame_segment, frame_offset, 0 FROM {self._db.frames()} "
            "WHERE episode_id = ? AND frame_segment IS NOT NULL",
            [episode_id],
        ):
            loc = Cell("steps", f"episode {episode_id}").location(seg, off, slot)
            assert loc is not None
            out.setdefault(loc[0], []).append(loc[1])
        return out


def _step(episode_id: int, row: tuple, spec: dict[str, Any] | None) -> StepInfo:
    """One step row, every value checked (``CorruptCatalog`` names the bad one)."""
    step, action, reward, term, trunc, info, wall, seg, off, slot, shape = row
    c = _step_cell(episode_id, step)
    action = c.text("action", action)
    info = c.text("info", info)
    try:
        decoded_action = telemetry.decode_action(action, spec) if action is not None else None
    except (InvalidInput, RecursionError, TypeError, ValueError) as e:
        raise c.bad("action", str(e)[:120]) from None
    try:
        decoded_info = telemetry.decode_info(info) if info else {}
    except (InvalidInput, RecursionError, TypeError, ValueError) as e:
        raise c.bad("info", str(e)[:120]) from None
    if not isinstance(decoded_info, dict):
        raise c.bad("info", "not a JSON object")
    return StepInfo(
        episode_id=episode_id,
        step=c.int("step", step, lo=0),
        action=decoded_action,
        reward=c.real("reward", reward),
        terminated=c.flag("terminated", term),
        truncated=c.flag("truncated", trunc),
        info=decoded_info,
        wall_time=c.real("wall_time", wall),
        frame=c.location(seg, off, slot),
        frame_shape=c.shape("frame_shape", shape),
    )


__all__ = ["EPISODE_STATUSES", "Episodes", "format_shape", "parse_shape", "valid_shape"]


def _decoded_actions(texts: Sequence[Any], spec: Any) -> tuple[Any, ...]:
    """Actions of step rows decoded; a text seen before gives the same value without
    decoding it again when that value is hashable, i.e. immutable (a discrete action:
    the few values of a whole episode), so a long episode's track costs one dict lookup
    a row; arrays and dicts are decoded for each row (no row shares a mutable value)."""
    seen: dict[Any, Any] = {}
    out = []
    for text in texts:
        if text is None:
            out.append(None)
            continue
        value = seen.get(text, seen)
        if value is seen:
            value = telemetry.decode_action(text, spec)
            if _hashable(value):
                seen[text] = value
        out.append(value)
    return tuple(out)


def _hashable(value: Any) -> bool:
    """Hashable, i.e. immutable: a number, a numpy scalar, a tuple of them."""
    try:
        hash(value)
    except TypeError:  # an array, a list, a dict
        return False
    return True
