"""The producer side of the write path, shared by both placements: open chunks.

``ChunkAssembler`` keeps one open chunk per (episode stream key, stream index). A frame
is validated by the caller, then copied ONCE, straight into its open chunk's buffer (a
recycled array in the thread placement, a shared-memory slot for the storage process),
or, in the thread placement, kept as it is when the caller handed it over
(``Recorder.record_step(..., owned=True)``: a fresh ``render()`` array the caller will
not change; the compressor then streams the chunk's frames into zstd one by one);
its step's metadata (``StepMeta``, the one step type from producer to sink) joins the
stream-0 chunk. Nothing is queued and nobody is woken per step: a chunk is handed to the
writer whole (``hand_off``: one queue append and one wake-up, or one pipe command) when

- it is full (``chunk_frames`` frames or ``chunk_bytes`` raw bytes, or
  ``MAX_CHUNK_STEPS`` steps), or the next frame has another shape (size, shape);
- it has been open ``max_latency`` seconds (latency; ``close_stale``, called by a
  background thread of the placement);
- its episode ends, a flush asks for everything, or the producer must wait for room
  (the open chunks would otherwise hold the frames it waits for);
- the open chunks together hold more than their bound (half the queue): the biggest.

Never by a database commit: rows commit once their chunk is written (the writer hands
them to the sink). The one lock here is taken once per step by the producer and, rarely,
by the latency ticker (which skips a round rather than wait for the producer).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .._format.steps import StepMeta
from ..disk._refs import FrameRef
from ._budget import QueueBudget, Waiter
from ._chunks import MAX_CHUNK_STEPS, Chunk

__all__ = ["ArrayBuffers", "ChunkAssembler", "ChunkBuffers"]


class ChunkBuffers(Protocol):
    """Where open chunks keep their frames."""

    def get(self, shape: tuple[int, ...], capacity: int) -> tuple[np.ndarray, object] | None:
        """A uint8 array ``(capacity, *shape)`` and the handle that frees it; None when
        none is free now (the writer frees one once a chunk is written)."""
        ...

    def put_back(self, handle: object) -> None:
        """Free a buffer that never reached the writer."""
        ...


class ArrayBuffers:
    """The thread placement's chunk buffers: arrays, recycled once their chunk is written.

    A fresh buffer costs a page fault on every page its frames are copied into (measured
    on this project's VM: ~26 µs of CPU to copy a 100 KB frame into fresh memory against
    ~11 µs into a recycled buffer), so a buffer is kept for reuse as long as all buffers made, in use and free, stay within
    ``keep_bytes``: 8 interleaved episodes keep ~16 chunk buffers in rotation (8 open, 8
    being written), and keeping only some of them meant a fresh buffer for ~40% of the
    chunks, for as long as the recording ran. Buffers in use are bounded by the queue
    (frames placed and not yet written), so the memory bound stays the queue's bytes.

    Args:
        keep_bytes: most bytes of buffers (in use and free) after which a written
            chunk's buffer is freed instead of kept.
    """

    def __init__(self, keep_bytes: int):
        self._keep = keep_bytes
        self._free: deque[np.ndarray] = deque()
        self._made = 0  # bytes of the buffers made and not dropped (in use or free)
        self._lock = threading.Lock()  # producer (get) and writer (put_back), per chunk

    def get(self, shape: tuple[int, ...], capacity: int) -> tuple[np.ndarray, object]:
        want = (capacity, *shape)
        with self._lock:
            while self._free:
                buf = self._free.pop()
                if buf.shape == want:
                    return buf, buf
                self._made -= buf.nbytes  # another shape: dropped
            buf = np.empty(want, dtype=np.uint8)
            self._made += buf.nbytes
            return buf, buf

    def put_back(self, handle: object) -> None:
        """Keep a written chunk's buffer (any thread), within ``keep_bytes``."""
        assert isinstance(handle, np.ndarray)
        with self._lock:
            if self._made <= self._keep:
                self._free.append(handle)
            else:
                self._made -= handle.nbytes


