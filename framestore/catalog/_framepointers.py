"""Frame pointers of recently read episodes, kept so a random ``read_frame`` runs no
SQLite query on the steps table, in any stream.

An episode's pointers of one stream (``(segment, offset, slot)`` per step; for a stream
other than render also each frame's own shape) are read with one query the first time
one of its frames is asked for, and kept as numpy columns (32 bytes a step).
They stay valid while the catalogue is unchanged: every lookup compares SQLite's
``data_version`` (changed by any other connection's commit: a recorder's sink, ``rm``,
``gc`` or ``merge`` in another process) and the connection's own ``total_changes`` with
the values seen when the pointers were loaded, and starts over when either moved. That
check is a pragma (a few µs), not a query of the steps table.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import CorruptCatalog, FrameNotFound
from ..types import FrameLocation
from . import Catalog, StreamPointer

if TYPE_CHECKING:
    import numpy as np

__all__ = ["FramePointers"]

#: Steps kept in all (32 bytes each: ~32 MB); an episode longer than this is not kept
#: (its reads query its step, as before).
MAX_STEPS = 1_000_000


@dataclass(frozen=True)
class _Episode:
    """One episode's pointers: ``steps`` sorted; ``segment`` -1 where no frame is stored."""

    steps: np.ndarray  # int64
    segment: np.ndarray  # int64, like the others
    offset: np.ndarray
    slot: np.ndarray
    dense: bool  # steps == 0..n-1: the step is its own index
    shapes: tuple[tuple[int, ...] | None, ...] | None = None  # a named stream's, per row

    @property
    def size(self) -> int:
        return len(self.steps)

    def index(self, step: int) -> int | None:
        if self.dense:
            return step if 0 <= step < self.size else None
        i = int(self.steps.searchsorted(step))
        return i if i < self.size and int(self.steps[i]) == step else None


class FramePointers:
    """An LRU of episodes' frame pointers, checked against the catalogue's change stamp.

    ``check_episode(episode_id)`` raises when the episode does not exist (or is deleted);
    it runs only when an episode's pointers are loaded."""

    def __init__(
        self,
        catalog: Catalog,
        check_episode: Callable[[int], object],
        *,
        max_steps: int = MAX_STEPS,
    ):
        self._catalog = catalog
        self._check_episode = check_episode
        self._max_steps = max_steps
        self._episodes: OrderedDict[tuple[int, int], _Episode] = OrderedDict()  # (id, stream)
        self._steps = 0
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def location(self, episode_id: int, step: int) -> FrameLocation | None:
        """The pointer of ``episode_id``'s ``step`` (None: its frame was dropped).

        Raises ``EpisodeNotFound`` (via ``check_episode``) or ``FrameNotFound`` (no such
        step)."""
        return self.pointer(episode_id, step, 0)[1]

    def pointer(self, episode_id: int, step: int, stream: int) -> StreamPointer:
        """``(step, pointer, shape)`` of ``episode_id``'s ``step`` in the stream of index
        ``stream`` (0: render, whose shape is None); the pointer None where the step has
        no stored frame in it. Raises as ``location``."""
        stamp = self._catalog.connection.change_stamp()
        key = (episode_id, stream)
        with self._lock:
            if stamp != self._stamp:
                self._episodes.clear()
                self._steps = 0
                self._stamp = stamp
            ep = self._episodes.get(key)
            if ep is not None:
                self._episodes.move_to_end(key)
        if ep is None:
            ep = self._load(episode_id, stream, stamp)
        if ep is None:  # too long to keep, or a damaged row in it: ask for the one step
            return self._one(episode_id, step, stream)
        i = ep.index(step)
        if i is None:
            raise FrameNotFound(f"episode {episode_id} has no step {step}")
        seg = int(ep.segment[i])
        shape = None if ep.shapes is None else ep.shapes[i]
        return step, None if seg < 0 else (seg, int(ep.offset[i]), int(ep.slot[i])), shape

    def clear(self) -> None:
        with self._lock:
            self._episodes.clear()
            self._steps = 0
            self._stamp = None

    def _rows(
        self, episode_id: int, stream: int, start: int = 0, stop: int | None = None
    ) -> list[StreamPointer]:
        if stream == 0:
            return [
                (s, loc, None)
                for s, loc in self._catalog.episodes.frame_locations(episode_id, start, stop)
            ]
        return self._catalog.streams.pointers(episode_id, stream, start, stop)

    def _one(self, episode_id: int, step: int, stream: int) -> StreamPointer:
        self._check_episode(episode_id)
        rows = self._rows(episode_id, stream, step, step + 1)
        if not rows:
            raise FrameNotFound(f"episode {episode_id} has no step {step}")
        return rows[0]

    def _load(self, episode_id: int, stream: int, stamp: tuple[int, int]) -> _Episode | None:
        self._check_episode(episode_id)
        # Read after the stamp: the rows are at least as new as it (a commit in between
        # moves the stamp, and the next lookup starts over).
        try:
            rows = self._rows(episode_id, stream)
        except CorruptCatalog:
            return None  # a damaged row elsewhere must not fail this step: ask for it alone
        n = len(rows)
        if n > self._max_steps:
            return None
        import numpy as np  # here, not at the top: listing a store needs no arrays

        steps = np.fromiter((s for s, _l, _h in rows), dtype=np.int64, count=n)
        seg = np.fromiter((-1 if loc is None else loc[0] for _, loc, _h in rows), np.int64, n)
        off = np.fromiter((0 if loc is None else loc[1] for _, loc, _h in rows), np.int64, n)
        slot = np.fromiter((0 if loc is None else loc[2] for _, loc, _h in rows), np.int64, n)
        dense = n == 0 or (int(steps[0]) == 0 and int(steps[-1]) == n - 1)
        shapes = None if stream == 0 else tuple(h for _s, _l, h in rows)
        ep = _Episode(steps, seg, off, slot, dense, shapes)
        key = (episode_id, stream)
        with self._lock:
            if self._stamp != stamp:
                return ep  # the cache moved on meanwhile: use these once, keep nothing
            old = self._episodes.pop(key, None)
            if old is not None:
                self._steps -= old.size
            self._episodes[key] = ep
            self._steps += n
            while self._steps > self._max_steps and len(self._episodes) > 1:
                self._steps -= self._episodes.popitem(last=False)[1].size
        return ep
