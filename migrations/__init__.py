"""The ``framestore`` migration set: the SQLite schema of a store, step by step.

Migrations are append-only: a released step is never edited or removed, new steps are
added at the end. sqlite-utils runs each step and its "applied" record in one
transaction, so a failed step stays pending and is safe to re-run.

This package sits below ``telemetry`` and must not import it; :func:`apply` reports
migrations it does not know instead of raising, and ``telemetry.db`` turns that into
``SchemaTooNew``.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

MIGRATION_SET = "framestore"

migrations = Migrations(MIGRATION_SET)


@migrations()
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


def _known_names() -> tuple[str, ...]:
    # Every step is pending on an empty database, which gives the registered names
    # through the public API without touching Migrations internals.
    scratch = Database(memory=True)
    try:
        return tuple(m.name for m in migrations.pending(scratch))
    finally:
        scratch.close()


_KNOWN = _known_names()


def known() -> list[str]:
    """Return the names of the migrations this code knows, in order."""
    return list(_KNOWN)


def applied(db: Database) -> list[str]:
    """Return the names of the ``framestore`` migrations applied to ``db``, in order."""
    return [m.name for m in migrations.applied(db)]


def unknown_applied(db: Database) -> list[str]:
    """Return applied ``framestore`` migrations this code does not know (a newer schema)."""
    names = set(_KNOWN)
    return [name for name in applied(db) if name not in names]


def pending_names(db: Database) -> list[str]:
    """Return the known ``framestore`` migrations not yet applied to ``db``, in order."""
    return [m.name for m in migrations.pending(db)]


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
    migrations.apply(db)
    return []


__all__ = [
    "MIGRATION_SET",
    "applied",
    "apply",
    "known",
    "migrations",
    "pending_names",
    "unknown_applied",
]
