"""Opening a store's SQLite database: storage profiles, WAL, schema checks.

Every connection to ``framestore.db`` goes through :func:`open_db`, so all of them agree
on WAL mode and a busy timeout: the sink thread writes while GUI and CLI readers read.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import migrations as _migrations

from .errors import FrameStoreError, InvalidInput, NotAStore, SchemaTooNew, StoreIOError

if TYPE_CHECKING:
    import sqlite_utils

#: Below this many free bytes, an I/O failure opening the database is reported as a
#: full disk (SQLite says "disk I/O error" when it cannot size its shared-memory file).
_LOW_SPACE = 1 << 20


class DurabilityWarning(UserWarning):
    """A storage profile was chosen that can lose recently recorded steps on a crash."""


@dataclass(frozen=True, slots=True)
class StorageProfile:
    """SQLite settings that trade durability for write speed.

    Attributes:
        name: Profile name, as stored in ``runs.durability``.
        synchronous: ``PRAGMA synchronous`` value: ``FULL``, ``NORMAL`` or ``OFF``.
        cache_size_kib: Page cache per connection, in KiB.
        wal_autocheckpoint: Pages in the WAL before SQLite checkpoints on commit.
        busy_timeout_ms: How long a connection waits for a lock before failing; readers
            need it while the sink commits.
        description: One line for ``framestore presets`` and the GUI.
    """

    name: str
    synchronous: str
    cache_size_kib: int
    wal_autocheckpoint: int
    busy_timeout_ms: int
    description: str

    @property
    def may_lose_tail(self) -> bool:
        """True when a crash of the OS or power can lose committed steps."""
        return self.synchronous == "OFF"

    def pragmas(self) -> list[str]:
        """Return the PRAGMA statements that apply this profile to a connection."""
        return [
            f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}",
            f"PRAGMA synchronous={self.synchronous}",
            # Negative means KiB rather than pages, independent of the page size.
            f"PRAGMA cache_size={-int(self.cache_size_kib)}",
            "PRAGMA temp_store=MEMORY",
            f"PRAGMA wal_autocheckpoint={int(self.wal_autocheckpoint)}",
        ]


PROFILES: dict[str, StorageProfile] = {
    "durable": StorageProfile(
        name="durable",
        synchronous="FULL",
        cache_size_kib=16 * 1024,
        wal_autocheckpoint=1000,
        busy_timeout_ms=5000,
        description="fsync on every commit; survives power loss with nothing lost",
    ),
    "balanced": StorageProfile(
        name="balanced",
        synchronous="NORMAL",
        cache_size_kib=32 * 1024,
        wal_autocheckpoint=1000,
        busy_timeout_ms=5000,
        description="WAL with fsync at checkpoints; a power loss may lose the last commits",
    ),
    "fast": StorageProfile(
        name="fast",
        synchronous="OFF",
        cache_size_kib=64 * 1024,
        wal_autocheckpoint=4000,
        busy_timeout_ms=5000,
        description="no fsync; an OS crash or power loss may lose or damage the tail",
    ),
}

DEFAULT_PROFILE = "balanced"


def get_profile(profile: str | StorageProfile) -> StorageProfile:
    """Look a storage profile up by name.

    Args:
        profile: A name in :data:`PROFILES` or a :class:`StorageProfile`.

    Returns:
        The profile.

    Raises:
        InvalidInput: The name is not a known profile.
    """
    if isinstance(profile, StorageProfile):
        return profile
    try:
        return PROFILES[profile]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"unknown storage profile {profile!r}; valid profiles: {', '.join(PROFILES)}"
        ) from None


class ReadOnlyDatabase:
    """A store's database opened read-only, on a plain ``sqlite3`` connection.

    Reading needs none of sqlite-utils, whose import (with its dependencies) costs about
    0.1 s of every start of ``framestore ls`` or ``info``; this gives the part of
    ``sqlite_utils.Database`` that reading uses: ``conn``, ``execute``, ``atomic`` (a
    read transaction, nested ones as savepoints, as sqlite-utils does) and ``close``.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> sqlite3.Cursor:
        """Run one statement (the connection is ``mode=ro``: writes fail)."""
        return self.conn.execute(sql, () if parameters is None else parameters)

    @contextmanager
    def atomic(self) -> Iterator[ReadOnlyDatabase]:
        """One read transaction: every query inside sees the database as it was at the
        first one."""
        if self.conn.in_transaction:
            self.conn.execute("SAVEPOINT framestore_read")
            try:
                yield self
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("RELEASE SAVEPOINT framestore_read")
            return
        self.conn.execute("BEGIN")
        try:
            yield self
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")  # nothing to keep: ends the snapshot

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> ReadOnlyDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def warn_if_lossy(profile: StorageProfile, stacklevel: int = 2) -> None:
    """Warn (:class:`DurabilityWarning`) when ``profile`` can lose the tail on a crash."""
    if profile.may_lose_tail:
        warnings.warn(
            f"storage profile {profile.name!r} sets synchronous=OFF: an OS crash or power "
            "loss may lose the last recorded steps; use 'balanced' or 'durable' to keep them",
            DurabilityWarning,
            stacklevel=stacklevel + 1,
        )


