"""Reading the rows of an export: ``(StepInfo, frame)`` in step order, with progress."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

from framestore import FrameStore, StepInfo
from framestore.errors import CorruptData, FrameNotFound

from ._plan import Plan
from ._report import ExportReport, Progress

__all__ = ["Row", "counted", "iter_rows"]

Row = tuple[StepInfo, np.ndarray]
T = TypeVar("T")
_PAGE_ROWS = 512  # step rows read from SQLite at a time


def iter_rows(store: FrameStore, plan: Plan, report: ExportReport) -> Iterator[Row]:
    """``(StepInfo, frame)`` in step order, paging through the steps; O(chunk) memory for
    frames (the reader caches a few decoded chunks).

    Steps without a stored frame go to ``report.dropped_steps``. A corrupt frame raises
    ``CorruptData`` / ``FrameNotFound``, or with ``skip_corrupt`` goes to
    ``report.skipped_steps`` together with the rest of its chunk (read once, not per step).
    A frame whose decoded shape is not the plan's (formats of one size) or its row's
    ``frame_shape`` is corrupt the same way: never written.
    """
    bad_chunks: set[tuple[int, int]] = set()
    stream = plan.options.stream
    for lo in range(plan.start, plan.stop, _PAGE_ROWS):
        hi = min(plan.stop, lo + _PAGE_ROWS)
        # another stream's pointers (render's are the rows' own)
        locs = None if stream == "render" else dict(
            store.frame_locations(plan.episode_id, lo, hi, stream=stream)
        )  # fmt: skip
        for row in store.read_steps(plan.episode_id, lo, hi):
            loc = row.frame if locs is None else locs.get(row.step)
            if loc is None:
                report.dropped_steps.append(row.step)
                continue
            chunk = (loc[0], loc[1])
            if chunk in bad_chunks:
                report.skipped_steps.append(row.step)
                continue
            try:
                frame = store.read_at(loc, plan.episode_id, row.step, stream=stream)
                _check_shape(plan, row, frame, locs is None)
            except (CorruptData, FrameNotFound):
                if not plan.options.skip_corrupt:
                    raise
                bad_chunks.add(chunk)
                report.skipped_steps.append(row.step)
                continue
            yield row, frame


def _check_shape(plan: Plan, row: StepInfo, frame: np.ndarray, render: bool = True) -> None:
    """The decoded frame is the truth; a disagreeing row or plan means corruption (the
    row's ``frame_shape`` is its render frame's: another stream's frames are checked
    against the plan only)."""
    shape = tuple(frame.shape)
    said_row = row.frame_shape if render else None
    want = said_row if plan.format == "png" else plan.shape
    if said_row is not None and said_row != shape or (want and want != shape):
        said = "x".join(map(str, said_row or want))
        raise CorruptData(
            "framestore.db",
            0,
            f"episode {plan.episode_id} step {row.step}: the database says {said} but the "
            f"stored frame is {'x'.join(map(str, shape))}",
        )


def counted(items: Iterable[T], planned: int, progress: Progress | None) -> Iterator[T]:
    """``items`` unchanged, calling ``progress(done, planned)`` after each one."""
    if progress is None:
        yield from items
        return
    for done, item in enumerate(items, 1):
        yield item
        progress(done, planned)
