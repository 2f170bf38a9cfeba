"""Recorder: one recording run. The producer-side API of framestore.

``record_step`` validates, copies the frame into the writer's queue and publishes the
step to the hub; it never compresses, writes files or touches SQLite.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from telemetry import (
    EpisodeEnded,
    EpisodeStarted,
    RunEnded,
    RunStarted,
    SinkMetrics,
    Step,
    TelemetryAsyncHub,
    TelemetryDBSink,
    check_reward,
    encode_action,
    encode_info,
    space_spec,
)

from .catalog import check_seed
from .errors import InvalidInput, StoreClosed
from .service import FrameRef, FrameStorageService, ServiceMetrics
from .settings import Settings, resolve

if TYPE_CHECKING:
    from .store import FrameStore

log = logging.getLogger("framestore")


@dataclass(frozen=True)
class RecorderMetrics:
    """What a HUD shows: the frame writer's and the SQLite sink's numbers together."""

    frames: ServiceMetrics
    sink: SinkMetrics
    steps_recorded: int
    episodes_recorded: int
    durability: str
    preset: str | None
    host_profile: str | None

    def as_dict(self) -> dict[str, Any]:
        d = {
            "frames": asdict(self.frames),
            "steps_recorded": self.steps_recorded,
            "episodes_recorded": self.episodes_recorded,
            "durability": self.durability,
            "preset": self.preset,
            "host_profile": self.host_profile,
        }
        d["frames"]["compression_ratio"] = self.frames.compression_ratio
        d["sink"] = asdict(self.sink)
        return d


class Recorder:
    """Records one run (one environment id) into a ``FrameStore``.

    Args:
        store: the open ``FrameStore``.
        env_id: the environment id, stored with the run.
        action_space: the Gymnasium action space; actions are then checked against it and
            read back as the same types.
        preset: a named preset (see ``framestore presets``); ``None`` picks the game's.
        overrides: settings that beat the preset (``codec``, ``level``, ``policy``,
            ``durability``, ``queue_bytes``, ``batch_size``, ...).
        config: free-form JSON-able run configuration stored with the run.
        on_error: called from a background thread if the writer or the sink fails.
        render_fps: the environment's frame rate, stored with the run (exports use it).
        on_close: called with the recorder once it is closed (``FrameStore`` uses it to
            forget its recorders).
    """

    def __init__(
        self,
        store: FrameStore,
        env_id: str,
        *,
        action_space=None,
        preset: str | None = None,
        overrides: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        render_fps: float | None = None,
        on_close: Callable[[Recorder], None] | None = None,
    ):
        if not isinstance(env_id, str) or not env_id:
            raise InvalidInput(f"env_id must be a non-empty string, got {env_id!r}")
        self.store = store
        self.env_id = env_id
        self.resolved = resolve(env_id, preset=preset, overrides=overrides)
        s = self.resolved.settings
        self.settings = s
        self._space = action_space
        self._spec = space_spec(action_space) if action_space is not None else None
        self._on_error = on_error
        self._on_close = on_close
        self._closed = False
        self._lock = threading.Lock()

        self._start_storage(store, s)
        self._hub.publish(
            RunStarted(
                run_id=self.run_id,
                env_id=env_id,
                created=time.time(),
                preset=self.resolved.preset,
                host_profile=self.resolved.host_profile,
                durability=s.durability,
                config=self._run_config(config, render_fps),
            )
        )
        self.current_episode: int | None = None
        self._episode_index = 0
        self._step = 0
        self._total_reward = 0.0
        self._last_term = False
        self._last_trunc = False
        self._dropped_in_episode = 0
        self.steps_recorded = 0
        self.episodes_recorded = 0

    def _start_storage(self, store: FrameStore, s: Settings) -> None:
        """The frame writer (which takes the store's writer lock), then the SQLite sink
        and the hub; on failure everything started is stopped again."""
        self._service = FrameStorageService(
            store.root,
            codec=s.codec,
            level=s.level,
            chunk_frames=s.chunk_frames,
            segment_bytes=s.segment_bytes,
            queue_frames=s.queue_frames,
            queue_bytes=s.queue_bytes,
            policy=s.policy,
            block_timeout=s.block_timeout,
            durability=s.durability,
            compress_threads=s.compress_threads,
            on_error=self._background_error,
        )
        try:
            # The writer lock is held from here on: ids cannot race with another writer.
            # Episode ids start above any id a crashed writer left in segments, so frames
            # of two recordings never share one (recover tells them apart by it).
            self.run_id, self._next_episode_id = store.next_ids()
            self._sink = TelemetryDBSink(
                store.db_path,
                profile=s.durability,
                batch_size=s.batch_size,
                checkpoint_interval=s.checkpoint_interval,
                max_queue=s.sink_queue,
                policy="block",
                block_timeout=s.block_timeout,
                resolve_frames=self._resolve_frames,
                on_error=self._background_error,
            )
            self._hub = TelemetryAsyncHub()
            self._hub.subscribe("db", self._sink, policy="durable")  # bounded by max_queue
        except BaseException:
            self._service.close()
            raise

    def _run_config(
        self, config: dict[str, Any] | None, render_fps: float | None
    ) -> dict[str, Any]:
        """What the run row stores: the caller's config, the action space, the frame
        rate and the effective settings."""
        run_config = dict(config or {})
        if self._spec is not None:
            run_config["action_space"] = self._spec
        if render_fps:
            run_config["render_fps"] = render_fps
        run_config["settings"] = asdict(self.settings)
        return run_config

    # ----------------------------------------------------------------- background
    def _resolve_frames(self, frames: list[object]) -> list[tuple[int, int, int] | None]:
        """Runs on the sink thread before each commit: blocks until the batch's frames
        are written to their segment, then hands back their locations."""
        refs = [f for f in frames if isinstance(f, FrameRef)]
        self._service.wait_written(refs)
        return [f.location if isinstance(f, FrameRef) and not f.dropped else None for f in frames]

    def _background_error(self, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(exc)

    # ----------------------------------------------------------------- producer API
    def begin_episode(self, seed: int | None = None) -> int:
        """Start an episode (ending an open one as interrupted); returns its id."""
        self._check_open()
        seed = check_seed(seed)  # before anything is queued: SQLite holds 64-bit integers
        if self.current_episode is not None:
            self.end_episode(status="interrupted")
        eid = self._next_episode_id
        self._hub.publish(
            EpisodeStarted(
                episode_id=eid,
                run_id=self.run_id,
                index=self._episode_index,
                seed=seed,
                started=time.time(),
            )
        )
        self._next_episode_id += 1
        self._episode_index += 1
        self.current_episode = eid
        self._step = 0
        self._total_reward = 0.0
        self._last_term = self._last_trunc = False
        self._dropped_in_episode = 0
        return eid

    def record_step(
        self,
        frame: np.ndarray | None,
        action: Any = None,
        reward: float = 0.0,
        terminated: bool = False,
        truncated: bool = False,
        info: dict[str, Any] | None = None,
    ) -> int:
        """Record one step; returns its step index. Never blocks on disk work (only, under
        the ``block`` policy, on a full queue, up to the block timeout).

        Everything is validated before anything is queued: a bad frame, action, reward
        or info raises ``InvalidInput`` (or a subclass) and records nothing.
        """
        self._check_open()
        if self.current_episode is None:
            raise InvalidInput("record_step() before begin_episode()")
        reward = check_reward(reward)
        action_text = None if action is None else encode_action(action, self._space)
        info_text = encode_info({} if info is None else info)
        eid, step = self.current_episode, self._step
        ref = None
        shape = None
        if frame is not None:
            ref = self._service.put(frame, key=(eid, step))
            shape = "x".join(str(d) for d in ref.shape) if ref.shape is not None else None
            if ref.dropped:
                self._dropped_in_episode += 1
        self._hub.publish(
            Step(
                episode_id=eid,
                step=step,
                action=action_text,
                reward=reward,
                terminated=bool(terminated),
                truncated=bool(truncated),
                info=info_text,
                wall_time=time.time(),
                frame=ref,
                frame_shape=shape,
            )
        )
        self._step += 1
        self._total_reward += reward
        self._last_term, self._last_trunc = bool(terminated), bool(truncated)
        self.steps_recorded += 1
        return step

    def end_episode(self, status: str | None = None) -> int | None:
        """Close the current episode (``complete`` by default); returns its id."""
        self._check_open()
        eid = self.current_episode
        if eid is None:
            return None
        status = status or "complete"
        if status not in ("complete", "interrupted", "trimmed"):
            raise InvalidInput(
                f"episode status must be complete, interrupted or trimmed, not {status!r}"
            )
        self._hub.publish(
            EpisodeEnded(
                episode_id=eid,
                ended=time.time(),
                status=status,
                steps=self._step,
                total_reward=self._total_reward if math.isfinite(self._total_reward) else 0.0,
                terminated=self._last_term,
                truncated=self._last_trunc,
                frames_dropped=self._dropped_in_episode,
            )
        )
        self.current_episode = None
        self.episodes_recorded += 1
        return eid

    def subscribe(
        self, name: str, callback: Callable[[Any], None], *, maxlen: int | None = None
    ) -> None:
        """Add a display subscriber (HUD, live plots): it gets every event on its own
        thread with a drop-oldest buffer, so it can never slow the recording."""
        self._hub.subscribe(
            name, callback, maxlen=maxlen or self.settings.hub_buffer, policy="drop_oldest"
        )

    def flush(self, timeout: float | None = None) -> None:
        """Return once everything recorded so far is durable: frames written (fsynced
        unless ``fast``) and their rows committed."""
        self._check_open()
        self._service.flush(timeout)
        self._sink.flush(timeout)

    def metrics(self) -> RecorderMetrics:
        return RecorderMetrics(
            frames=self._service.metrics(),
            sink=self._sink.metrics(),
            steps_recorded=self.steps_recorded,
            episodes_recorded=self.episodes_recorded,
            durability=self.settings.durability,
            preset=self.resolved.preset,
            host_profile=self.resolved.host_profile,
        )

    # ----------------------------------------------------------------- lifecycle
    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("recorder is closed")

    def close(self) -> None:
        """End an open episode as interrupted, write and commit everything, stop threads.

        Raises the first background error after everything is shut down."""
        if self._closed:
            return
        errors: list[BaseException] = []

        def attempt(fn):
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - shut everything down, then raise
                errors.append(e)

        if self.current_episode is not None:
            attempt(lambda: self.end_episode(status="interrupted"))
        # Write the frames first so the run's stored stats (frames written, bytes out)
        # are final, not a snapshot taken while the writer was still busy.
        attempt(self._service.flush)
        m = self._service.metrics()
        stats = {
            "queue_high_water_frames": m.high_water_frames,
            "queue_high_water_bytes": m.high_water_bytes,
            "queue_frames": m.bound_frames,
            "queue_bytes": m.bound_bytes,
            "max_flush_ms": m.max_flush_ms,
            "dropped": m.frames_dropped,
            "blocked_s": m.blocked_seconds,
            "frames_written": m.frames_written,
            "bytes_in": m.bytes_in,
            "bytes_out": m.bytes_out,
        }
        attempt(
            lambda: self._hub.publish(RunEnded(run_id=self.run_id, ended=time.time(), stats=stats))
        )
        self._closed = True
        attempt(self._sink.close)
        attempt(self._hub.close)
        attempt(self._service.close)
        attempt(self.store.sync_segments)
        if self._on_close is not None:
            self._on_close(self)
        if errors:
            raise errors[0]

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except Exception as e:  # keep the caller's exception, log ours
                log.error("while closing the recorder after an error: %s", e)
