"""``StoreView``: what the functions below ``FrameStore`` need from a store.

``framestore.state`` and the write path take a store but sit below ``framestore.store``
(the store opens recorders; maintenance and the recorder share the writer lock and the
next ids). They name the store by this protocol instead of importing ``FrameStore``, so
no import, not even a type-only one, goes up to the store. ``FrameStore`` satisfies it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..disk.reader import SegmentReader

__all__ = ["StoreView"]


class StoreView(Protocol):
    """An open store as bookkeeping, merging and the ``Recorder`` use it."""

    root: Path
    """The store's directory."""
    readonly: bool
    """Whether the store was opened read-only."""

    @property
    def db_path(self) -> Path:
        """The path of the store's SQLite catalogue."""
        ...

    @property
    def catalog(self) -> Catalog:
        """The store's catalogue (``StoreClosed`` once the store is closed)."""
        ...

    @property
    def reader(self) -> SegmentReader:
        """The store's segment reader."""
        ...

    def transaction(self) -> AbstractContextManager[Catalog]:
        """Changes made through the yielded catalogue commit together or not at all."""
        ...
