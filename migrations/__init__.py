"""The ``framestore`` migration set: the SQLite schema of a store, step by step.

Migrations are append-only: a released step is never edited or removed, new steps are
added at the end. sqlite-utils runs each step and its "applied" record in one
transaction, so a failed step stays pending and is safe to re-run.

This package sits below ``telemetry`` and must not import it; :func:`apply` reports
migrations it does not know instead of raising, and ``telemetry.db`` turns that into
``SchemaTooNew``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlite_utils import Database, Migrations

MIGRATION_SET = "framestore"
#: sqlite-utils' table of applied migrations (``Migrations.migrations_table``; a test
#: keeps the two equal). Read here with plain SQL so that a read-only opening
#: (``framestore ls``) needs no sqlite-utils: its import costs ~0.1 s of every start.
MIGRATIONS_TABLE = "_sqlite_migrations"


def m001_initial(db: Database) -> None:
    """Create meta, runs, episodes, steps and segments."""
    # Raw SQL because the schema needs CHECK constraints and a WITHOUT ROWID table,
    # which table.create() cannot express. sqlite-utils wraps this in db.atomic().
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute(
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            env_id TEXT NOT NULL,
            created REAL,
            ended REAL,
            preset TEXT,
            host_profile TEXT,
            durability TEXT,
            config TEXT,  -- JSON
            stats TEXT    -- JSON: observed queue depths, flush latencies
        )
        """
    )
    db.execute(
        """
        CREATE TABLE episodes (
            id INTEGER PRIMARY KEY,
            run_id INTEGER REFERENCES runs(id),
            idx INTEGER,
            seed INTEGER,
            started REAL,
            ended REAL,
            steps INTEGER DEFAULT 0,
            total_reward REAL DEFAULT 0,
            terminated INTEGER DEFAULT 0,
            truncated INTEGER DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'recording'
                CHECK (status IN ('recording', 'complete', 'interrupted', 'trimmed', 'deleted')),
            frames_dropped INTEGER DEFAULT 0
        )
        """
    )
    db.execute(
        """
        CREATE TABLE steps (
            episode_id INTEGER NOT NULL,
            step INTEGER NOT NULL,
            action TEXT,
            reward REAL,
            terminated INTEGER,
            truncated INTEGER,
            info TEXT,
            wall_time REAL,
            frame_segment INTEGER,
            frame_offset INTEGER,
            frame_slot INTEGER,
            frame_shape TEXT,
            PRIMARY KEY (episode_id, step)
        ) WITHOUT ROWID
        """
    )
    # gc and verify look steps up by where their frame lives.
    db.execute("CREATE INDEX steps_frame ON steps (frame_segment, frame_offset)")
    db.execute(
        """
        CREATE TABLE segments (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL
                CHECK (state IN ('active', 'sealed', 'compacting', 'obsolete')),
            bytes INTEGER DEFAULT 0,
            live_bytes INTEGER DEFAULT 0,
            created REAL
        )
        """
    )


def m002_vector_replay_merge(db: Database) -> None:
    """Columns for vector recording, replay and merge; the merge journal; the store id.

    - ``runs.env_spec``: JSON saying how to make the environment again (replay).
    - ``episodes.sub_env``: the index of the vector sub-environment that played it.
    - ``episodes.continues_episode``: the earlier episode of the same environment (or
      sub-environment) this one follows without a seed of its own (an autoreset, or a
      reset without a seed): replay runs that episode first.
    - ``episodes.reset_options``: JSON of the ``options`` passed to ``reset``.
    - ``episodes.stream_key``: the stream key of the episode's chunks when it is not the
      episode id (episodes merged from another store keep their chunks' keys).
    - ``segments.header_id``: the segment id a file's header names when it is not the
      file's own id (segments merged from another store keep their bytes).
    - ``merges``: one row per source store merged in; ``state`` is ``copying`` until
      the source's rows commit (then ``done``), so an interrupted merge is found and
      undone by ``recover`` or finished by running ``merge`` again.
    - ``meta.store_id``: a random id naming this store as a merge source.
    """
    db.execute("ALTER TABLE runs ADD COLUMN env_spec TEXT")
    for column in ("sub_env INTEGER", "continues_episode INTEGER", "reset_options TEXT",
                   "stream_key INTEGER"):  # fmt: skip
        db.execute(f"ALTER TABLE episodes ADD COLUMN {column}")
    db.execute("ALTER TABLE segments ADD COLUMN header_id INTEGER")
    db.execute(
        """
        CREATE TABLE merges (
            id INTEGER PRIMARY KEY,
            source_id TEXT NOT NULL,
            source_path TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            mode TEXT NOT NULL CHECK (mode IN ('copy', 'move')),
            state TEXT NOT NULL CHECK (state IN ('copying', 'done')),
            segments TEXT NOT NULL,  -- JSON [[new segment id, source segment id], ...]
            ids TEXT,                -- JSON {"runs": {src: new}, "episodes": {src: new}}
            started REAL,
            finished REAL,
            runs INTEGER DEFAULT 0,
            episodes INTEGER DEFAULT 0,
            steps INTEGER DEFAULT 0
        )
        """
    )
    db.execute("CREATE INDEX merges_source ON merges (source_id)")
    import uuid

    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)", [uuid.uuid4().hex])


