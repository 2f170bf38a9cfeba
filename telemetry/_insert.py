"""The sink's insert path: how telemetry events become rows of ``framestore.db``.

The only SQL the recording path runs; everything else is in ``framestore.catalog``.
Runs on the sink thread inside the sink's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from operator import attrgetter

from .errors import SinkError
from .events import (
    Barrier,
    EpisodeEnded,
    EpisodeStarted,
    Event,
    RunEnded,
    RunStarted,
    Step,
    StepBatch,
    StreamFrames,
    StreamStarted,
)
from .jsonsafe import dumps

FrameLocation = tuple[int, int, int]

_INSERT_STEP = (
    "INSERT INTO steps (episode_id, step, action, reward, terminated, truncated, info, "
    "wall_time, frame_segment, frame_offset, frame_slot, frame_shape) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_STREAM_FRAME = (
    "INSERT INTO step_frames (episode_id, stream, step, frame_segment, frame_offset, "
    "frame_slot, frame_shape) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SET_OBSERVATION = "UPDATE steps SET observation = ? WHERE episode_id = ? AND step = ?"
_INSERT_STREAM = (
    "INSERT INTO streams (episode_id, idx, name, dtype, shape, shared_with) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_RUN = (
    "INSERT INTO runs (id, env_id, created, preset, host_profile, durability, config, "
    "env_spec) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EPISODE = (
    "INSERT INTO episodes (id, run_id, idx, seed, started, status, sub_env, "
    "continues_episode, reset_options) VALUES (?, ?, ?, ?, ?, 'recording', ?, ?, ?)"
)
_END_EPISODE = (
    "UPDATE episodes SET ended = ?, status = ?, steps = ?, total_reward = ?, terminated = ?, "
    "truncated = ?, frames_dropped = ? WHERE id = ?"
)
_END_RUN = "UPDATE runs SET ended = ?, stats = ? WHERE id = ?"


# The Step fields that go into a row as they are, in column order (C-speed access).
_STEP_FIELDS = attrgetter(
    "episode_id", "step", "action", "reward", "terminated", "truncated", "info", "wall_time"
)
_NO_FRAME = (None, None, None)


def _step_row(event: Step, loc: FrameLocation | None) -> tuple:
    # SQLite stores bools as the integers 0 and 1.
    return _STEP_FIELDS(event) + (loc or _NO_FRAME) + (event.frame_shape,)


def _write_other(conn: sqlite3.Connection, event: Event) -> None:
    kind = type(event)
    if kind is RunStarted:
        conn.execute(
            _INSERT_RUN,
            (
                event.run_id,
                event.env_id,
                event.created,
                event.preset,
                event.host_profile,
                event.durability,
                dumps(event.config),
                None if event.env_spec is None else dumps(event.env_spec),
            ),
        )
    elif kind is EpisodeStarted:
        conn.execute(
            _INSERT_EPISODE,
            (
                event.episode_id,
                event.run_id,
                event.index,
                event.seed,
                event.started,
                event.sub_env,
                event.continues_episode,
                event.reset_options,
            ),
        )
    elif kind is StreamStarted:
        e = event
        conn.execute(
            _INSERT_STREAM, (e.episode_id, e.index, e.name, e.dtype, e.shape, e.shared_with)
        )
    elif kind is EpisodeEnded:
        cur = conn.execute(
            _END_EPISODE,
            (
                event.ended,
                event.status,
                event.steps,
                event.total_reward,
                int(event.terminated),
                int(event.truncated),
                event.frames_dropped,
                event.episode_id,
            ),
        )
        if cur.rowcount != 1:
            raise SinkError(f"EpisodeEnded for unknown episode {event.episode_id}")
    elif kind is RunEnded:
        cur = conn.execute(_END_RUN, (event.ended, dumps(event.stats), event.run_id))
        if cur.rowcount != 1:
            raise SinkError(f"RunEnded for unknown run {event.run_id}")
    elif kind is not Barrier:
        raise SinkError(f"unknown telemetry event {kind.__qualname__}")


def _batch_rows(event: StepBatch, locs) -> list[tuple]:
    """The rows of a batch, built column-wise (one zip, no per-row indexing)."""
    n = len(event.steps)
    walls = event.wall_times or (event.wall_time,) * n
    # range first: zip stops before taking a location of the next event from ``locs``
    frames = [loc or _NO_FRAME for _, loc in zip(range(n), locs, strict=False)]
    return [
        (e, st, a, r, te, tr, i, w, *f, sh)
        for e, st, a, r, te, tr, i, w, f, sh in zip(
            event.episode_ids,
            event.steps,
            event.actions,
            event.rewards,
            event.terminated,
            event.truncated,
            event.infos,
            walls,
            frames,
            event.frame_shapes,
            strict=True,
        )
    ]


def write_events(
    conn: sqlite3.Connection, pending: Sequence[Event], locations: Sequence[FrameLocation | None]
) -> None:
    """Write ``pending`` in order; ``locations`` holds one frame location per step row
    (one per ``Step`` followed by one per frame of its ``streams``, ``len(batch)`` per
    ``StepBatch``). Consecutive rows go in one
    ``executemany``."""
    loc_iter = iter(locations)
    rows: list[tuple] = []
    stream_rows: list[tuple] = []
    observations: list[tuple] = []
    for event in pending:
        kind = type(event)
        if kind is Step:
            rows.append(_step_row(event, next(loc_iter)))
            if event.observation is not None:
                observations.append((event.observation, event.episode_id, event.step))
            for sf in event.streams:  # their locations follow the step's own
                loc = next(loc_iter)
                if loc is not None:  # a dropped frame leaves no row
                    stream_rows.append((event.episode_id, sf.stream, event.step, *loc, sf.shape))
            continue
        if kind is StepBatch:
            rows += _batch_rows(event, loc_iter)
            continue
        if kind is StreamFrames:  # located already: no pointer of the batch's
            e = event
            stream_rows += [
                (e.episode_id, e.stream, step, *loc, shape)
                for step, loc, shape in zip(e.steps, e.frames, e.shapes, strict=True)
            ]
            continue
        if rows:  # keep statement order: steps before this event go first
            conn.executemany(_INSERT_STEP, rows)
            rows = []
        _write_other(conn, event)
    if rows:
        conn.executemany(_INSERT_STEP, rows)
    if stream_rows:  # their streams rows came before them (StreamStarted precedes)
        conn.executemany(_INSERT_STREAM_FRAME, stream_rows)
    if observations:  # their step rows are in (inserted above, in this transaction)
        conn.executemany(_SET_OBSERVATION, observations)


def checkpoint_passive(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database without waiting for readers: a GUI holding a read
    snapshot cannot stall recording (SQLite truncates the WAL when the last connection
    closes)."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
