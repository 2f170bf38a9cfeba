"""Recycled frame buffers: the producer's copy of a frame lands on warm pages.

Copies kept alive in a queue are fresh 100-700 KB allocations; each faults in new pages,
which costs the producer far more than the copy itself. Written frames' buffers are kept
(bounded) and handed out again for the next copies.
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["BufferPool"]

#: Frame shapes the pool keeps buffers of at once (the streams of a step).
MAX_SHAPES = 4


class BufferPool:
    """Buffers of the current shapes (a few: one per stream) for frame copies.

    Args:
        max_bytes: the queue's byte bound; the pool keeps at most a quarter of it.
        chunk_frames: frames per chunk; the pool keeps two chunks' worth per open stream.
    """

    def __init__(self, max_bytes: int, chunk_frames: int):
        self._max_bytes = max_bytes
        self._chunk_frames = chunk_frames
        self._free: dict[tuple[int, ...], deque[np.ndarray]] = {}

    def copy(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` copied into a recycled buffer of its shape, or a new one."""
        pool = self._free.get(frame.shape)
        buf = None
        if pool:
            try:
                buf = pool.pop()
            except IndexError:  # the writer thread emptied it meanwhile
                buf = None
        if buf is None:
            buf = np.empty(frame.shape, dtype=np.uint8)
        np.copyto(buf, frame)
        return buf

    def recycle(self, frames: list[np.ndarray], open_streams: int) -> None:
        """Keep written frames' buffers for reuse (bounded: two chunks' worth per open
        stream, a quarter of the queue's bytes, and only the current shapes)."""
        shape = frames[0].shape
        pool = self._free.get(shape)
        if pool is None:
            # A new shape: let the oldest shape's buffers go, keeping one per stream a
            # step may carry (render, an observation, a camera...).
            free = dict(self._free)
            while len(free) >= MAX_SHAPES:
                del free[next(iter(free))]
            pool = free[shape] = deque()
            self._free = free
        chunks = 2 * max(1, open_streams)
        share = self._max_bytes // 4 // len(self._free)  # a quarter of the queue, all shapes
        room = min(chunks * self._chunk_frames, share // max(1, frames[0].nbytes))
        for f in frames:
            if len(pool) >= room:
                break
            pool.append(f)