def m003_streams(db: Database) -> None:
    """Named frame streams per step (issue 20; docs/FORMAT.md, "Several streams").

    Stream 0, ``render``, stays in ``steps.frame_*``. Every other stream an episode
    records gets a ``streams`` row, and each of its stored frames a ``step_frames`` row:

    - ``streams``: ``idx`` is the CHUNK stream index (``>= 1``) the episode's ``EPISODE``
      record lists the stream at; ``name``; ``dtype`` (``uint8``); ``shape``: its first
      frame's (``"84x84"``); ``shared_with``: the stream (``0``) whose frame a step of this
      stream points at when both frames are equal (stored once), NULL when never.
    - ``step_frames``: ``(episode_id, stream, step)`` with the frame pointer, as in
      ``steps`` (a step whose frame equals its ``render`` frame points at that frame).
    """
    db.execute(
        """
        CREATE TABLE streams (
            episode_id INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            name TEXT NOT NULL,
            dtype TEXT NOT NULL DEFAULT 'uint8',
            shape TEXT,
            shared_with INTEGER,
            PRIMARY KEY (episode_id, idx)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE UNIQUE INDEX streams_name ON streams (episode_id, name)")
    db.execute(
        """
        CREATE TABLE step_frames (
            episode_id INTEGER NOT NULL,
            stream INTEGER NOT NULL,
            step INTEGER NOT NULL,
            frame_segment INTEGER,
            frame_offset INTEGER,
            frame_slot INTEGER,
            frame_shape TEXT,
            PRIMARY KEY (episode_id, stream, step)
        ) WITHOUT ROWID
        """
    )
    # gc, verify and merge look stream frames up by where they live, as steps'.
    db.execute("CREATE INDEX step_frames_frame ON step_frames (frame_segment, frame_offset)")


def m004_observations(db: Database) -> None:
    """``steps.observation``: a step's non-image observation entries (small arrays, a
    dict space's vectors) as typed binary (docs/FORMAT.md, "Observations"); NULL when
    none was recorded. Image observations are frame streams (m003)."""
    db.execute("ALTER TABLE steps ADD COLUMN observation BLOB")


#: Every step, in order. Append-only: a released step is never edited or removed.
STEPS = (m001_initial, m002_vector_replay_merge, m003_streams, m004_observations)
_KNOWN = tuple(step.__name__ for step in STEPS)


@functools.cache
def registry() -> Migrations:
    """The ``sqlite_utils.Migrations("framestore")`` set holding :data:`STEPS`.

    sqlite-utils is imported here, on the first migration, not with this package; the
    caller (``telemetry.db``) has imported it already, without its optional pandas."""
    from sqlite_utils import Migrations

    migrations = Migrations(MIGRATION_SET)
    for step in STEPS:
        migrations(name=step.__name__)(step)
    return migrations


def known() -> list[str]:
    """Return the names of the migrations this code knows, in order."""
    return list(_KNOWN)


def applied(db: Any) -> list[str]:
    """Return the names of the ``framestore`` migrations applied to ``db``, in order (as
    ``registry().applied(db)`` does). ``db`` is anything with ``execute(sql, params)``: a
    ``sqlite_utils.Database`` or a read-only database of ``telemetry.db``."""
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [MIGRATIONS_TABLE]
    ).fetchone()
    if not exists:
        return []
    rows = db.execute(
        f"SELECT name FROM [{MIGRATIONS_TABLE}] WHERE migration_set = ? ORDER BY rowid",
        [MIGRATION_SET],
    ).fetchall()
    return [name for (name,) in rows]


def unknown_applied(db: Any) -> list[str]:
    """Return applied ``framestore`` migrations this code does not know (a newer schema)."""
    names = set(_KNOWN)
    return [name for name in applied(db) if name not in names]


def pending_names(db: Any) -> list[str]:
    """Return the known ``framestore`` migrations not yet applied to ``db``, in order."""
    done = set(applied(db))
    return [name for name in _KNOWN if name not in done]


def apply(db: Database) -> list[str]:
    """Apply pending migrations unless the database is newer than this code.

    Args:
        db: An open, writable database.

    Returns:
        The applied migrations this code does not know. When the list is not empty the
        database was written by a newer framestore and nothing was applied; the caller
        raises ``telemetry.errors.SchemaTooNew``.
    """
    unknown = unknown_applied(db)
    if unknown:
        return unknown
    registry().apply(db)
    return []


__all__ = [
    "MIGRATIONS_TABLE",
    "MIGRATION_SET",
    "STEPS",
    "applied",
    "apply",
    "known",
    "pending_names",
    "registry",
    "unknown_applied",
]