def open_db(
    path: str | os.PathLike[str],
    *,
    profile: str | StorageProfile = DEFAULT_PROFILE,
    readonly: bool = False,
) -> sqlite_utils.Database | ReadOnlyDatabase:
    """Open (and unless ``readonly``, create or migrate) a store's database.

    The connection is made with ``check_same_thread=False`` so that it can be closed or
    handed over by another thread; the caller still uses it from one thread at a time.

    Args:
        path: Path of ``framestore.db``.
        profile: Storage profile name (see :data:`PROFILES`) or object.
        readonly: Open with ``mode=ro``: never creates, migrates or writes.

    Returns:
        The open database; close it with ``db.close()``. Read-only: a
        :class:`ReadOnlyDatabase` (no sqlite-utils is imported for it).

    Raises:
        InvalidInput: Unknown profile.
        NotAStore: ``readonly`` and the file is missing; the file is not a SQLite
            database; or it is a SQLite database without framestore tables (read-only),
            or with other tables (read-write: framestore never adds tables to a foreign
            database).
        SchemaTooNew: The database was migrated by a newer framestore.
    """
    prof = get_profile(profile)
    warn_if_lossy(prof)
    return _open(path, prof, readonly=readonly)


def open_scratch_db() -> sqlite_utils.Database:
    """A new, empty store database with every migration applied, in a private temporary
    file that SQLite deletes when the connection closes (its pages spill to disk, so a
    large catalogue does not have to fit in memory). Used for catalogues that arrive as
    something other than SQLite (a published store's Parquet tables).

    Returns:
        The open database; close it with ``db.close()``.
    """
    from ._sqlite import sqlite_utils

    # An empty file name is SQLite's private temporary database: no path, no cleanup.
    conn = sqlite3.connect("", check_same_thread=False)
    try:
        db = sqlite_utils.Database(conn)
        for pragma in PROFILES["fast"].pragmas():  # nothing here needs to survive a crash
            db.execute(pragma)
        _migrations.apply(db)
    except BaseException:
        conn.close()
        raise
    return db


def schema_version(db: sqlite_utils.Database | ReadOnlyDatabase) -> int:
    """Return the number of ``framestore`` migrations applied to ``db`` (0 if none).

    Migrations are append-only, so the count orders schema versions.
    """
    return len(_migrations.applied(db))


def schema_info(db: sqlite_utils.Database | ReadOnlyDatabase) -> dict[str, object]:
    """The schema of a store's database: ``version`` (migrations applied, see
    :func:`schema_version`), ``latest_migration`` and ``pending_migrations``."""
    applied = _migrations.applied(db)
    return {
        "version": len(applied),
        "latest_migration": applied[-1] if applied else None,
        "pending_migrations": _migrations.pending_names(db),
    }


