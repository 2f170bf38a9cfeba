"""Schema migrations and opening a store's database."""

from __future__ import annotations

import sqlite3

import pytest
import sqlite_utils

import migrations
from telemetry.db import PROFILES, DurabilityWarning, open_db, schema_version
from telemetry.errors import InvalidInput, NotAStore, SchemaTooNew

TABLES = {"meta", "runs", "episodes", "steps", "segments"}


def _schema(db: sqlite_utils.Database) -> list[tuple]:
    return db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()


def test_apply_creates_schema_and_twice_is_noop(tmp_path):
    path = tmp_path / "framestore.db"
    with open_db(path) as db:
        assert TABLES <= set(db.table_names())
        assert schema_version(db) == len(migrations.known()) >= 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        before = _schema(db)
        assert migrations.apply(db) == []
        assert migrations.pending_names(db) == []
        assert _schema(db) == before
        assert db.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == len(
            migrations.known()
        )
    with open_db(path) as db:  # reopening is also a no-op
        assert _schema(db) == before


def test_steps_table_shape(tmp_path):
    with open_db(tmp_path / "framestore.db") as db:
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'steps'").fetchone()[0]
        assert "WITHOUT ROWID" in sql
        indexes = db.execute("PRAGMA index_list(steps)").fetchall()
        cols = [
            [r[2] for r in db.execute(f"PRAGMA index_info('{ix[1]}')")]
            for ix in indexes
            if not ix[1].startswith("sqlite_autoindex")
        ]
        assert ["frame_segment", "frame_offset"] in cols
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("INSERT INTO episodes (id, status) VALUES (1, 'bogus')")


def test_newer_schema_raises_schema_too_new(tmp_path):
    path = tmp_path / "framestore.db"
    with open_db(path) as db:
        db["_sqlite_migrations"].insert(
            {"migration_set": "framestore", "name": "m999_future", "applied_at": "2099"}
        )
    with pytest.raises(SchemaTooNew) as info:
        open_db(path)
    assert info.value.unknown == ["m999_future"]
    with pytest.raises(SchemaTooNew):
        open_db(path, readonly=True)
    # apply() itself refuses and reports, without touching the database.
    with sqlite_utils.Database(path) as db:
        assert migrations.apply(db) == ["m999_future"]


def test_not_a_sqlite_file(tmp_path):
    path = tmp_path / "framestore.db"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(NotAStore):
        open_db(path)
    with pytest.raises(NotAStore):
        open_db(path, readonly=True)


def test_missing_file_readonly(tmp_path):
    with pytest.raises(NotAStore) as info:
        open_db(tmp_path / "nope.db", readonly=True)
    assert isinstance(info.value, FileNotFoundError)
    assert not (tmp_path / "nope.db").exists()


def test_foreign_sqlite_database(tmp_path):
    path = tmp_path / "other.db"
    with sqlite_utils.Database(path) as db:
        db["dogs"].insert({"name": "Cleo"})
    with pytest.raises(NotAStore):
        open_db(path, readonly=True)
    with pytest.raises(NotAStore):
        open_db(path)
    with sqlite_utils.Database(path) as db:  # untouched
        assert db.table_names() == ["dogs"]


def test_readonly_reads_while_writer_open(tmp_path):
    path = tmp_path / "framestore.db"
    with open_db(path) as writer:
        writer.execute("INSERT INTO runs (id, env_id) VALUES (1, 'ALE/Pong-v5')")
        with open_db(path, readonly=True) as reader:
            assert reader.execute("SELECT env_id FROM runs").fetchall() == [("ALE/Pong-v5",)]
            with pytest.raises(sqlite3.OperationalError):
                reader.execute("INSERT INTO runs (id, env_id) VALUES (2, 'x')")


@pytest.mark.parametrize(("name", "level"), [("durable", 2), ("balanced", 1)])
def test_profiles_apply_pragmas(tmp_path, name, level):
    with open_db(tmp_path / "framestore.db", profile=name) as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == level
        assert db.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == PROFILES[name].busy_timeout_ms


def test_fast_profile_warns(tmp_path):
    with pytest.warns(DurabilityWarning, match="crash"):
        db = open_db(tmp_path / "framestore.db", profile="fast")
    with db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 0


def test_unknown_profile_lists_valid_ones(tmp_path):
    with pytest.raises(InvalidInput, match="durable, balanced, fast"):
        open_db(tmp_path / "framestore.db", profile="turbo")


def test_applied_and_pending_read_with_plain_sql_agree_with_sqlite_utils(tmp_path):
    """A read-only opening reads the applied steps with plain SQL (no sqlite-utils import,
    for ``framestore ls``): the same names, in the same order, as sqlite-utils' own
    registry gives, on a database part-way through its migrations and on a full one."""
    from telemetry.db import ReadOnlyDatabase

    assert migrations.MIGRATIONS_TABLE == sqlite_utils.Migrations.migrations_table
    with sqlite_utils.Database(memory=True) as empty:
        assert migrations.known() == [m.name for m in migrations.registry().pending(empty)]
    path = tmp_path / "framestore.db"
    with sqlite_utils.Database(path) as db:
        migrations.registry().apply(db, stop_before=migrations.known()[-1])
        assert migrations.applied(db) == [m.name for m in migrations.registry().applied(db)]
        assert migrations.applied(db) == migrations.known()[:-1]
        assert (
            migrations.pending_names(db)
            == [m.name for m in migrations.registry().pending(db)]
            == migrations.known()[-1:]
        )
    with open_db(path) as db:  # migrates the rest
        assert migrations.applied(db) == [m.name for m in migrations.registry().applied(db)]
    with open_db(path, readonly=True) as ro:
        assert isinstance(ro, ReadOnlyDatabase)
        assert migrations.applied(ro) == migrations.known()
        assert migrations.pending_names(ro) == []
