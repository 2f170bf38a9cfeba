"""The catalogue's connection: one SQLite database, one lock, transactions, and what every
query object shares (the schema's optional columns, tables loaded on first use)."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

from telemetry import schema_info

from ..errors import InvalidInput, StoreClosed
from ._validate import END_OF_EPISODE

__all__ = ["END_OF_EPISODE", "FETCH_ROWS", "Connection"]

#: Rows read from a cursor at a time by the iterating queries (a store can hold
#: millions of steps).
FETCH_ROWS = 10_000

# The tables a statement reads or writes (``FROM t``, ``JOIN t``, ``INTO t``...): a
# deferred table is loaded before the first statement that names it.
_TABLES_NAMED = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+(\w+)", re.IGNORECASE)


def _execute(conn: sqlite3.Connection, sql: str, params: tuple) -> sqlite3.Cursor:
    try:
        return conn.execute(sql, params)
    except OverflowError:
        # Callers check ids; this is the net under them: never a traceback for a number
        # SQLite cannot hold.
        raise InvalidInput("a number in the query does not fit a 64-bit integer") from None


class Connection:
    """One store's SQLite connection, shared by the catalogue's query objects. Every
    statement runs under one re-entrant lock (``lock``: the GUI and ``gc`` share a
    store's connection between threads); ``transaction()`` groups changes."""

    def __init__(self, db: sqlite_utils.Database, *, readonly: bool):
        self._database = db
        self.readonly = readonly
        self.lock = threading.RLock()
        self._closed = False
        self._deferred: dict[str, Callable[[], None]] = {}
        #: Whether per-episode totals were loaded (a published store's: ``Episodes`` and
        #: ``Stats`` then count from them, never from the steps table).
        self.has_totals = False
        #: Whether per-stream totals were loaded (a published store's: ``Streams.totals``
        #: then counts from them, never from steps or step_frames).
        self.has_stream_totals = False
        # A read-only catalogue cannot migrate: a store of an older schema is read as it
        # is, columns added by m002 read as their defaults.
        cols = {r[1] for r in db.conn.execute("PRAGMA table_info(episodes)").fetchall()}
        self.has_m002 = "stream_key" in cols
        # m003: streams other than render (older stores read as one render stream)
        self.has_m003 = bool(
            db.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'step_frames'"
            ).fetchone()
        )

    @property
    def has_m004(self) -> bool:
        """Whether ``steps`` has m004's ``observation`` column (read once)."""
        cached = self.__dict__.get("_has_m004")
        if cached is None:
            with self.lock:
                cols = {r[1] for r in self._conn().execute("PRAGMA table_info(steps)")}
            cached = self.__dict__["_has_m004"] = "observation" in cols
        return cached

    def m002(self, expr: str, default: str = "NULL") -> str:
        """``expr`` when the store has m002's columns, else ``default``."""
        return expr if self.has_m002 else default

    # ----------------------------------------------------------------- deferred tables
    def defer_table(self, table: str, load: Callable[[], None]) -> None:
        """Load ``table`` (a scratch catalogue's: a published store's steps) only when a
        statement first names it: ``load()`` fills it, in one transaction. Until then
        the table is empty, and no query can see it so: every statement is checked."""
        with self.lock:
            self._deferred[table] = load

    def _load_deferred(self, sql: str) -> None:
        """Run the loaders of the deferred tables ``sql`` names. A loader that fails is
        kept (its rows rolled back), so every later query fails the same way."""
        if not self._deferred:
            return
        for table in _TABLES_NAMED.findall(sql):
            load = self._deferred.pop(table, None)
            if load is None:
                continue
            try:
                with self.transaction():
                    load()
            except BaseException:
                self._deferred[table] = load
                raise

    def frames(self) -> str:
        """Every frame pointer as one relation (``episode_id, step, stream,
        frame_segment, frame_offset, frame_slot, frame_shape``): ``steps``' (stream 0)
        and, with m003, ``step_frames``' (the other streams)."""
        sql = (
            "SELECT episode_id, step, 0 AS stream, frame_segment, frame_offset, frame_slot, "
            "frame_shape FROM steps"
        )
        if self.has_m003:
            sql += (
                " UNION ALL SELECT episode_id, step, stream, frame_segment, frame_offset, "
                "frame_slot, frame_shape FROM step_frames"
            )
        return f"({sql})"

    # ----------------------------------------------------------------- statements
    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreClosed("catalogue is closed")
        return self._database.conn

    def rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self.lock:
            self._load_deferred(sql)
            return _execute(self._conn(), sql, tuple(params)).fetchall()

    def one(self, sql: str, params: Iterable[Any] = ()) -> tuple:
        with self.lock:
            self._load_deferred(sql)
            return _execute(self._conn(), sql, tuple(params)).fetchone()

    def dicts(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self.lock:
            self._load_deferred(sql)
            cur = _execute(self._conn(), sql, tuple(params))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def iter(self, sql: str, params: Iterable[Any] = ()) -> Iterator[tuple]:
        """Rows a batch at a time. The lock is held while iterating: consume promptly."""
        with self.lock:
            self._load_deferred(sql)
            cur = _execute(self._conn(), sql, tuple(params))
            while batch := cur.fetchmany(FETCH_ROWS):
                yield from batch

    def exec(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one change; returns the rows it changed. Call inside ``transaction``."""
        with self.lock:
            self._load_deferred(sql)
            return max(_execute(self._conn(), sql, tuple(params)).rowcount, 0)

    def insert(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one ``INSERT``; returns the new row's id."""
        with self.lock:
            self._load_deferred(sql)
            return int(self._conn().execute(sql, tuple(params)).lastrowid)

    def exec_many(self, sql: str, rows: Iterable[Iterable[Any]]) -> int:
        with self.lock:
            self._load_deferred(sql)
            try:
                cur = self._conn().executemany(sql, [tuple(r) for r in rows])
            except OverflowError:
                raise InvalidInput("a number does not fit a 64-bit integer") from None
            return max(cur.rowcount, 0)

    # ----------------------------------------------------------------- transactions, upkeep
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together or not at all (nested: a savepoint)."""
        with self.lock, self._database.atomic():
            yield

    @contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """Every query inside reads the database as it was at the first one (one read
        transaction; a recorder's later commits are not seen). Other threads sharing this
        catalogue wait until it ends."""
        with self.lock, self._database.atomic():
            yield

    def change_stamp(self) -> tuple[int, int]:
        """``(data_version, total_changes)``: moves whenever any connection (this one or
        another process's) changed the database; a pragma, not a table query. Lets a
        reader keep what it read until the catalogue changes."""
        with self.lock:
            conn = self._conn()
            (version,) = conn.execute("PRAGMA data_version").fetchone()
            return int(version), conn.total_changes

    def schema(self) -> dict[str, Any]:
        """``version`` (migrations applied), ``latest_migration``, ``pending_migrations``."""
        with self.lock:
            return schema_info(self._database)

    def checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it."""
        with self.lock:
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def compact_database(self) -> None:
        """``VACUUM`` and truncate the WAL: give free pages back to the file system."""
        with self.lock:
            self._database.vacuum()
            self.checkpoint()

    def close(self) -> None:
        with self.lock:
            if not self._closed:
                self._closed = True
                self._database.close()

    @property
    def closed(self) -> bool:
        return self._closed
