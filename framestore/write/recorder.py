"""Recorder: one recording run. The producer-side API of framestore.

``record_step`` validates and copies the frame once, straight into its episode's open
chunk (``_openchunks``); the step's metadata rides with it and becomes a catalogue row
once the chunk is written. It never compresses, writes files or touches SQLite, and
queues nothing and wakes nobody per step; the step reaches the hub only for display
subscribers.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from telemetry import (
    EpisodeEnded,
    EpisodeStarted,
    RunEnded,
    RunStarted,
    SinkMetrics,
    Step,
    StreamFrame,
    StreamStarted,
    TelemetryAsyncHub,
    action_encoder,
    check_reward,
    encode_info,
    space_spec,
)

from .._closing import close_all, close_on_exit
from .._format.steps import StepMeta
from .._format.streams import MAX_STREAMS
from ..catalog import check_id, check_seed, format_shape
from ..disk.segments import next_segment_id
from ..errors import EpisodeNotFound, FrameStoreError, InvalidInput, StoreClosed
from ..settings import Settings, resolve
from ..state.bookkeeping import (
    commit_deletion,
    free_segment_id,
    next_ids,
    plan_tombstone,
    sync_segments,
)
from ..state.merging import refuse_unfinished_merge
from ..state.view import StoreView
from ._batchrows import BatchRows, EpisodeState, check_episode_args
from ._observations import split_observation, with_observation
from ._storage import Storage, ThreadStorage
from ._streams import StreamInput, split_frames
from .service import ServiceMetrics

if TYPE_CHECKING:
    from ..disk._refs import FrameRef
    from ..types import EpisodeInfo

log = logging.getLogger("framestore")


#: The key of the ``reset_options`` stored for options that JSON cannot hold (replay
#: then reports the episode as not replayable).
UNSTORED_OPTIONS = "framestore: options not stored"


def _options_text(options: dict[str, Any]) -> str:
    try:
        return encode_info(options)
    except InvalidInput as e:
        return encode_info({UNSTORED_OPTIONS: str(e)})


def _plan_streams(
    eid: int, st: EpisodeState, extra: tuple[StreamInput, ...], new: dict[str, StreamStarted]
) -> tuple[int, ...]:
    """The episode's index of each stream of ``extra``: a stream the episode has, one
    ``new`` holds (started earlier in the same batch), or the next index, added to
    ``new`` (name -> its ``StreamStarted``; kept and announced by the caller once the
    frames are accepted). Checked first, nothing kept: a stream keeps its dtype (its
    frames are read back as it says), at most ``MAX_STREAMS``."""
    for s in extra:
        dtype = st.stream_dtypes.get(s.name) or (new[s.name].dtype if s.name in new else None)
        if dtype is not None and dtype != s.dtype:
            raise InvalidInput(f"stream {s.name!r} of episode {eid} holds {dtype}, not {s.dtype}")
    fresh = {s.name for s in extra if s.name not in st.streams and s.name not in new}
    if len(st.streams) + len(new) + 1 + len(fresh) > MAX_STREAMS:
        raise InvalidInput(f"episode {eid} would have more than {MAX_STREAMS} streams")
    out = []
    for s in extra:
        index = st.streams.get(s.name)
        if index is None:
            started = new.get(s.name)
            if started is None:
                started = new[s.name] = StreamStarted(
                    eid, len(st.streams) + len(new) + 1, s.name, s.dtype, s.shape,
                    0 if s.shared else None,
                )  # fmt: skip
            index = started.index
        out.append(index)
    return tuple(out)


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


def prepare_recording(
    env_id: str, *, preset: str | None = None, writer: str | None = None
) -> Settings:
    """Load now, once per process, what opening a recorder of ``env_id`` loads on first
    use: the host's settings (``psutil``) and, when the writer runs in a storage process,
    its client (the merge check is imported with this module). Returns the settings a
    recorder would use.

    For interactive programs: opening a recorder runs on a background thread that shares
    the interpreter with the UI, and a module imported there holds the GIL while it
    loads (compiled from source, up to 30 ms a module here). Called where a pause is
    expected (the GUI: when a game starts), the first recording's start imports nothing.

    Raises:
        InvalidInput: an unknown preset or writer, or a bad presets file (as opening the
            recorder would).
    """
    s = resolve(env_id, preset=preset, overrides={"writer": writer} if writer else None).settings
    if s.writer == "process":
        from .process import _client  # noqa: F401 - the storage process's client side
    return s


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
        on_error: called from a background thread if the writer or the sink fails
            (keep it short; close the recorder from the producer's thread, not from it).
        render_fps: the environment's frame rate, stored with the run (exports use it).
        env_spec: how to make the environment again (``verify --replay``), stored with
            the run; ``framestore.envs.env_spec_of(env.spec)`` makes it.
        on_close: called with the recorder once it is closed (``FrameStore`` uses it to
            forget its recorders).
    """

    def __init__(
        self,
        store: StoreView,
        env_id: str,
        *,
        action_space=None,
        preset: str | None = None,
        overrides: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        render_fps: float | None = None,
        env_spec: dict[str, Any] | None = None,
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
        self._encode_action = action_encoder(action_space)
        self._on_error = on_error
        self._on_close = on_close
        self._closed = False
        # held by a deletion and by close(): a deletion never outlives the writer
        self._deleting = threading.Lock()
        self._displays = 0  # display subscribers: steps become Step events only for them

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
                env_spec=env_spec,
            )
        )
        self.current_episode: int | None = None
        self._episode_index = 0
        self._open: dict[int, EpisodeState] = {}  # episodes begun and not yet ended
        self.steps_recorded = 0
        self.episodes_recorded = 0

    def _start_storage(self, store: StoreView, s: Settings) -> None:
        """The frame writer and the SQLite sink (which take the store's writer lock), then
        the hub; on failure everything started is stopped again."""
        store_id = store.catalog.meta.store_id()
        args = (store.root, store.db_path, s, self._background_error)
        # Segments start above the ids a gc killed mid-way reserved (compaction.outputs):
        # recover and gc delete the files there as that gc's leftovers.
        first_id = free_segment_id(store)
        self._storage: Storage
        if s.writer == "process":
            # loaded on first use (``prepare_recording`` loads it ahead): a thread
            # recorder never needs multiprocessing and the ring
            from .process._client import ProcessStorage

            self._storage = ProcessStorage(*args, store_id, first_id)
        else:
            self._storage = ThreadStorage(*args, store_id=store_id, first_segment_id=first_id)
        try:
            # The writer lock is held from here on: ids cannot race with another writer.
            refuse_unfinished_merge(store)
            # The writer took max(first_id, the files' next id) under the lock; a gc
            # killed before the lock was taken may have reserved ids above both.
            if free_segment_id(store) > max(first_id, next_segment_id(store.root)):
                raise InvalidInput(
                    "a gc stopped while this recording started; run `framestore recover` first"
                )
            # Episode ids start above any id a crashed writer left in segments, so frames
            # of two recordings never share one (recover tells them apart by it).
            self.run_id, self._next_episode_id = next_ids(store)
            self._first_episode_id = self._next_episode_id
            self._hub = TelemetryAsyncHub()
            self._hub.subscribe("db", self._storage, policy="durable")  # bounded by its queue
        except BaseException:
            self._storage.close()
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
    def _background_error(self, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(exc)

    # ----------------------------------------------------------------- producer API
    def begin_episode(
        self,
        seed: int | None = None,
        *,
        sub_env: int | None = None,
        continues: int | None = None,
        reset_options: dict[str, Any] | None = None,
    ) -> int:
        """Start THE current episode (ending an open one as interrupted); returns its id.
        ``record_step`` and ``end_episode`` then work on it. See ``open_episode`` for the
        arguments."""
        self._check_open()
        check_episode_args(seed, sub_env, continues)
        seed = check_seed(seed)  # before anything is queued: SQLite holds 64-bit integers
        if self.current_episode is not None:
            self.end_episode(status="interrupted")
        eid = self.open_episode(
            seed, sub_env=sub_env, continues=continues, reset_options=reset_options
        )
        self.current_episode = eid
        return eid

    def open_episode(
        self,
        seed: int | None = None,
        *,
        sub_env: int | None = None,
        continues: int | None = None,
        reset_options: dict[str, Any] | None = None,
        defer: bool = False,
    ) -> int:
        """Start an episode that runs alongside others (a vector sub-environment's);
        record into it with ``record_steps`` and end it with ``close_episode``.

        Args:
            seed: the seed its ``reset`` was given (None: none).
            sub_env: the vector sub-environment playing it.
            continues: the episode of the same (sub-)environment it follows without a
                seed of its own (an autoreset, or ``reset()`` without a seed): replay
                plays that episode first.
            reset_options: the ``options`` its ``reset`` was given.
            defer: the episode reaches the store with its first rows that
                ``record_steps`` accepts; closed before that, it leaves no trace (a
                refused reset row leaves no empty episode behind).
        """
        self._check_open()
        check_episode_args(seed, sub_env, continues)
        seed = check_seed(seed)  # before anything is queued: SQLite holds 64-bit integers
        options = None if reset_options is None else _options_text(reset_options)
        eid = self._next_episode_id
        start = EpisodeStarted(
            episode_id=eid,
            run_id=self.run_id,
            index=self._episode_index,
            seed=seed,
            started=time.time(),
            sub_env=None if sub_env is None else int(sub_env),
            continues_episode=None if continues is None else int(continues),
            reset_options=options,
        )
        self._next_episode_id += 1
        state = EpisodeState()
        if defer:
            state.start = start
        else:
            self._hub.publish(start)
            self._episode_index += 1
        self._open[eid] = state
        return eid

    def _publish_starts(self, states: Sequence[EpisodeState]) -> None:
        """The deferred ``EpisodeStarted`` of episodes whose first rows were accepted."""
        for st in states:
            if st.start is not None:
                self._hub.publish(replace(st.start, index=self._episode_index))
                self._episode_index += 1
                st.start = None

    def record_step(
        self,
        frame: np.ndarray | None = None,
        action: Any = None,
        reward: float = 0.0,
        terminated: bool = False,
        truncated: bool = False,
        info: dict[str, Any] | None = None,
        *,
        frames: dict[str, np.ndarray | None] | None = None,
        observation: Any = None,
        owned: bool = False,
    ) -> int:
        """Record one step of the current episode; returns its step index. Never blocks
        on disk work (only, under the ``block`` policy, on a full queue, up to the block
        timeout).

        ``frame`` is the step's ``render`` frame. ``frames={"render": f, "observation":
        o, ...}`` records several named streams instead (each compressed in its own
        chunks; a frame equal to the step's render frame is stored once and both
        streams point at it; read them back with ``FrameStore.read_frame(...,
        stream=name)``). Stream frames are uint8 arrays of 2 or more dimensions (frame
        stacks such as ``(4, 84, 84)`` included).

        ``observation``: the step's observation (an array, or a Dict space's dict of
        them; ``RecordFrames(observations=True)`` passes it). Image entries (uint8, 2 or
        more dimensions) become frame streams (``observation``, or ``observation.<key>``
        for a dict's), small other entries (up to 1 KiB each: state vectors, scalars) go
        into the step row as typed binary, larger ones into a stream of their bytes. Read
        it back with ``FrameStore.read_observation``.

        ``owned=True`` hands ``frame`` over: framestore may keep that very array until
        its chunk is written instead of copying it, and you promise that nothing
        changes it from now on (pass it for an array made for this call, such as a new
        ``env.render()`` result, never for a buffer the caller refills; ``RecordFrames``
        does it for fresh render arrays only). The thread placement then skips the copy
        (a C-contiguous frame only; others are copied); the storage process always
        copies into shared memory, and so are the frames of ``frames=`` and
        ``observation`` streams. The queue's bounds count a kept frame's bytes.

        Everything is validated before anything is queued: a bad frame, stream name,
        action, reward or info raises ``InvalidInput`` (or a subclass) and records
        nothing.
        """
        if self._closed:
            self._check_open()
        if self.current_episode is None:
            raise InvalidInput("record_step() before begin_episode()")
        extra: tuple[StreamInput, ...] = ()
        if frames is not None:
            frame, extra = split_frames(frame, frames)
        inline = None
        if observation is not None:
            parts = split_observation(observation)
            extra, inline = with_observation(extra, parts, frame), parts.inline
        reward = check_reward(reward)
        action_text = None if action is None else self._encode_action(action)
        info_text = encode_info(info)
        eid = self.current_episode
        st = self._open[eid]
        step = st.step
        ref = None
        streams: tuple[StreamFrame, ...] = ()
        term, trunc = bool(terminated), bool(truncated)
        wall = time.time()
        # the render-only path does none of the streams' work
        indexes = self._stream_indexes(eid, st, extra) if extra else ()
        if extra:
            meta = StepMeta(eid, step, action_text, reward, term, trunc, info_text, wall, None)
            meta.observation = inline
            ref, streams = self._put_streams(frame, meta, extra, indexes)
            if ref is not None and ref.dropped:
                st.dropped += 1
            shape = meta.frame_shape
        elif frame is not None:
            shape = format_shape(getattr(frame, "shape", ()))
            meta = StepMeta(eid, step, action_text, reward, term, trunc, info_text, wall, shape)
            if inline is not None:
                meta.observation = inline  # before the put: the writer may pack it at once
            ref = self._storage.put(frame, (eid, step), meta, owned=owned)
            if ref.dropped:
                st.dropped += 1
        else:
            shape = None
            meta = StepMeta(eid, step, action_text, reward, term, trunc, info_text, wall, None)
            meta.observation = inline
            self._storage.put_step(meta)
        if self._displays:  # an event object only when someone displays it
            self._hub.publish(
                Step(eid, step, action_text, reward, term, trunc, info_text, wall, ref, shape,
                     streams=streams, observation=inline)
            )  # fmt: skip
        st.advance(reward, term, trunc, 1)
        self.steps_recorded += 1
        return step

    def _stream_indexes(
        self, eid: int, st: EpisodeState, extra: tuple[StreamInput, ...]
    ) -> tuple[int, ...]:
        """The episode's index of each stream of ``extra``; a stream's first frame gives
        it the next index, announced to the sink and the segments (``StreamStarted``)."""
        new: dict[str, StreamStarted] = {}
        indexes = _plan_streams(eid, st, extra, new)
        self._start_streams(st, new)
        return indexes

    def _start_streams(self, st: EpisodeState, new: dict[str, StreamStarted]) -> None:
        """Keep and announce the streams ``_plan_streams`` gave an episode."""
        for started in new.values():
            st.streams[started.name] = started.index
            st.stream_dtypes[started.name] = started.dtype
            self._hub.publish(started)

    def _put_streams(
        self,
        frame: np.ndarray | None,
        meta: StepMeta,
        extra: tuple[StreamInput, ...],
        indexes: tuple[int, ...],
    ) -> tuple[FrameRef | None, tuple[StreamFrame, ...]]:
        """A step's frames of every stream in one ``put_many`` (all queued or none: a
        full queue never leaves half a step); a frame equal to the render frame is not
        put again, it points at the render frame's ref. Returns the render ref and the
        other streams' frames."""
        key = (meta.episode_id, meta.step)
        if frame is not None:
            meta.frame_shape = format_shape(frame.shape)
            meta.shared = tuple(i for s, i in zip(extra, indexes, strict=True) if s.shared)
        own = [(s, i) for s, i in zip(extra, indexes, strict=True) if not s.shared]
        refs = self._storage.put_many(
            [frame, *(s.frame for s, _i in own)],
            [key] * (1 + len(own)),
            [meta, *(None for _ in own)],
            streams=[0, *(i for _s, i in own)],
            row_shapes=[None, *(s.shape for s, _i in own)],
        )
        render, mine = refs[0], dict(zip((i for _s, i in own), refs[1:], strict=True))
        streams = tuple(
            StreamFrame(i, render if s.shared else mine[i], s.shape)
            for s, i in zip(extra, indexes, strict=True)
        )
        return render, streams

    def record_steps(
        self,
        episode_ids: Sequence[int],
        frames: np.ndarray
        | Sequence[np.ndarray | dict[str, np.ndarray | None] | None]
        | None = None,
        actions: Any = None,
        rewards: Any = None,
        terminated: Any = None,
        truncated: Any = None,
        infos: Sequence[dict[str, Any] | None] | None = None,
        *,
        observations: Sequence[Any] | None = None,
        owned: bool = False,
    ) -> list[int]:
        """Record one step of each of several open episodes (``open_episode``) at once:
        one validation, one enqueue of the frames and one event for the whole batch.
        Returns the step index of each row.

        Args:
            episode_ids: the episode of each row (N rows).
            frames: an ``(N, H, W[, C])`` uint8 array, or N frames (``None``: no frame for
                that row), or ``None``. An entry may be a ``{stream: frame}`` dict
                instead, as ``record_step(frames=...)`` takes it (its ``"render"`` is the
                row's render frame).
            actions: N actions (an array whose first axis is N, or a sequence; ``None``
                entries for reset rows), or ``None``.
            rewards, terminated, truncated: N values each, or ``None`` (0 / False).
            infos: N dicts (or ``None`` entries), or ``None``.
            observations: N observations (``None`` entries: none for that row), each
                recorded as ``record_step(observation=...)`` records one (image
                entries as frame streams, one equal to its row's render frame stored
                once; small other entries in the row as typed binary); ``None``.
            owned: hand the render frames over (``record_step``'s ``owned``): a
                sequence of separate frames may then be kept without a copy; the rows
                of one ``(N, H, W[, C])`` array are copied (they share its memory), and
                so is every frame of a batch with observation streams.

        Everything is validated before anything is queued; under the ``block`` policy the
        call waits until every frame fits the queue, under ``drop`` each frame that does
        not fit is dropped (and counted in its episode's ``frames_dropped``).
        """
        self._check_open()
        rows = BatchRows.build(
            episode_ids, frames, actions, rewards, terminated, truncated, infos, self._space,
            observations,
        )  # fmt: skip
        states = [self._open.get(e) for e in rows.episode_ids]
        if None in states:
            missing = rows.episode_ids[states.index(None)]
            raise InvalidInput(f"episode {missing} is not open (open_episode() first)")
        steps = rows.step_numbers(states)
        wall = time.time()
        metas = rows.metas(steps, wall)
        new: dict[int, dict[str, StreamStarted]] = {}
        if any(rows.extras) or rows.inlines.count(None) != len(rows.inlines):
            refs = self._put_batch_streams(rows, states, metas, new)  # type: ignore[arg-type]
        else:
            keys = list(zip(rows.episode_ids, steps, strict=True))
            refs = self._storage.put_many(
                rows.frames, keys, metas, owned=owned and not isinstance(frames, np.ndarray)
            )
        self._publish_starts(states)  # type: ignore[arg-type]
        for eid, started in new.items():  # after their episode's start
            self._start_streams(self._open[eid], started)
        for st, ref, reward, term, trunc in zip(
            states, refs, rows.rewards, rows.terminated, rows.truncated, strict=True
        ):
            st.advance(reward, term, trunc, 1)
            if ref is not None and ref.dropped:
                st.dropped += 1
        self._hub.publish(rows.event(steps, refs, wall))
        self.steps_recorded += len(steps)
        return steps

    def _put_batch_streams(
        self,
        rows: BatchRows,
        states: list[EpisodeState],
        metas: list[StepMeta],
        new: dict[int, dict[str, StreamStarted]],
    ) -> list[FrameRef | None]:
        """A batch whose rows carry streams or observations: every row's frames of every
        stream in one ``put_many`` (all queued or none), a frame equal to its row's
        render frame pointing at the render frame's ref (``_put_streams`` for a batch).
        ``new`` gets each episode's streams started by the batch (kept and announced by
        the caller once the frames are accepted). Returns each row's render ref."""
        frames: list[np.ndarray | None] = []
        keys: list[tuple[int, int]] = []
        steps: list[StepMeta | None] = []
        indexes: list[int] = []
        shapes: list[str | None] = []
        firsts = []
        for render, extra, inline, st, meta in zip(
            rows.frames, rows.extras, rows.inlines, states, metas, strict=True
        ):
            eid = meta.episode_id
            own = _plan_streams(eid, st, extra, new.setdefault(eid, {}))
            meta.observation = inline
            if render is not None:
                meta.shared = tuple(i for s, i in zip(extra, own, strict=True) if s.shared)
            firsts.append(len(frames))
            mine = [(s, i) for s, i in zip(extra, own, strict=True) if not s.shared]
            frames += [render, *(s.frame for s, _i in mine)]
            keys += [(eid, meta.step)] * (1 + len(mine))
            steps += [meta, *(None for _ in mine)]
            indexes += [0, *(i for _s, i in mine)]
            shapes += [None, *(s.shape for s, _i in mine)]
        refs = self._storage.put_many(frames, keys, steps, streams=indexes, row_shapes=shapes)
        return [refs[i] for i in firsts]

    def end_episode(self, status: str | None = None) -> int | None:
        """Close the current episode (``complete`` by default); returns its id."""
        self._check_open()
        eid = self.current_episode
        if eid is None:
            return None
        self.close_episode(eid, status)
        return eid

    def close_episode(self, episode_id: int, status: str | None = None) -> None:
        """End an open episode (``complete`` by default)."""
        self._check_open()
        status = status or "complete"
        if status not in ("complete", "interrupted", "trimmed"):
            raise InvalidInput(
                f"episode status must be complete, interrupted or trimmed, not {status!r}"
            )
        st = self._open.get(episode_id)
        if st is None:
            raise InvalidInput(f"episode {episode_id} is not open")
        if st.start is not None:  # deferred and never given a row: it never existed
            del self._open[episode_id]
            return
        self._hub.publish(
            EpisodeEnded(
                episode_id=episode_id,
                ended=time.time(),
                status=status,
                steps=st.step,
                total_reward=st.total_reward if math.isfinite(st.total_reward) else 0.0,
                terminated=st.terminated,
                truncated=st.truncated,
                frames_dropped=st.dropped,
                commit_now=len(self._open) == 1,
            )
        )
        del self._open[episode_id]
        if episode_id == self.current_episode:
            self.current_episode = None
        self.episodes_recorded += 1

    @property
    def _step(self) -> int:
        """The next step index of the current episode (0 when none is open)."""
        st = self._open.get(self.current_episode) if self.current_episode is not None else None
        return 0 if st is None else st.step

    @property
    def writer_pid(self) -> int | None:
        """The storage process's pid (``writer="process"``); ``None`` when the writer
        and the sink are threads of this process."""
        return self._storage.pid

    @property
    def open_episodes(self) -> list[int]:
        """Episodes begun and not ended yet."""
        return list(self._open)

    def subscribe(
        self, name: str, callback: Callable[[Any], None], *, maxlen: int | None = None
    ) -> None:
        """Add a display subscriber (HUD, live plots): it gets every event on its own
        thread with a drop-oldest buffer, so it can never slow the recording."""
        self._hub.subscribe(
            name, callback, maxlen=maxlen or self.settings.hub_buffer, policy="drop_oldest"
        )
        self._displays += 1

    def flush(self, timeout: float | None = None) -> None:
        """Return once everything recorded so far is durable: frames written (fsynced
        unless ``fast``) and their rows committed."""
        self._check_open()
        self._storage.flush(timeout)

    @property
    def queue_waits(self) -> int:
        """Calls so far that waited for room in the frame queue (``block`` policy): one
        counter read, cheap enough to take around every ``record_step`` (the
        ``metrics()`` snapshot takes locks); counted only on the waiting path."""
        return self._storage.queue_waits()

    def delete_episodes(
        self, episode_ids: Iterable[int], *, timeout: float | None = None
    ) -> list[EpisodeInfo]:
        """Delete finished episodes of the store while this recorder records into it
        (``FrameStore.delete_episodes`` comes here when this recorder holds the store;
        any thread may call it). The deletion is ``rm``'s (docs/RELIABILITY.md, "The
        catalogue itself lost", Deletions): its tombstone, a note segment of
        ``DELETED`` records, is written by this recorder's writer (the one holder of the
        writer lock, in either placement), sealed and fsynced; then ONE SQLite
        transaction marks the episodes deleted. The tombstone is the commit point:
        killed between the two, ``recover`` finishes the deletion. The recording goes on
        meanwhile.

        Returns the episodes deleted (as they were). Raises ``InvalidInput`` for an
        episode this recorder has open (being recorded: end it first),
        ``EpisodeNotFound`` for an unknown or deleted id (before anything changes),
        ``StoreClosed`` once the recorder is closed, the writer's error if it failed,
        the tombstone's own error (nothing changed), ``QueueFull`` when the writer has
        not taken the tombstone up within ``timeout`` seconds (it is cancelled: nothing
        changed), and ``FrameStoreError`` when the tombstone is on disk but the SQLite
        commit failed (the deletion took effect; ``recover`` finishes it). A storage
        process that died or gave no answer leaves the tombstone's fate unknown; its
        error says so.
        """
        ids = list(dict.fromkeys(check_id(i, "episode id") for i in episode_ids))
        with self._deleting:
            self._check_open()
            live = [i for i in ids if i in self._open]
            if live:
                # short: the GUI shows it on one line of its Replay tab
                raise InvalidInput(f"episode {live[0]} is being recorded; end it first")
            if not ids:
                return []
            mine = range(self._first_episode_id, self._next_episode_id)
            known = [self.store.catalog.episodes.get(i) for i in ids]
            if any(
                i in mine and (ep is None or ep.status == "recording")
                for i, ep in zip(ids, known, strict=True)
            ):
                # ended here, its rows or its end not committed yet: the tombstone
                # lists the segments its rows name, so they must all be committed
                self._storage.flush(timeout)
            eps = self._finished(ids)
            tomb = plan_tombstone(self.store, ids)
            segment, size = self._storage.write_note(tomb.records, tomb.first_id, timeout)
            try:
                commit_deletion(self.store, tomb, segment, size)
            except Exception as e:
                # The tombstone is the commit point: the rm happened. Its note segment
                # stays without a row (close() does not register it): verify flags it,
                # gc refuses, and recover finishes the deletion.
                raise FrameStoreError(
                    f"episodes {', '.join(map(str, ids))} are deleted in the segments (a "
                    f"tombstone, segment {segment}) but the catalogue's commit failed ({e}); "
                    "`framestore recover` finishes the deletion once this recording ends "
                    "(verify and gc say so until then)"
                ) from e
        return eps

    def _finished(self, ids: list[int]) -> list[EpisodeInfo]:
        """The catalogue's records of ``ids`` (``EpisodeNotFound`` for an unknown or
        deleted one)."""
        eps = []
        for eid in ids:
            ep = self.store.catalog.episodes.get(eid)
            if ep is None or ep.status == "deleted":
                raise EpisodeNotFound(eid)
            eps.append(ep)
        return eps

    def metrics(self) -> RecorderMetrics:
        return RecorderMetrics(
            frames=self._storage.frame_metrics(),
            sink=self._storage.sink_metrics(),
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
        with self._deleting:  # a deletion in flight finishes first
            if not self._closed:
                self._close()

    def _close(self) -> None:
        # Episodes first, then the frames, so the run's stored stats (frames written,
        # bytes out) are final, not a snapshot taken while the writer was still busy.
        close_all(
            [
                *(
                    lambda eid=eid: self.close_episode(eid, status="interrupted")
                    for eid in list(self._open)
                ),
                self._storage.flush_frames,
                self._publish_run_end,
                self._mark_closed,
                self._storage.close,
                self._hub.close,
                lambda: sync_segments(self.store),
                lambda: self._on_close(self) if self._on_close is not None else None,
            ]
        )

    def _mark_closed(self) -> None:
        self._closed = True

    def _publish_run_end(self) -> None:
        m = self._storage.frame_metrics()
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
        self._hub.publish(RunEnded(run_id=self.run_id, ended=time.time(), stats=stats))

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        close_on_exit(self.close, failing=exc_type is not None)
