"""The ``meta`` table: small key/value facts a store keeps about itself, its id among them.

Values are JSON text (the store id: plain text, written by the migrations). Used for what must survive a crash between two commands: the
loss a ``recover`` found and has not reported yet, the segments a ``gc`` is writing.
"""

from __future__ import annotations

import json
from typing import Any

from ._base import Connection
from ._validate import Cell

#: ``{episode id: frames lost}`` found by a recover that may not have reported it yet.
PENDING_LOSS = "recover.pending_loss"
#: Segment ids a compaction is writing (its ``.partial`` files and their renamed copies,
#: until the transaction that points rows at them commits).
COMPACTION_OUTPUTS = "compaction.outputs"
#: The store tags of the segments merged in (sorted ints): ``verify`` accepts a merged
#: segment's tag only when it is listed. Absent in stores merged before 0.3.x.
MERGED_TAGS = "merge.store_tags"


class Meta:
    """The ``meta`` table: the store's id and facts that must survive a crash."""

    def __init__(self, db: Connection):
        self._db = db

    def store_id(self) -> str | None:
        """The store's random id (``meta.store_id``); None for a store of an older schema
        opened read-only."""
        row = self._db.one("SELECT value FROM meta WHERE key = 'store_id'")
        return None if row is None else str(row[0])

    def get(self, key: str) -> Any:
        """The JSON value stored under ``key``, or None."""
        row = self._db.one("SELECT value FROM meta WHERE key = ?", [key])
        if row is None or row[0] is None:
            return None
        cell = Cell("meta", f"key {key!r}")
        text = cell.text("value", row[0])
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            raise cell.bad("value", "not valid JSON") from None

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-able) under ``key``; ``None`` removes the key."""
        with self._db.transaction():
            if value is None:
                self._db.exec("DELETE FROM meta WHERE key = ?", [key])
            else:
                self._db.exec(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [key, json.dumps(value, sort_keys=True)],
                )
