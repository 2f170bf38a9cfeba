"""PNG encoding ahead of the writer, on worker threads, in order, bounded.

Encoding a frame as PNG is most of a dataset export's CPU (about 90% of a LeRobot export
of Atari frames), and Pillow releases the GIL while zlib compresses: frames handed to
``PngAhead`` are encoded on ``workers`` threads while the caller reads and decodes the
next ones and builds its rows. Results come back in the order the frames went in. At most
``ahead`` frames wait to be collected: memory is bounded whatever the episode length.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ._parquet import png_bytes

__all__ = ["PngAhead", "encode_workers"]


def encode_workers() -> int:
    """Threads that encode: one per core this process may run on, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


class PngAhead:
    """``submit(frame, tag)`` hands a frame to the encoders; ``done(tag, png)`` is called
    with its PNG bytes, in submission order, once more than ``ahead`` frames are waiting
    (and for every frame left by ``drain``). ``close`` stops the threads."""

    def __init__(
        self, done: Callable[[Any, bytes], None], *, ahead: int = 32, workers: int | None = None
    ):
        self._done = done
        self._ahead = ahead
        self._pool = ThreadPoolExecutor(workers or encode_workers(), "framestore-png")
        self._waiting: deque[tuple[Any, Future[bytes]]] = deque()

    def submit(self, frame: np.ndarray, tag: Any) -> None:
        self._waiting.append((tag, self._pool.submit(png_bytes, frame)))
        while len(self._waiting) > self._ahead:
            self._collect()

    def drain(self) -> None:
        """Collect every frame submitted so far."""
        while self._waiting:
            self._collect()

    def close(self) -> None:
        for _tag, future in self._waiting:
            future.cancel()
        self._waiting.clear()
        self._pool.shutdown(wait=True)

    def _collect(self) -> None:
        tag, future = self._waiting.popleft()
        self._done(tag, future.result())
