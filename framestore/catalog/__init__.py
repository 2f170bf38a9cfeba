"""The catalogue: every SQL statement framestore runs against ``framestore.db``.

Only the telemetry sink's insert path and ``migrations`` write SQL elsewhere. Tools and
the GUI reach it as ``FrameStore.catalog`` and call typed methods named for what they
mean; they never see a connection.
"""

from __future__ import annotations

from ._base import END_OF_EPISODE, CatalogBase
from ._checks import CheckQueries, ValueProblem
from ._episodes import EPISODE_STATUSES, EpisodeQueries, format_shape, parse_shape
from ._merges import MergeQueries, MergeRecord
from ._meta import COMPACTION_OUTPUTS, MERGED_TAGS, PENDING_LOSS, MetaQueries
from ._pointers import SEGMENT_STATES, PointerQueries, PointerRow
from ._recovery import RECOVERED_ENV_ID, RECOVERED_INFO, RecoveryQueries
from ._stats import CatalogStats, EpisodeRowCount, StatsQueries
from ._streams import StreamPointer, StreamQueries
from ._tables import OPTIONAL_TABLES, PUBLISHED_TABLES, TableQueries
from ._validate import MAX_SQLITE_INT, check_id, check_seed, clamp_step

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
    "EpisodeRowCount",
    "MergeRecord",
    "PointerRow",
    "StreamPointer",
    "ValueProblem",
    "check_id",
    "check_seed",
    "clamp_step",
    "format_shape",
    "parse_shape",
]


class Catalog(
    EpisodeQueries,
    PointerQueries,
    StreamQueries,
    RecoveryQueries,
    StatsQueries,
    MergeQueries,
    TableQueries,
    MetaQueries,
    CheckQueries,
    CatalogBase,
):
    """A store's catalogue (one SQLite connection). Thread-safe: every query runs under
    one lock; ``transaction()`` groups changes."""
