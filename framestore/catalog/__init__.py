"""The catalogue: every SQL statement framestore runs against ``framestore.db``.

Only the telemetry sink's insert path and ``migrations`` write SQL elsewhere. Tools and
the GUI reach it as ``FrameStore.catalog`` and call typed methods named for what they
mean; they never see a connection.
"""

from __future__ import annotations

from ._base import END_OF_EPISODE, CatalogBase
from ._episodes import EpisodeQueries, format_shape, parse_shape
from ._merges import MergeQueries, MergeRecord
from ._pointers import SEGMENT_STATES, PointerQueries, PointerRow
from ._recovery import MAX_SQLITE_INT, RECOVERED_ENV_ID, RECOVERED_INFO, RecoveryQueries
from ._stats import CatalogStats, EpisodeRowCount, StatsQueries
from ._tables import PUBLISHED_TABLES, TableQueries

__all__ = [
    "END_OF_EPISODE",
    "MAX_SQLITE_INT",
    "PUBLISHED_TABLES",
    "RECOVERED_ENV_ID",
    "RECOVERED_INFO",
    "SEGMENT_STATES",
    "Catalog",
    "CatalogStats",
    "EpisodeRowCount",
    "MergeRecord",
    "PointerRow",
    "format_shape",
    "parse_shape",
]


class Catalog(
    EpisodeQueries,
    PointerQueries,
    RecoveryQueries,
    StatsQueries,
    MergeQueries,
    TableQueries,
    CatalogBase,
):
    """A store's catalogue (one SQLite connection). Thread-safe: every query runs under
    one lock; ``transaction()`` groups changes."""
