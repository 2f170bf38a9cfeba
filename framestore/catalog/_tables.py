"""Catalogue tables as plain rows: what ``publish`` copies out as Parquet, and what a
reader of a published store loads back into a scratch database with the same schema."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .._format.published import EPISODE_TOTALS_COLUMNS, STREAM_TOTALS_COLUMNS
from ._base import Connection

#: The tables a published store carries (``meta`` and the migrations' own table are
#: rebuilt by the migrations on the reader's side).
PUBLISHED_TABLES = ("runs", "episodes", "steps", "segments")
#: Tables published when the source has them (m003's streams other than render); a
#: published store without them reads as one render stream.
OPTIONAL_TABLES = ("streams", "step_frames")


_EPISODE_TOTALS = (
    "episode_id INTEGER PRIMARY KEY, steps INTEGER NOT NULL, frames INTEGER NOT NULL, "
    "raw_frame_bytes INTEGER NOT NULL, chunk_bytes INTEGER"
)
_STREAM_TOTALS = (
    "episode_id INTEGER NOT NULL, stream INTEGER NOT NULL, frames INTEGER NOT NULL, "
    "raw_frame_bytes INTEGER NOT NULL, PRIMARY KEY (episode_id, stream)"
)


def _check_table(table: str) -> None:
    # Table names go into SQL text: only the known ones, never one read from a file.
    if table not in PUBLISHED_TABLES and table not in OPTIONAL_TABLES:
        raise ValueError(f"not a published catalogue table: {table!r}")


class Tables:
    """Catalogue tables as plain rows: what ``publish`` copies out, and loading them (and
    a published store's totals) into a scratch catalogue."""

    def __init__(self, db: Connection):
        self._db = db

    def columns(self, table: str) -> list[tuple[str, str]]:
        """``(name, declared type)`` of a table's columns, in order (types upper case:
        ``INTEGER``, ``REAL``, ``TEXT``)."""
        _check_table(table)
        return [(r[1], str(r[2]).upper()) for r in self._db.rows(f"PRAGMA table_info({table})")]

    def rows(self, table: str) -> list[tuple]:
        """Every row of a small table (``runs``, ``episodes``, ``segments``), columns in
        ``columns`` order, by id."""
        _check_table(table)
        if table == "steps":
            raise ValueError("steps are read per episode: use episode_step_rows")
        return self._db.rows(f"SELECT * FROM {table} ORDER BY id")

    def episode_step_rows(self, episode_id: int) -> Iterator[tuple]:
        """The raw ``steps`` rows of one episode in step order (values as stored: action
        and info as JSON text), a batch at a time."""
        yield from self._db.iter(
            "SELECT * FROM steps WHERE episode_id = ? ORDER BY step", [int(episode_id)]
        )

    def episode_rows(self, table: str, episode_id: int) -> list[tuple]:
        """The raw rows of one episode in ``streams`` or ``step_frames`` (empty in a
        store without them), in key order."""
        if table not in OPTIONAL_TABLES:
            raise ValueError(f"not a per-episode stream table: {table!r}")
        if not self._db.has_m003:
            return []
        order = "idx" if table == "streams" else "stream, step"
        return self._db.rows(
            f"SELECT * FROM {table} WHERE episode_id = ? ORDER BY {order}", [int(episode_id)]
        )

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """Insert rows into a table of this (scratch) catalogue. ``columns`` must be
        columns of the table; call inside ``transaction()``. Returns the rows inserted."""
        known = {name for name, _type in self.columns(table)}
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise ValueError(f"table {table} has no column {unknown[0]!r}")
        return self._insert(table, columns, rows)

    def add_episode_totals(self, rows: Iterable[Sequence[int]]) -> int:
        """Per-episode totals into this (scratch) catalogue: rows of
        ``EPISODE_TOTALS_COLUMNS`` (episode id, steps, frames, raw frame bytes, chunk bytes
        or None when unknown), one per episode (a second row for one is refused). From
        then on ``Episodes`` and ``Stats`` count from them. Returns the rows inserted."""
        with self._db.lock:
            if not self._db.has_totals:
                self._db.exec(f"CREATE TABLE IF NOT EXISTS episode_totals ({_EPISODE_TOTALS})")
                self._db.has_totals = True
            return self._insert("episode_totals", EPISODE_TOTALS_COLUMNS, rows)

    def add_stream_totals(self, rows: Iterable[Sequence[int]]) -> int:
        """Per-episode, per-stream totals into this (scratch) catalogue: rows of
        ``STREAM_TOTALS_COLUMNS`` (episode id, stream index, frames, raw frame bytes), one
        per (episode, stream) (a second is refused). From then on ``Streams.totals``
        counts from them. Returns the rows inserted."""
        with self._db.lock:
            if not self._db.has_stream_totals:
                self._db.exec(f"CREATE TABLE IF NOT EXISTS stream_totals ({_STREAM_TOTALS})")
                self._db.has_stream_totals = True
            return self._insert("stream_totals", STREAM_TOTALS_COLUMNS, rows)

    def _insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        names = ", ".join(columns)
        marks = ", ".join("?" * len(columns))
        return self._db.exec_many(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
