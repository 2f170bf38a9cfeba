"""Where a recording's storage work runs: the frame writer and the SQLite sink.

``Recorder`` talks to one ``Storage`` (``open_storage`` picks it from
``Settings.writer``):

- ``ThreadStorage``: a ``FrameStorageService`` (writer thread + compression pool) and a
  ``TelemetryDBSink`` (SQLite thread) in the producer's process;
- ``ProcessStorage`` (``_storageclient``): the same two, run by a storage process
  (``_storageproc``) that the producer feeds through a shared-memory frame ring and a
  pipe of descriptors.

Both give the same guarantees: a step row commits only after its frame is written,
``flush`` returns once everything so far is durable, background errors reach the producer
on its next call and through ``on_error``.
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
    StreamStarted,
    TelemetryDBSink,
)
from telemetry.jsonsafe import dumps

from ._format import RENDER_STREAM, RecordType, StepMeta, store_tag
from ._refs import FrameRef
from .service import FrameStorageService, MetaRecord, ServiceMetrics
from .settings import Settings

__all__ = ["Storage", "ThreadStorage", "open_storage"]

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
        self, frame: np.ndarray, key: tuple[int, int], step: StepMeta | None, stream: int = 0
    ) -> FrameRef:
        """Accept one frame (validated and copied before it returns) and its step's
        metadata (for the segment's steps block; None for a frame of another stream than
        render, index ``stream``)."""
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
    ) -> list[FrameRef | None]:
        """Accept a batch of frames (``None`` entries: no frame) and their steps;
        ``streams``: each frame's stream index (0: render; the thread placement only)."""
        ...

    def offer(self, event: Any, timeout: float | None = None) -> bool:
        """Queue a telemetry event for the sink (the hub's durable subscriber)."""
        ...

    def offer_row(self, row: tuple) -> None:
        """Queue one step given as the fields of a ``Step``, in order (no event object
        is needed when no display subscriber listens)."""
        ...

    def set_batch_size(self, rows: int) -> None:
        """Change the rows per commit."""
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

    def sink_metrics(self) -> SinkMetrics:
        """The SQLite sink's numbers."""
        ...

    def close(self) -> None:
        """Commit everything, stop, release the writer lock; raises the first error."""
        ...


class ThreadStorage:
    """The frame writer and the SQLite sink as threads of this process.

    Args:
        root: the store directory (the writer lock is taken here).
        db_path: the store's ``framestore.db``.
        s: the recording's settings.
        on_error: called from a background thread when the writer or the sink fails.
        on_sink_error: called instead of ``on_error`` when the sink fails.
        copy_frames, on_written: passed to ``FrameStorageService`` (the storage process
            keeps frames in shared memory and frees a slot once its chunk is written).
        on_committed: passed to ``TelemetryDBSink``.
        sink_queue: the sink's bound in rows (default ``s.sink_queue``).
        store_id: the store's id (``meta.store_id``): segments are tagged with it and
            their ``EPISODE`` records name it.
    """

    def __init__(
        self,
        root: Path,
        db_path: Path,
        s: Settings,
        on_error: OnError,
        *,
        copy_frames: bool = True,
        on_written: Callable[[list[FrameRef]], None] | None = None,
        on_committed: Callable[[int], None] | None = None,
        sink_queue: int | None = None,
        on_sink_error: OnError | None = None,
        store_id: str | None = None,
    ):
        self._store_id = store_id
        self._codec = {"name": s.codec, "level": s.level}
        self._runs: dict[int, dict] = {}  # run id -> the run's fields for EPISODE records
        self._episodes: dict[int, dict] = {}  # open episode -> its EPISODE record's fields
        self._service = FrameStorageService(
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
            on_error=on_error,
            copy_frames=copy_frames,
            on_written=on_written,
            store_tag=store_tag(store_id),
        )
        try:
            self._sink = TelemetryDBSink(
                db_path,
                profile=s.durability,
                batch_size=s.batch_size,
                checkpoint_interval=s.checkpoint_interval,
                max_queue=sink_queue or s.sink_queue,
                policy="block",
                block_timeout=s.block_timeout,
                resolve_frames=self._resolve_frames,
                on_error=on_sink_error or on_error,
                on_committed=on_committed,
            )
        except BaseException:
            self._service.close()
            raise
        self.pid: int | None = None
        self.put = self._service.put
        self.put_step = self._service.put_step
        self.put_many = self._service.put_many
        self.set_batch_size = self._sink.set_batch_size
        self.flush_frames = self._service.flush
        self.frame_metrics = self._service.metrics
        self.sink_metrics = self._sink.metrics
        self.cut = self._service.cut

    @property
    def batch_size(self) -> int:
        return self._sink.batch_size

    def _resolve_frames(self, frames: list[object]) -> list[tuple[int, int, int] | None]:
        """Runs on the sink thread before each commit: blocks until the batch's frames
        are written to their segment, then hands back their locations."""
        refs = [f for f in frames if isinstance(f, FrameRef)]
        self._service.wait_written(refs)
        return [f.location if isinstance(f, FrameRef) and not f.dropped else None for f in frames]

    def offer(self, event: Any, timeout: float | None = None) -> bool:
        """Queue an event for the sink; the run's and episodes' beginnings and ends
        also go to the frame writer (``EPISODE``, ``EPISODE_END``, ``RUN_END`` records),
        in order with the frames put before them."""
        meta = self._meta_record(event)
        if meta is not None:
            self._service.note(meta)
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
            return MetaRecord(RecordType.EPISODE_END, e.episode_id, fields)
        elif kind is RunEnded:
            fields = {"run_id": event.run_id, "ended": event.ended, "stats": dumps(event.stats)}
            return MetaRecord(RecordType.RUN_END, None, fields)
        return None

    def offer_row(self, row: tuple) -> None:
        self._sink.offer(Step(*row))

    def flush(self, timeout: float | None = None) -> None:
        self._service.flush(timeout)
        self._sink.flush(timeout)

    def close(self) -> None:
        """Close the sink (it commits what is queued, waiting for its frames), then the
        writer (seals the segment, unlocks). Both are closed; the first error is raised."""
        errors: list[BaseException] = []
        for close in (self._sink.close, self._service.close):
            try:
                close()
            except BaseException as e:  # noqa: BLE001 - close both, then raise the first
                errors.append(e)
        if errors:
            raise errors[0]


def open_storage(
    root: Path, db_path: Path, s: Settings, on_error: OnError, store_id: str | None = None
) -> Storage:
    """The storage ``s.writer`` asks for, started (the store's writer lock is held)."""
    if s.writer == "process":
        from ._storageclient import ProcessStorage

        return ProcessStorage(root, db_path, s, on_error, store_id)
    return ThreadStorage(root, db_path, s, on_error, store_id=store_id)