@dataclass(slots=True)
class _Open:
    """An open chunk: its frames so far in ``buf[:count]`` (copied) or ``held[:count]``
    (handed over by the caller, kept as they are), and its steps."""

    key: int
    stream_index: int
    opened: float
    buf: np.ndarray | None = None
    handle: object = None
    held: list[np.ndarray] | None = None
    capacity: int = 0
    count: int = 0
    refs: list[FrameRef] = field(default_factory=list)
    steps: list[StepMeta] = field(default_factory=list)
    row_shapes: list[str] = field(default_factory=list)  # streams >= 1: frames' shapes

    @property
    def frame_shape(self) -> tuple[int, ...] | None:
        """The shape of this chunk's frames (None: no frame storage yet)."""
        if self.buf is not None:
            return self.buf.shape[1:]
        if self.held:
            return self.held[0].shape
        return None

    @property
    def has_room(self) -> bool:
        """Frames can be placed (a buffer, or a list for handed-over frames)."""
        return self.buf is not None or self.held is not None


class ChunkAssembler:
    """Open chunks of one recording (see the module docstring).

    Args:
        budget: the queue's bound (frames counted when placed).
        buffers: where chunks keep their frames.
        hand_off: gives a closed chunk to the writer (called with the lock held, so
            chunks and ``locked`` work reach the writer in order).
        waiter: how to wait for the writer to free room.
        chunk_frames, chunk_bytes: a chunk is closed at this many frames or raw bytes.
        max_latency: a chunk is closed this many seconds after it was opened.
        open_frames, open_bytes: bound on what all open chunks hold together.
        keep_owned: frames placed with ``owned=True`` may be kept as they are (the
            thread placement); False: every frame is copied into a buffer (the storage
            process's chunks live in shared memory).
    """

    def __init__(
        self,
        budget: QueueBudget,
        buffers: ChunkBuffers,
        hand_off: Callable[[Chunk], None],
        waiter: Waiter,
        *,
        chunk_frames: int,
        chunk_bytes: int,
        max_latency: float,
        open_frames: int,
        open_bytes: int,
        keep_owned: bool = False,
    ):
        self.budget = budget
        self._keep_owned = keep_owned
        self._buffers = buffers
        self._hand_off = hand_off
        self._waiter = waiter
        self._chunk_frames = chunk_frames
        self._chunk_bytes = chunk_bytes
        self.max_latency = max_latency
        self._open_frames_bound = open_frames
        self._open_bytes_bound = open_bytes
        self._open: dict[tuple[int, int], _Open] = {}
        self._open_frames = 0
        self._open_bytes = 0
        self._lock = threading.Lock()
        self.next_seq = 0
        self.chunks_handed_off = 0

    # ----------------------------------------------------------------- producer
    def place(
        self,
        frame: np.ndarray,
        key: tuple[int, int],
        step: StepMeta | None,
        stream_index: int = 0,
        row_shape: str | None = None,
        *,
        owned: bool = False,
    ) -> FrameRef:
        """Copy a validated frame into its open chunk; its ref (``dropped`` when the
        ``drop`` policy found no room: ``step`` is then kept without its frame). A frame
        of another stream than render (``stream_index`` >= 1) has no step; ``row_shape``
        is its own shape as its pointer row keeps it. ``owned``: the caller hands the
        frame over (it will not change it): a C-contiguous one is kept, not copied,
        when this assembler keeps owned frames."""
        with self._lock:
            return self._place(frame, key, step, stream_index, row_shape, owned)

    def place_many(
        self,
        frames: Sequence[np.ndarray | None],
        keys: Sequence[tuple[int, int]],
        steps: Sequence[StepMeta | None],
        streams: Sequence[int] | None = None,
        row_shapes: Sequence[str | None] | None = None,
        *,
        owned: bool = False,
    ) -> list[FrameRef | None]:
        """``place`` for a batch under one lock round (``streams``: each frame's stream
        index, ``row_shapes`` its own shape; default render; ``owned``: every frame is
        handed over); under ``block`` the whole batch waits until it fits (a
        ``QueueFull`` leaves nothing placed)."""
        with self._lock:
            budget = self.budget
            if budget.policy == "block":
                sizes = [f.nbytes for f in frames if f is not None]
                count, total = len(sizes), sum(sizes)
                if not budget.fits(count, total):
                    self._close_all()
                    budget.wait_for_room(count, total, self._waiter)
            n = len(frames)
            indexes = streams if streams is not None else [0] * n
            shapes = row_shapes if row_shapes is not None else [None] * n
            refs: list[FrameRef | None] = []
            for frame, key, step, i, shape in zip(
                frames, keys, steps, indexes, shapes, strict=True
            ):
                if frame is None:
                    if step is not None:
                        self._add_step(step)
                    refs.append(None)
                else:
                    refs.append(self._place(frame, key, step, i, shape, owned))
            return refs

    def add_step(self, step: StepMeta) -> None:
        """A step without a frame: its metadata joins its episode's stream-0 chunk."""
        with self._lock:
            self._add_step(step)

    def close_stream(self, stream_key: int) -> None:
        """Hand off every open chunk of an episode (it ends)."""
        with self._lock:
            for k in [k for k in self._open if k[0] == stream_key]:
                self._close(k)

    def close_all(self) -> None:
        """Hand off every open chunk, however small (a flush)."""
        with self._lock:
            self._close_all()

    def locked(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (which reaches the writer) in order with the hand-offs."""
        with self._lock:
            fn()

    # ----------------------------------------------------------------- latency
    def close_stale(self) -> float:
        """Hand off the chunks open ``max_latency`` seconds or more (from the ticker
        thread; a producer holding the lock makes it skip this round). Returns the
        seconds until the next check."""
        if not self._lock.acquire(blocking=False):
            return min(self.max_latency, 0.05)
        try:
            now = time.monotonic()
            cutoff = now - self.max_latency
            for k in [k for k, c in self._open.items() if c.opened <= cutoff]:
                self._close(k)
            oldest = min((c.opened for c in self._open.values()), default=None)
        finally:
            self._lock.release()
        if oldest is None:
            return self.max_latency
        return max(0.0, oldest + self.max_latency - now)

    @property
    def open_chunks(self) -> int:
        return len(self._open)

    # ----------------------------------------------------------------- internals
    def _place(
        self,
        frame: np.ndarray,
        key: tuple[int, int],
        step: StepMeta | None,
        stream_index: int,
        row_shape: str | None,
        owned: bool = False,
    ) -> FrameRef:
        budget = self.budget
        nbytes = frame.nbytes
        shape = frame.shape
        ck = (key[0], stream_index)
        oc, has_room = self._open_for(ck, shape)
        # Kept as it is only when the caller said it will not change it, and the
        # compressor can read it where it lies; anything else is copied, as before.
        keep = owned and self._keep_owned and frame.flags.c_contiguous
        if not budget.fits(1, nbytes) or not has_room and not self._room(ck, shape, nbytes, keep):
            if budget.policy == "drop":
                return self._drop(key, shape, step, stream_index)
            self._close_all()  # open chunks would hold the frames we wait for
            budget.wait_for_room(
                1, nbytes, self._waiter, lambda: self._room(ck, shape, nbytes, keep)
            )
            oc = None
        if oc is None or not has_room:
            oc = self._open[ck]
        _put_frame(oc, frame, keep)
        ref = FrameRef(self.next_seq, key, shape, False, None, stream_index)
        self.next_seq += 1
        if step is not None:
            step.has_frame = True
        # Published in this order, ``count`` last: a Ctrl-C between these lines leaves
        # entries past ``count`` that ``_close`` drops (the step was never recorded).
        oc.refs.append(ref)
        if stream_index:
            oc.row_shapes.append(row_shape or "x".join(map(str, shape)))
        if step is not None:
            oc.steps.append(step)
        oc.count += 1
        budget.take(1, nbytes)
        self._open_frames += 1
        self._open_bytes += nbytes
        if (
            oc.count >= oc.capacity
            or len(oc.steps) >= MAX_CHUNK_STEPS
            or self._open_frames > self._open_frames_bound
            or self._open_bytes > self._open_bytes_bound
        ):
            self._close_past_bounds(ck, oc)
        return ref

    def _open_for(self, ck: tuple[int, int], shape: tuple[int, ...]) -> tuple[_Open | None, bool]:
        """The open chunk ``ck`` (closed first, and None, when its frames have another
        shape) and whether it has room for frames (``frame_shape`` and ``has_room``
        without their property calls: once per frame)."""
        oc = self._open.get(ck)
        if oc is None:
            return None, False
        buf, held = oc.buf, oc.held
        now = buf.shape[1:] if buf is not None else held[0].shape if held else None
        if now is not None and now != shape:
            self._close(ck)
            return None, False
        return oc, buf is not None or held is not None

    def _close_past_bounds(self, ck: tuple[int, int], oc: _Open) -> None:
        """Hand over chunk ``ck`` once it is full (frames or steps), then the fullest open
        chunks while the open frames or bytes are over their bounds."""
        if oc.count >= oc.capacity or len(oc.steps) >= MAX_CHUNK_STEPS:
            self._close(ck)
        while self._open and (
            self._open_frames > self._open_frames_bound or self._open_bytes > self._open_bytes_bound
        ):
            self._close(max(self._open, key=lambda k: self._open[k].count))

    def _room(self, ck: tuple[int, int], shape: tuple[int, ...], nbytes: int, keep: bool) -> bool:
        """Give the open chunk ``ck`` (opened if need be) room for frames of ``shape``:
        a list for frames kept as handed over (``keep``), else a buffer; False when no
        buffer is free."""
        oc = self._open.get(ck)
        if oc is not None and oc.has_room:
            return True
        capacity = max(1, min(self._chunk_frames, self._chunk_bytes // max(1, nbytes)))
        got = None if keep else self._buffers.get(shape, capacity)
        if got is None and not keep:
            return False
        if oc is None:
            oc = self._open[ck] = _Open(ck[0], ck[1], time.monotonic())
        if got is None:
            oc.held, oc.capacity = [], capacity
        else:
            oc.buf, oc.handle = got
            oc.capacity = len(oc.buf)  # a ring slot may hold fewer frames than asked
        return True

    def _drop(
        self, key: tuple[int, int], shape: tuple[int, ...], step: StepMeta | None, stream: int
    ) -> FrameRef:
        self.budget.dropped += 1
        if step is not None:
            step.dropped = True
            self._add_step(step)
        return FrameRef(None, key, shape, dropped=True, stream=stream)

    def _add_step(self, step: StepMeta) -> None:
        ck = (step.episode_id, 0)
        oc = self._open.get(ck)
        if oc is None:
            oc = self._open[ck] = _Open(ck[0], 0, time.monotonic())
        oc.steps.append(step)
        if len(oc.steps) >= MAX_CHUNK_STEPS:
            self._close(ck)

    def _close_all(self) -> None:
        for k in list(self._open):
            self._close(k)

    def _close(self, ck: tuple[int, int]) -> None:
        oc = self._open.pop(ck)
        if len(oc.refs) > oc.count:  # a place() interrupted after its first append
            del oc.refs[oc.count :]
            del oc.row_shapes[oc.count :]
            if not oc.stream_index and sum(s.has_frame for s in oc.steps) > oc.count:
                oc.steps.pop()  # the step of that frame: appended after the ref
        frames: np.ndarray | list[np.ndarray] | None = None
        if oc.held is not None:
            frames = oc.held[: oc.count] or None
        elif oc.buf is not None:
            if oc.count:
                frames = oc.buf[: oc.count]
            else:
                self._buffers.put_back(oc.handle)
                oc.handle = None
        if frames is None and not oc.steps:
            # opened and never filled (Ctrl-C between giving a chunk its buffer and
            # placing the frame): nothing to write; a CHUNK record needs frames or steps
            return
        chunk = Chunk(
            oc.key,
            oc.stream_index,
            frames,
            oc.refs,
            oc.steps,
            oc.handle,
            oc.row_shapes if oc.stream_index else None,
        )  # fmt: skip
        self._open_frames -= oc.count
        self._open_bytes -= chunk.nbytes
        self.chunks_handed_off += 1
        self.budget.log_state()
        self._hand_off(chunk)


def _put_frame(oc: _Open, frame: np.ndarray, keep: bool) -> None:
    """Frame ``frame`` into slot ``oc.count`` of its open chunk: kept as handed over
    (``keep``) or copied, into the chunk's list or its buffer. Not yet counted."""
    held = oc.held
    if held is not None:
        if len(held) > oc.count:
            del held[oc.count :]  # a place() interrupted after its append
        held.append(frame if keep else np.array(frame, order="C"))
    else:
        assert oc.buf is not None
        # np.copyto releases the GIL for the copy: the compression threads and the
        # sink take their turn here. (A memcpy holding the GIL was measured worse: the
        # producer then starves them until the 5 ms switch interval, runs ~1,000
        # frames ahead and copies into memory that has left the caches: more CPU per
        # frame, not less.)
        np.copyto(oc.buf[oc.count], frame)
