"""``EpisodeListModel``: the episode table's rows, sorting, filtering and minimal diffs."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from framestore import FrameStore, FrameStoreError
from tools.text import format_number, human_bytes

from ._signal import Signal

__all__ = ["COLUMNS", "EpisodeListModel", "EpisodeRow"]


@dataclass(frozen=True)
class EpisodeRow:
    """One row of the episode table."""

    id: int
    run: int
    env: str
    index: int
    seed: int | None
    steps: int
    total_reward: float
    status: str
    size: int | None  # bytes of segment records holding its frames


COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "Episode"),
    ("run", "Run"),
    ("env", "Environment"),
    ("index", "#"),
    ("seed", "Seed"),
    ("steps", "Steps"),
    ("total_reward", "Reward"),
    ("status", "Status"),
    ("size", "Size"),
)


class EpisodeListModel:
    """Rows of the episode table, kept in episode-id order.

    ``refresh(store)`` = ``apply(fetch(store))``. ``fetch`` reads the store (run it off
    the UI thread); ``apply`` updates the rows in place and emits only what changed, so
    a view keeps its selection and scroll position:

    * ``rows_about_to_be_removed(first, last)`` / ``rows_removed(first, last)``
    * ``rows_about_to_be_inserted(first, last)`` / ``rows_inserted(first, last)``
    * ``rows_changed(first, last)``

    Sorting and filtering are pure functions of a row (``sort_key``, ``matches``), used
    by ``view()`` here and by the Qt proxy model.
    """

    columns = COLUMNS

    def __init__(self) -> None:
        self.rows: list[EpisodeRow] = []
        self.rows_about_to_be_removed = Signal()
        self.rows_removed = Signal()
        self.rows_about_to_be_inserted = Signal()
        self.rows_inserted = Signal()
        self.rows_changed = Signal()
        self._size_cache: dict[int, tuple[tuple, int]] = {}
        self._cache_lock = threading.Lock()

    # ------------------------------------------------------------------ reading
    def fetch(self, store: FrameStore) -> list[EpisodeRow]:
        """Read the store's episodes (SQLite and segment headers: not on the UI thread).

        Sizes of episodes that did not change since the last fetch come from a cache."""
        rows = []
        for e in store.episodes():
            stamp = (e.steps, e.frames, e.status)
            with self._cache_lock:
                hit = self._size_cache.get(e.id)
            if hit is not None and hit[0] == stamp:
                size = hit[1]
            else:
                try:
                    size = store.episode_bytes(e.id)
                except (FrameStoreError, OSError):  # gone under gc: no size, not an error
                    size = None
                if size is not None:
                    with self._cache_lock:
                        self._size_cache[e.id] = (stamp, size)
            rows.append(
                EpisodeRow(
                    id=e.id,
                    run=e.run_id,
                    env=e.env_id,
                    index=e.index,
                    seed=e.seed,
                    steps=e.steps,
                    total_reward=float(e.total_reward),
                    status=e.status,
                    size=size,
                )
            )
        return rows

    def refresh(self, store: FrameStore) -> None:
        """``apply(fetch(store))`` in one go (reads the store on this thread)."""
        self.apply(self.fetch(store))

    def apply(self, new_rows: Sequence[EpisodeRow]) -> None:
        """Make ``rows`` equal ``new_rows`` (sorted by id), emitting minimal changes."""
        new_rows = sorted(new_rows, key=lambda r: r.id)
        new_ids = {r.id for r in new_rows}
        # removals, from the bottom so indexes stay valid
        for i in range(len(self.rows) - 1, -1, -1):
            if self.rows[i].id not in new_ids:
                self.rows_about_to_be_removed.emit(i, i)
                del self.rows[i]
                self.rows_removed.emit(i, i)
        # the remaining ids are a subsequence of new_rows: walk both
        i = 0
        for new in new_rows:
            if i < len(self.rows) and self.rows[i].id == new.id:
                if self.rows[i] != new:
                    self.rows[i] = new
                    self.rows_changed.emit(i, i)
            else:
                self.rows_about_to_be_inserted.emit(i, i)
                self.rows.insert(i, new)
                self.rows_inserted.emit(i, i)
            i += 1

    # ------------------------------------------------------------------ table access
    def row_count(self) -> int:
        return len(self.rows)

    def column_count(self) -> int:
        return len(self.columns)

    def header(self, column: int) -> str:
        return self.columns[column][1]

    def row_index(self, episode_id: int) -> int | None:
        for i, r in enumerate(self.rows):
            if r.id == episode_id:
                return i
        return None

    def column_of(self, key: str) -> int:
        """The index of the column showing field ``key`` (``"env"``, ``"size"``...)."""
        return [k for k, _ in self.columns].index(key)

    def value(self, row: EpisodeRow, column: int) -> Any:
        return getattr(row, self.columns[column][0])

    def display(self, row: EpisodeRow, column: int) -> str:
        key = self.columns[column][0]
        v = getattr(row, key)
        if v is None:
            return "-"
        if key == "total_reward":
            return format_number(v)
        if key == "size":
            return human_bytes(v)
        return str(v)

    def exact(self, row: EpisodeRow, column: int) -> str | None:
        """The exact value behind a rounded cell (a tooltip), or ``None``."""
        key = self.columns[column][0]
        v = getattr(row, key)
        if key == "total_reward" and v is not None and repr(v) != self.display(row, column):
            return f"exact: {v!r}"
        if key == "size" and v is not None:
            return f"{v} bytes"
        return None

    @staticmethod
    def sort_key(row: EpisodeRow, column: int) -> tuple:
        """Orders None first, then by value; ties by episode id."""
        v = getattr(row, COLUMNS[column][0])
        return (v is not None, v if v is not None else 0, row.id)

    @staticmethod
    def matches(row: EpisodeRow, text: str) -> bool:
        """Every whitespace-separated term must match: ``field:value`` (e.g.
        ``status:rec``, ``env:pong``, ``run:2``) tests one field by prefix, a bare term
        is a substring of the environment, status, id, run or seed."""
        for term in text.lower().split():
            key, sep, want = term.partition(":")
            if sep:
                names = {k for k, _ in COLUMNS} | {"episode", "reward"}
                key = {"episode": "id", "reward": "total_reward"}.get(key, key)
                if key not in names:
                    return False
                v = getattr(row, key)
                if not str("" if v is None else v).lower().startswith(want):
                    return False
            else:
                hay = (row.env, row.status, str(row.id), str(row.run), str(row.seed))
                if not any(term in h.lower() for h in hay):
                    return False
        return True

    def view(
        self, *, column: int = 0, descending: bool = False, text: str = ""
    ) -> list[EpisodeRow]:
        """The rows as a table would show them: filtered by ``text``, sorted by ``column``."""
        rows = [r for r in self.rows if self.matches(r, text)]
        return sorted(rows, key=lambda r: self.sort_key(r, column), reverse=descending)