def _open(
    path: str | os.PathLike[str], profile: StorageProfile, *, readonly: bool
) -> sqlite_utils.Database | ReadOnlyDatabase:
    """Open without validating the profile or warning (used by the sink's own thread)."""
    p = pathlib.Path(path)
    if readonly and not p.is_file():
        raise NotAStore(str(path), "no such database file")
    try:
        if readonly:
            conn = sqlite3.connect(
                p.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False
            )
        else:
            conn = sqlite3.connect(str(p), check_same_thread=False)
    except sqlite3.Error as exc:
        raise _open_error(p, exc, f"cannot open database: {exc}") from exc
    try:
        if readonly:
            db = ReadOnlyDatabase(conn)
        else:
            from ._sqlite import sqlite_utils

            db = sqlite_utils.Database(conn)
        _configure(db, profile, readonly=readonly, path=str(path))
        _check_and_migrate(db, str(path), readonly=readonly)
    except sqlite3.DatabaseError as exc:
        # A damaged page under the migrations table: as unreadable as a bad header.
        conn.close()
        raise _open_error(p, exc, f"cannot read database: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return db


def _configure(
    db: sqlite_utils.Database | ReadOnlyDatabase,
    profile: StorageProfile,
    *,
    readonly: bool,
    path: str,
):
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        for pragma in profile.pragmas():
            db.execute(pragma)
        if not readonly:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise NotAStore(path, f"cannot switch the database to WAL (journal_mode={mode})")
        else:
            # Reading the schema is what detects "file is not a database".
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise _open_error(pathlib.Path(path), exc, f"not a SQLite database ({exc})") from exc


def _open_error(path: pathlib.Path, exc: sqlite3.Error, otherwise: str) -> FrameStoreError:
    """What a failure to open the database means: no space left or an I/O error (the
    store may be fine: ``StoreIOError``), else a file that is not a store database."""
    code = exc.sqlite_errorcode & 0xFF if isinstance(exc.sqlite_errorcode, int) else None
    io_codes = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN)
    free = _free_bytes(path.parent)
    if code == sqlite3.SQLITE_FULL or (code in io_codes and free is not None and free < _LOW_SPACE):
        return StoreIOError(
            str(path),
            f"no space left on the device ({free} bytes free): cannot open the database; "
            "free some space and try again",
        )
    if code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL) or (
        code == sqlite3.SQLITE_CANTOPEN and path.exists()
    ):
        return StoreIOError(str(path), f"cannot open the database: {exc}")
    return NotAStore(str(path), otherwise)


def _free_bytes(directory: pathlib.Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _check_and_migrate(
    db: sqlite_utils.Database | ReadOnlyDatabase, path: str, *, readonly: bool
) -> None:
    applied = _migrations.applied(db)
    unknown = _migrations.unknown_applied(db)
    if unknown:
        raise SchemaTooNew(path, unknown)
    if readonly:
        if not applied:
            raise NotAStore(path, "SQLite database without framestore tables")
        # A read-only reader cannot upgrade: an older schema is read as it is (the
        # catalogue reads columns added by later steps only where they exist).
        return
    if not applied:
        foreign = [
            name
            for name in db.table_names()
            if not name.startswith("sqlite_") and name != _migrations.MIGRATIONS_TABLE
        ]
        if foreign:
            raise NotAStore(
                path,
                f"SQLite database with other tables ({', '.join(sorted(foreign)[:5])}); "
                "refusing to turn it into a store",
            )
    unknown = _migrations.apply(db)
    if unknown:  # a newer framestore migrated it between our check and apply
        raise SchemaTooNew(path, unknown)


__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "DurabilityWarning",
    "ReadOnlyDatabase",
    "StorageProfile",
    "get_profile",
    "open_db",
    "open_scratch_db",
    "schema_info",
    "schema_version",
    "warn_if_lossy",
]
