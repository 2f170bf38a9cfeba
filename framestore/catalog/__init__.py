"""The catalogue: every SQL statement framestore runs against ``framestore.db``.

Only the telemetry sink's insert path and ``migrations`` write SQL elsewhere. Tools and
the GUI reach it as ``FrameStore.catalog`` and call typed methods named for what they
mean; they never see a connection. (Being turned from mixins into query objects over
one connection, one job at a time.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from telemetry import open_scratch_db

from ._base import END_OF_EPISODE, Connection
from ._checks import Checks, ValueProblem
from ._episodes import EPISODE_STATUSES, Episodes, format_shape, parse_shape
from ._merges import MergeRecord, Merges
from ._meta import COMPACTION_OUTPUTS, PENDING_LOSS, Meta
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
    "Catalog",
    "CatalogStats",
    "Checks",
    "Connection",
    "END_OF_EPISODE",
    "EPISODE_STATUSES",
    "EpisodeRowCount",
    "Episodes",
    "MAX_SQLITE_INT",
    "MergeRecord",
    "Merges",
    "Meta",
    "OPTIONAL_TABLES",
    "PENDING_LOSS",
    "PUBLISHED_TABLES",
    "PointerRow",
    "Pointers",
    "RECOVERED_ENV_ID",
    "RECOVERED_INFO",
    "Recovery",
    "SEGMENT_STATES",
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


class Catalog(Connection):
    """A store's catalogue (one SQLite connection). Thread-safe: every query runs under
    one lock; ``transaction()`` groups changes."""

    def __init__(self, db: sqlite_utils.Database, *, readonly: bool):
        super().__init__(db, readonly=readonly)
        self.episodes = Episodes(self)
        self.streams = Streams(self)
        self.segments = Segments(self)
        self.pointers = Pointers(self)
        self.stats = Stats(self)
        self.meta = Meta(self)
        self.recovery = Recovery(self)
        self.merges = Merges(self)
        self.tables = Tables(self)
        self.checks = Checks(self)

    @classmethod
    def scratch(cls) -> Catalog:
        """A new, empty catalogue with the store schema in a private temporary database
        (deleted when closed), to load tables into."""
        return cls(open_scratch_db(), readonly=False)
