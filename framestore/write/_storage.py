"""Where a recording's storage work runs: the frame writer and the SQLite sink.

``Recorder`` talks to one ``Storage`` (it picks one from ``Settings.writer``):

- ``ThreadStorage``: a ``FrameStorageService`` (open chunks, writer thread, compression
  pool) and a ``TelemetryDBSink`` (SQLite thread) in the producer's process;
- ``ProcessStorage`` (``process._client``): the same open chunks in shared memory, the
  writer and the sink run by a storage process (``process._main``, a ``ThreadStorage``
  fed whole chunks through a pipe).

Both give the same guarantees: a step's row reaches the sink only once its chunk is
written (``chunk_rows``, called by the writer after the append and, under ``durable``,
the fsync): rows commit with no wait and never cut a chunk; ``flush`` returns once
everything so far is durable; background errors reach the producer on its next call and
through ``on_error``.

This module imports neither placement's process side: ``process._main`` builds on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from telemetry import (
    EpisodeEnded,
    EpisodeStarted,
    RunEnded,
    RunStarted,
    SinkMetrics,
    Step,
    StepBatch,
    StreamFrame,
    StreamFrames,
    StreamStarted,
    TelemetryDBSink,
)
from telemetry.jsonsafe import dumps

from .._closing import close_all
from .._format import RENDER_STREAM, RecordType, store_tag
from .._format.steps import StepMeta
from ..disk._lock import StoreLock
from ..disk._refs import FrameRef
from ..errors import QueueFull
from ..settings import Settings
from ._chunks import Chunk
from .service import FrameStorageService, MetaRecord, ServiceMetrics

__all__ = ["Storage", "ThreadStorage", "chunk_rows"]

OnError = Callable[[BaseException], None]


class Storage(Protocol):
    """What ``Recorder`` needs from its storage, wherever it runs."""

    #: The storage process's pid; ``None`` for the thread placement.
    pid: int | None

    @property
    def batch_size(self) -> int:
        """Rows the sink commits at a time."""
        ...

    def put(
        self,
        frame: np.ndarray,
        key: tuple[int, int],
        step: StepMeta | None,
        stream: int = 0,
        row_shape: str | None = None,
        *,
        owned: bool = False,
    ) -> FrameRef:
        """Accept one frame (validated and copied before it returns) and its step's
        metadata (for the segment's steps block and the step's row; None for a frame of
        another stream than render, index ``stream``, whose own shape is ``row_shape``).
        ``owned``: the caller hands the frame over and will not change it; a placement
        may then keep it instead of copying it (the thread placement does)."""
        ...

    def put_step(self, step: StepMeta) -> None:
        """A step recorded without a frame: its metadata for the segment."""
        ...

    def put_many(
        self,
        frames: Sequence[np.ndarray | None],
        keys: Sequence[tuple[int, int]],
        steps: Sequence[StepMeta | None],
        streams: Sequence[int] | None = None,
        row_shapes: Sequence[str | None] | None = None,
        *,
        owned: bool = False,
    ) -> list[FrameRef | None]:
        """Accept a batch of frames (``None`` entries: no frame) and their steps;
        ``streams``: each frame's stream index (0: render), ``row_shapes`` the own shape
        of each frame of another stream; ``owned``: as ``put``'s, for every frame."""
        ...

    def offer(self, event: Any, timeout: float | None = None) -> bool:
        """Queue a telemetry event for the sink (the hub's durable subscriber)."""
        ...

    def set_batch_size(self, rows: int) -> None:
        """Change the rows per commit."""
        ...

    def write_note(
        self, records: list[bytes], first_id: int, timeout: float | None = None
    ) -> tuple[int, int]:
        """Have the writer (the holder of the writer lock, and of the next segment
        ids) write a note segment of ``records`` (an ``rm``'s tombstone) at an id of
        ``first_id`` or above; returns ``(segment id, size)`` once it is sealed and
        durable. The recording goes on meanwhile."""
        ...

    def flush_frames(self, timeout: float | None = None) -> None:
        """Return once every frame put so far is written (and fsynced unless ``fast``)."""
        ...

    def flush(self, timeout: float | None = None) -> None:
        """Return once everything so far is durable: frames, then their rows."""
        ...

    def frame_metrics(self) -> ServiceMetrics:
        """The frame writer's numbers."""
        ...

    def queue_waits(self) -> int:
        """Calls so far that waited for room in the frame queue (one counter read)."""
        ...

    def sink_metrics(self) -> SinkMetrics:
        """The SQLite sink's numbers."""
        ...

    def close(self) -> None:
        """Commit everything, stop, release the writer lock; raises the first error."""
        ...


