"""A sequential pass's runs read from their chunks (``FrameStore.iter_frames``).

A run is ``(first step, count, (segment, offset, slot))``: ``count`` consecutive frames
of one chunk from ``slot`` on, meant to hold steps ``first, first + 1, ...``
(``catalog.episodes.frame_runs``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .._format import RENDER_STREAM_INDEX

if TYPE_CHECKING:  # numpy is imported by the first read, not by ``framestore ls``
    import numpy as np

    from ..types import FrameLocation
    from .reader import SegmentReader

__all__ = ["iter_runs"]


def iter_runs(
    reader: SegmentReader, key: int, runs: list[tuple[int, int, FrameLocation]]
) -> Iterator[tuple[int, np.ndarray]]:
    """``(first step, frames)`` of each run of render frames of stream key ``key``:
    ``frames`` a read-only view of the decoded chunk, the run's keys checked with one
    comparison; each chunk decoded once (consecutive runs of one chunk, around a dropped
    frame, share it), not cached (a pass reads it once). A run whose slots hold other
    keys, of another stream, or in a chunk of several blocks goes frame by frame through
    ``frame_of``, which raises naming the place after the frames before it."""
    chunk = None
    for first, count, (segment, offset, slot) in runs:
        if chunk is None or chunk.offset != offset or chunk.segment != segment:
            chunk = reader.read_chunk(segment, offset, keep=False)
        header = chunk.header
        end = slot + count
        if (
            len(chunk.blocks) == 1
            and header.stream_key == key
            and header.stream_index == RENDER_STREAM_INDEX
            and end <= header.count
            and header.frame_keys[slot:end] == tuple(range(first, first + count))
        ):
            yield first, chunk.blocks[0][slot:end]
            continue
        for i in range(count):  # checked frame by frame: raises at a wrong slot
            frame = reader.frame_of(
                chunk, slot + i, copy=False, expect_key=(key, first + i),
                expect_stream=RENDER_STREAM_INDEX,
            )  # fmt: skip
            yield first + i, frame[None]
