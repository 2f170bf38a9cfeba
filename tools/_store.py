"""Opening a store for a library function that takes a path or an open store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from framestore import FrameStore, InvalidInput

StoreArg = str | os.PathLike | FrameStore


@contextmanager
def opened(store_or_path: StoreArg, *, readonly: bool) -> Iterator[FrameStore]:
    """Yield a ``FrameStore``: the one given, or one opened (and closed) here."""
    if isinstance(store_or_path, FrameStore):
        if not readonly and store_or_path.readonly:
            raise InvalidInput("store is open read-only; this operation changes it")
        yield store_or_path
        return
    store = FrameStore.open(store_or_path, create=False, readonly=readonly)
    try:
        yield store
    finally:
        store.close()