def chunk_rows(chunk: Chunk) -> list[Step | StepBatch | StreamFrames]:
    """The catalogue rows of a written chunk, as sink events: the one place that turns
    the step type (``StepMeta``) into the sink's columns. Stream 0's steps are ONE
    ``StepBatch`` (a ``Step`` each for steps with an observation or a stream sharing
    their render frame, which add rows of their own); another stream's frames are one
    ``StreamFrames``. A step whose frame is in the chunk points at ``(segment, chunk
    offset, slot)``."""
    if chunk.stream_index:
        return [_stream_frames(chunk)] if chunk.refs else []
    steps = chunk.steps
    if not steps:
        return []
    # (list comprehensions over the steps: the writer thread's per-step Python; they
    # measured twice as fast as generator expressions or attrgetter tuples here)
    has_frame = [s.has_frame for s in steps]
    refs = chunk.refs
    if len(refs) == len(steps) and all(has_frame):  # the common case: a frame each
        frames = [r.location for r in refs]
    else:
        located = iter(refs)
        frames = [next(located).location if h else None for h in has_frame]
    if any([s.shared for s in steps]) or [s.observation for s in steps].count(None) != len(steps):
        return _step_each(steps, frames)
    return [_step_batch(steps, frames)]


def _stream_frames(chunk: Chunk) -> StreamFrames:
    """The frames of a chunk of a stream other than render."""
    refs = chunk.refs
    assert chunk.row_shapes is not None
    return StreamFrames(
        chunk.key,
        chunk.stream_index,
        tuple(r.key[1] for r in refs),
        tuple(r.location for r in refs),  # type: ignore[misc]
        tuple(chunk.row_shapes),
    )


def _step_each(steps: Sequence[StepMeta], frames: list) -> list[Step]:
    """A ``Step`` per step, with the streams sharing its render frame and its
    observation (rows of their own)."""
    return [
        Step(
            s.episode_id,
            s.step,
            s.action,
            0.0 if s.reward is None else s.reward,
            s.terminated,
            s.truncated,
            s.info,
            0.0 if s.wall_time is None else s.wall_time,
            loc,
            s.frame_shape,
            streams=tuple(StreamFrame(i, loc, s.frame_shape) for i in s.shared),
            observation=s.observation,
        )  # fmt: skip
        for s, loc in zip(steps, frames, strict=True)
    ]


def _step_batch(steps: Sequence[StepMeta], frames: list) -> StepBatch:
    """The steps as one ``StepBatch`` (columns)."""
    rewards = [s.reward for s in steps]
    if None in rewards:
        rewards = [0.0 if r is None else r for r in rewards]
    walls = [s.wall_time for s in steps]
    if None in walls:
        walls = [0.0 if w is None else w for w in walls]
    return StepBatch(
        tuple([s.episode_id for s in steps]),
        tuple([s.step for s in steps]),
        tuple([s.action for s in steps]),
        tuple(rewards),
        tuple([s.terminated for s in steps]),
        tuple([s.truncated for s in steps]),
        tuple([s.info for s in steps]),
        walls[0],
        tuple(frames),
        tuple([s.frame_shape for s in steps]),
        wall_times=tuple(walls),
    )


def _located(frames: list[object]) -> list[object]:
    """The sink's ``resolve_frames``: rows arrive with their frames' locations."""
    return frames


