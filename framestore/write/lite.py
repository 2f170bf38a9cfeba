"""Telemetry-lite: record human play into memory; touch the disk only on save.

A ``LiteRecorder`` keeps the current episode's steps and frames in a ring bounded by
steps and by bytes. Nothing is written until ``save()``; ``discard()`` is instant. When
the ring overflows, the oldest steps go and the episode is marked ``trimmed``. With
``compress=True`` frames are zstd-compressed in a small background pool, so the same
RAM holds many more steps (Atari frames shrink ~100x).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from telemetry import check_reward, encode_action, encode_info

from ..catalog import check_seed
from ..disk.codecs import validate_frame
from ..errors import InvalidInput, StoreClosed


@dataclass
class _LiteStep:
    frame: np.ndarray | Future | bytes | None
    shape: tuple[int, ...] | None
    nbytes: int  # bytes this step holds in the ring now
    action: Any
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] | None


class LiteRecorder:
    """An in-memory episode ring for human play.

    Args:
        max_steps: steps kept (the oldest go first).
        max_bytes: bytes of frames kept (raw, or compressed with ``compress``).
        compress: compress frames with zstd on a background pool.
        level: zstd level for the ring.
    """

    def __init__(
        self,
        *,
        max_steps: int = 36_000,
        max_bytes: int = 512 * 1024 * 1024,
        compress: bool = True,
        level: int = 1,
        action_space=None,
    ):
        if max_steps < 1 or max_bytes < 1:
            raise InvalidInput("max_steps and max_bytes must be positive")
        self.max_steps = int(max_steps)
        self.max_bytes = int(max_bytes)
        self._space = action_space
        self._ring: deque[_LiteStep] = deque()
        self._pending: deque[_LiteStep] = deque()  # steps whose frame is still compressing
        self._bytes = 0
        self._lock = threading.Lock()
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="framestore-lite") if compress else None
        )
        self._local = threading.local()
        self._level = level
        self.seed: int | None = None
        self.active = False
        self.trimmed = False
        self.steps_seen = 0
        self.first_step = 0  # step index of the oldest step still in the ring
        self._closed = False

    # ----------------------------------------------------------------- producer side
    def begin_episode(self, seed: int | None = None) -> None:
        self._check()
        seed = check_seed(seed)  # refused now, not when the ring is saved
        self.discard()
        self.seed = seed
        self.active = True

    def record_step(
        self,
        frame,
        action=None,
        reward: float = 0.0,
        terminated: bool = False,
        truncated: bool = False,
        info: dict[str, Any] | None = None,
    ) -> int:
        """Keep one step in the ring (validated like ``Recorder.record_step``)."""
        self._check()
        if not self.active:
            raise InvalidInput("record_step() before begin_episode()")
        reward = check_reward(reward)
        if action is not None:
            encode_action(action, self._space)  # validate now, not at save time
        encode_info({} if info is None else info)
        arr = validate_frame(frame) if frame is not None else None
        held: np.ndarray | Future | None = arr
        if arr is not None and self._pool is not None:
            held = self._pool.submit(self._compress, arr)
        nbytes = arr.nbytes if arr is not None else 0
        step = _LiteStep(
            held,
            arr.shape if arr is not None else None,
            nbytes,
            action,
            reward,
            bool(terminated),
            bool(truncated),
            info,
        )
        if nbytes > self.max_bytes:
            raise InvalidInput(f"one frame ({nbytes} bytes) exceeds the ring's byte bound")
        with self._lock:
            self._ring.append(step)
            if isinstance(held, Future):
                self._pending.append(step)
            self._bytes += nbytes
            self._settle()
            self._evict()
        self.steps_seen += 1
        return self.steps_seen - 1

    def _compress(self, arr: np.ndarray) -> bytes:
        zc = getattr(self._local, "zc", None)
        if zc is None:
            zc = self._local.zc = zstandard.ZstdCompressor(
                level=self._level, write_content_size=True
            )
        return zc.compress(arr.data)

    def settle(self, wait: bool = False) -> None:
        """Count finished compressions at their compressed size (with ``wait``, wait for
        all pending ones first). At 60 Hz the pool keeps up and this happens by itself
        on every step; a producer running flat out may call it to catch up."""
        if wait:
            for s in list(self._pending):
                if isinstance(s.frame, Future):
                    s.frame.result()
        with self._lock:
            self._settle()

    def _settle(self) -> None:
        """Swap finished compressions in, so the byte count reflects compressed sizes."""
        while self._pending and self._pending[0].frame.done():
            s = self._pending.popleft()
            blob = s.frame.result()
            if s.nbytes:  # 0 once evicted: its bytes are already gone from the count
                self._bytes += len(blob) - s.nbytes
                s.nbytes = len(blob)
            s.frame = blob

    def _evict(self) -> None:
        while self._ring and (len(self._ring) > self.max_steps or self._bytes > self.max_bytes):
            old = self._ring.popleft()
            self._bytes -= old.nbytes
            old.nbytes = 0
            self.first_step += 1
            self.trimmed = True

    def end_episode(self) -> None:
        self.active = False

    # ----------------------------------------------------------------- decisions
    @property
    def steps(self) -> int:
        return len(self._ring)

    @property
    def bytes(self) -> int:
        return self._bytes

    def frames(self):
        """The ring's frames, oldest first (decompressed)."""
        dz = zstandard.ZstdDecompressor()
        for s in list(self._ring):
            yield self._frame_of(s, dz)

    @staticmethod
    def _frame_of(s: _LiteStep, dz) -> np.ndarray | None:
        f = s.frame
        if isinstance(f, Future):
            f = f.result()
        if isinstance(f, bytes):
            return np.frombuffer(dz.decompress(f), dtype=np.uint8).reshape(s.shape)
        return f

    def save(self, recorder, *, status: str | None = None) -> int:
        """Write the ring as one episode through ``recorder`` (a ``Recorder``); returns the
        episode id. Call it off the UI thread: it decompresses and enqueues every frame.
        A trimmed episode is stored with status ``trimmed``; its first kept step keeps its
        original index in ``info['lite_step']``."""
        self._check()
        with self._lock:
            steps = list(self._ring)
        eid = recorder.begin_episode(seed=self.seed)
        dz = zstandard.ZstdDecompressor()
        for i, s in enumerate(steps):
            info = dict(s.info or {})
            if self.trimmed:
                info["lite_step"] = self.first_step + i
            recorder.record_step(
                self._frame_of(s, dz),
                action=s.action,
                reward=s.reward,
                terminated=s.terminated,
                truncated=s.truncated,
                info=info,
            )
        recorder.end_episode(status=status or ("trimmed" if self.trimmed else "complete"))
        self.discard()
        return eid

    def discard(self) -> None:
        """Forget the ring at once."""
        with self._lock:
            self._ring.clear()
            self._pending.clear()
            self._bytes = 0
        self.trimmed = False
        self.steps_seen = 0
        self.first_step = 0
        self.active = False

    # ----------------------------------------------------------------- lifecycle
    def _check(self) -> None:
        if self._closed:
            raise StoreClosed("LiteRecorder is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.discard()

    def __enter__(self) -> LiteRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
