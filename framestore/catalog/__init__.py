"""The catalogue: every SQL statement framestore runs against ``framestore.db``.

Only the telemetry sink's insert path and ``migrations`` write SQL elsewhere. Tools and
the GUI reach it as ``FrameStore.catalog`` and call typed methods named for what they
mean, grouped in small query objects over one shared ``Connection``:
``store.catalog.episodes.statuses()``, ``store.catalog.segments.states()``. Each query
object is a plain class that takes the connection (and the query objects it uses):
``episodes``, ``streams``, ``segments``, ``pointers``, ``stats``, ``meta``, ``recovery``,
``merges``, ``tables``, ``checks`` (docs/ARCHITECTURE.md, "The catalogue's query
objects"). ``_framepointers`` keeps recently read episodes' frame pointers as columns.

May import: ``framestore.disk`` (segment paths), the vocabulary modules
(``framestore.errors``, ``types``, ``_format``, ...) and telemetry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from telemetry import open_scratch_db

from ._base import END_OF_EPISODE, Connection
from ._checks import Checks, ValueProblem
from ._episodes import EPISODE_STATUSES, Episodes, format_shape, parse_shape
from ._merges import MergeRecord, Merges
from ._meta import COMPACTION_OUTPUTS, MERGED_TAGS, PENDING_LOSS, Meta
from ._pointers import SEGMENT_STATES, PointerRow, Pointers, Segments
from ._recovery import RECOVERED_ENV_ID, RECOVERED_INFO, Recovery
from ._stats import CatalogStats, EpisodeRowCount, Stats
from ._streams import StreamPointer, Streams
from ._tables import OPTIONAL_TABLES, PUBLISHED_TABLES, Tables
from ._validate import MAX_SQLITE_INT, check_id, check_seed, clamp_step

if TYPE_CHECKING:
    import sqlite_utils

__all__ = [
    "COMPACTION_OUTPUTS",
    "END_OF_EPISODE",
    "EPISODE_STATUSES",
    "MERGED_TAGS",
    "PENDING_LOSS",
    "MAX_SQLITE_INT",
    "OPTIONAL_TABLES",
    "PUBLISHED_TABLES",
    "RECOVERED_ENV_ID",
    "RECOVERED_INFO",
    "SEGMENT_STATES",
    "Catalog",
    "CatalogStats",
    "Checks",
    "Connection",
    "Episodes",
    "EpisodeRowCount",
    "Meta",
    "MergeRecord",
    "Merges",
    "PointerRow",
    "Pointers",
    "Recovery",
    "Segments",
    "Stats",
    "StreamPointer",
    "Streams",
    "Tables",
    "ValueProblem",
    "check_id",
    "check_seed",
    "clamp_step",
    "format_shape",
    "parse_shape",
]


class Catalog:
    """A store's catalogue: one SQLite connection (``connection``: transactions, read
    snapshots, upkeep, closing; thread-safe, every statement under one lock) and the
    query objects over it, one per job."""

    def __init__(self, db: sqlite_utils.Database, *, readonly: bool):
        self.connection = Connection(db, readonly=readonly)
        #: Runs, episodes and their steps; episodes marked deleted.
        self.episodes = Episodes(self.connection)
        #: Frame streams other than render, observations, per-stream totals.
        self.streams = Streams(self.connection)
        #: The segments table: each segment's path and state.
        self.segments = Segments(self.connection)
        #: Frame pointers: which chunks are referenced; moving and clearing them.
        self.pointers = Pointers(self.connection)
        #: Counts over the whole catalogue; checks of a published store's totals.
        self.stats = Stats(self.connection)
        #: The meta table: the store's id and facts that must survive a crash.
        self.meta = Meta(self.connection)
        #: Rows rebuilt by ``recover``; recordings a stopped writer left open.
        self.recovery = Recovery(self.connection)
        #: The merge journal; a source's rows read and written by ``merge``.
        self.merges = Merges(self.connection)
        #: Whole tables as plain rows (``publish``; a published store's scratch copy).
        self.tables = Tables(self.connection)
        #: ``verify``'s checks of the database itself.
        self.checks = Checks(self.connection)

    @classmethod
    def scratch(cls) -> Catalog:
        """A new, empty catalogue with the store schema in a private temporary database
        (deleted when closed), to load tables into."""
        return cls(open_scratch_db(), readonly=False)