class ThreadStorage:
    """The frame writer and the SQLite sink as threads of this process.

    Args:
        root: the store directory (the writer lock is taken here).
        db_path: the store's ``framestore.db``.
        s: the recording's settings.
        on_error: called from a background thread when the writer or the sink fails.
        on_sink_error: called instead of ``on_error`` when the sink fails.
        on_written: called with each chunk once its rows went to the sink (the
            storage process frees the chunk's shared-memory slot).
        on_committed: passed to ``TelemetryDBSink``.
        sink_queue: the sink's bound in rows (default ``s.sink_queue``).
        store_id: the store's id (``meta.store_id``): segments are tagged with it and
            their ``EPISODE`` records name it.
        first_segment_id: the lowest id the writer's segments take (the caller's
            ``bookkeeping.free_segment_id``: above the ids a killed ``gc`` reserved).
    """

    def __init__(
        self,
        root: Path,
        db_path: Path,
        s: Settings,
        on_error: OnError,
        *,
        on_written: Callable[[Chunk], None] | None = None,
        on_committed: Callable[[int], None] | None = None,
        sink_queue: int | None = None,
        on_sink_error: OnError | None = None,
        store_id: str | None = None,
        first_segment_id: int = 0,
    ):
        self._store_id = store_id
        self._codec = {"name": s.codec, "level": s.level}
        self._runs: dict[int, dict] = {}  # run id -> the run's fields for EPISODE records
        self._episodes: dict[int, dict] = {}  # open episode -> its EPISODE record's fields
        self._on_written = on_written
        self._sink_timeout = s.block_timeout
        # The writer lock is this object's, not the service's: it is held until the
        # sink committed the last rows, which come after the writer stopped.
        self._lock = StoreLock(root)
        self._lock.acquire()
        try:
            self._service = self._start_service(root, s, on_error, store_id, first_segment_id)
        except BaseException:
            self._lock.release()
            raise
        try:
            self._sink = TelemetryDBSink(
                db_path,
                profile=s.durability,
                batch_size=s.batch_size,
                checkpoint_interval=s.checkpoint_interval,
                max_queue=sink_queue or s.sink_queue,
                policy="block",
                block_timeout=s.block_timeout,
                resolve_frames=_located,
                on_error=on_sink_error or on_error,
                on_committed=on_committed,
            )
        except BaseException:
            close_all((self._service.close, self._lock.release))
            raise
        self.pid: int | None = None
        # ``put`` is the service's own (one call less per frame, the same checks)
        self.put = self._service.put  # type: ignore[method-assign]

    def _start_service(
        self, root: Path, s: Settings, on_error: OnError, store_id: str | None, first_id: int
    ) -> FrameStorageService:
        return FrameStorageService(
            root,
            codec=s.codec,
            level=s.level,
            chunk_frames=s.chunk_frames,
            part_frames=s.part_frames,
            segment_bytes=s.segment_bytes,
            queue_frames=s.queue_frames,
            queue_bytes=s.queue_bytes,
            policy=s.policy,
            block_timeout=s.block_timeout,
            durability=s.durability,
            compress_threads=s.compress_threads,
            max_latency=s.max_latency,
            on_error=on_error,
            on_written=self._rows_of,
            on_meta=self._event_of,
            store_tag=store_tag(store_id),
            first_segment_id=first_id,
            lock=False,
        )

    # ----------------------------------------------------------------- frames
    def put(
        self,
        frame: np.ndarray,
        key: tuple[int, int],
        step: StepMeta | None,
        stream: int = 0,
        row_shape: str | None = None,
        *,
        owned: bool = False,
    ) -> FrameRef:
        return self._service.put(frame, key, step, stream, row_shape, owned=owned)

    def put_step(self, step: StepMeta) -> None:
        self._service.put_step(step)

    def put_many(
        self,
        frames: Sequence[np.ndarray | None],
        keys: Sequence[tuple[int, int]],
        steps: Sequence[StepMeta | None],
        streams: Sequence[int] | None = None,
        row_shapes: Sequence[str | None] | None = None,
        *,
        owned: bool = False,
    ) -> list[FrameRef | None]:
        return self._service.put_many(frames, keys, steps, streams, row_shapes, owned=owned)

    def hand_off(self, chunk: Chunk) -> None:
        """A chunk assembled by a producer elsewhere (the storage process's)."""
        self._service.hand_off(chunk)

    def cut(self) -> None:
        self._service.cut()

    def flush_frames(self, timeout: float | None = None) -> None:
        self._service.flush(timeout)

    def frame_metrics(self) -> ServiceMetrics:
        return self._service.metrics()

    def queue_waits(self) -> int:
        return self._service.budget.waits

    def sink_metrics(self) -> SinkMetrics:
        return self._sink.metrics()

    def set_batch_size(self, rows: int) -> None:
        self._sink.set_batch_size(rows)

    def write_note(
        self, records: list[bytes], first_id: int, timeout: float | None = None
    ) -> tuple[int, int]:
        return self._service.write_note(records, first_id, timeout)

    # ----------------------------------------------------------------- writer thread
    def _rows_of(self, chunk: Chunk) -> None:
        """A chunk is written: its rows go to the sink (one offer, one wake-up). The
        writer waits for room in the sink's queue as long as it takes: the producer's
        frame queue, behind it, is what bounds and blocks the producer."""
        for rows in chunk_rows(chunk):
            self._offer_from_writer(rows)
        if self._on_written is not None:
            self._on_written(chunk)

    def _event_of(self, meta: MetaRecord) -> None:
        """A record is appended: the event it came from goes to the sink after the rows
        of the chunks before it (an episode's end after its last steps)."""
        if meta.event is not None:
            self._offer_from_writer(meta.event)

    def _offer_from_writer(self, event: Any) -> None:
        while True:
            try:
                self._sink.offer(event, timeout=self._sink_timeout)
                return
            except QueueFull:
                continue  # the sink is slow, not failed: its failure raises SinkError

    @property
    def batch_size(self) -> int:
        return self._sink.batch_size

    def offer(self, event: Any, timeout: float | None = None) -> bool:
        """An event of the hub's (the sink is its durable subscriber). Steps are not
        taken here: their rows come from their written chunks. A run's or an episode's
        beginning goes to the sink now (before any of its rows); an episode's or the
        run's end goes to the frame writer (``EPISODE_END``, ``RUN_END`` records) and
        reaches the sink once appended, after the rows of the chunks before it."""
        kind = type(event)
        if kind is Step or kind is StepBatch:
            return True  # their rows come from their written chunks
        meta = self._meta_record(event)
        if meta is not None:
            self._service.note(meta)
            if meta.event is not None:
                return True
        return self._sink.offer(event, timeout)

    def _meta_record(self, event: Any) -> MetaRecord | None:
        """The segment record an event makes (docs/FORMAT.md), or None. Values are the
        text the catalogue stores (the sink's ``dumps`` for JSON columns)."""
        kind = type(event)
        if kind is RunStarted:
            self._runs[event.run_id] = {
                "id": event.run_id,
                "env_id": event.env_id,
                "created": event.created,
                "preset": event.preset,
                "host_profile": event.host_profile,
                "durability": event.durability,
                "config": dumps(event.config),
                "env_spec": None if event.env_spec is None else dumps(event.env_spec),
            }
        elif kind is EpisodeStarted:
            e = event
            fields = {
                "stream_key": e.episode_id,
                "store_id": self._store_id,
                "run": self._runs.get(e.run_id, {"id": e.run_id}),
                "episode": {
                    "id": e.episode_id, "idx": e.index, "seed": e.seed, "started": e.started,
                    "sub_env": e.sub_env, "continues_episode": e.continues_episode,
                    "reset_options": e.reset_options,
                },
                "codec": self._codec,
                "streams": [{"name": RENDER_STREAM, "dtype": "uint8", "shape": None}],
            }  # fmt: skip
            self._episodes[e.episode_id] = fields
            return MetaRecord(RecordType.EPISODE, e.episode_id, fields)
        elif kind is StreamStarted:
            # The episode's EPISODE record again, listing one more stream: the writer
            # writes it before the episode's next record (docs/FORMAT.md).
            e = event
            old = self._episodes.get(e.episode_id)
            if old is None:
                return None
            stream = {
                "name": e.name, "dtype": e.dtype,
                "shape": None if e.shape is None else [int(d) for d in e.shape.split("x")],
                "shared_with": e.shared_with,
            }  # fmt: skip
            fields = {**old, "streams": [*old["streams"], stream]}
            self._episodes[e.episode_id] = fields
            return MetaRecord(RecordType.EPISODE, e.episode_id, fields)
        elif kind is EpisodeEnded:
            e = event
            fields = {
                "stream_key": e.episode_id, "episode_id": e.episode_id, "ended": e.ended,
                "status": e.status, "steps": e.steps, "total_reward": e.total_reward,
                "terminated": bool(e.terminated), "truncated": bool(e.truncated),
                "frames_dropped": e.frames_dropped,
            }  # fmt: skip
            self._episodes.pop(e.episode_id, None)
            return MetaRecord(RecordType.EPISODE_END, e.episode_id, fields, event)
        elif kind is RunEnded:
            fields = {"run_id": event.run_id, "ended": event.ended, "stats": dumps(event.stats)}
            return MetaRecord(RecordType.RUN_END, None, fields, event)
        return None

    def flush(self, timeout: float | None = None) -> None:
        self._service.flush(timeout)
        self._sink.flush(timeout)

    def close(self) -> None:
        """Close the writer (it writes every open chunk, their rows going to the sink),
        then the sink (it commits them), then release the writer lock; all three
        happen, the first error is raised."""
        close_all((self._service.close, self._sink.close, self._lock.release))
