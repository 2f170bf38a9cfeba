"""Ray: read stores as a ``ray.data.Dataset``, record with several Ray actors at once.

Needs the ``ray`` extra (``pip install 'framestore[ray]'``).

``read_store(paths)`` plans on the driver and decodes on the workers. The driver opens
each store read-only once and takes a snapshot of what is committed (episodes and their
committed step counts); it splits that into read tasks (whole episodes grouped, long
episodes cut into step ranges) of about equal rows. Each task opens its store read-only
on its worker, pages through the step rows of its ranges and decodes frames chunk by
chunk, yielding blocks of at most ``block_bytes`` of frames. Stores can be local
directories (shared storage when the cluster has several machines) or published stores
(``s3://...``), read with ranged requests. A store being recorded is read as far as the
driver's snapshot: rows committed later are not in the dataset, rows in it never point
at unwritten bytes.

Rows: the columns of ``framestore.columns`` (store, run and episode ids, step, env id,
action, reward, flags, info) plus ``frame``: the uint8 frame (H, W[, C]) bit-exact.
With frames, steps whose frame was dropped while recording are left out (``frames=False``
lists every step).

``record_parallel`` runs N actors; each records its share of the episodes into its own
store (``OUT/worker-000.store``, ...) with the ordinary recorder: a directory of ordinary
stores, read as one dataset by ``read_store(sorted(OUT.glob("*.store")))``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .columns import STEP_COLUMNS, action_kind, arrow_fields, step_row
from .errors import InvalidInput
from .extras import require
from .gym.play import load_policy, play_episode
from .published._reading import shown_location
from .settings import check_registered
from .store import FrameStore
from .types import Episodes, episodes_wanted

__all__ = ["read_store", "record_episodes", "record_parallel"]

FRAME_COLUMN = "frame"
DEFAULT_BLOCK_BYTES = 32 * 1024 * 1024
_PAGE_ROWS = 1024  # step rows read from the catalogue at a time
_MIN_TASK_ROWS = 64  # smaller read tasks cost more to schedule than to run


@dataclass(frozen=True)
class _Range:
    """Steps ``start <= step < stop`` of one episode: what one read task reads of it."""

    store: str
    run_id: int
    env_id: str
    episode: int
    start: int
    stop: int
    frame_bytes: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class _Options:
    columns: tuple[str, ...]
    frames: bool
    action_kind: str
    block_bytes: int
    storage_options: dict[str, Any] | None
    stream: str = "render"


def _ray_data() -> Any:
    return require("ray.data", extra="ray", what="framestore.ray")


def _plan_store(
    location: str,
    episodes: Episodes,
    storage_options: Mapping[str, Any] | None,
    stream: str = "render",
) -> tuple[list[_Range], list[Any]]:
    """The committed ranges of one store (a snapshot) and its runs' action specs."""
    ranges, specs = [], []
    with FrameStore.open(location, readonly=True, storage_options=storage_options) as st:
        wanted = episodes_wanted(episodes, location)
        eps = st.episodes()
        if wanted is not None:
            missing = wanted - {e.id for e in eps}
            if missing:
                raise InvalidInput(f"{st.location}: no episode {min(missing)}")
            eps = [e for e in eps if e.id in wanted]
        for ep in eps:
            summary = st.frame_summary(ep.id, stream=stream)  # StreamNotFound: one line
            if summary.steps == 0:
                continue
            size = max((_shape_bytes(s) for s in summary.shapes), default=0)
            ranges.append(_Range(location, ep.run_id, ep.env_id, ep.id, 0, summary.steps, size))
            specs.append(st.catalog.episodes.action_spec(ep.id))
    return ranges, specs


def _shape_bytes(shape: str) -> int:
    n = 1
    for d in shape.split("x"):
        n *= int(d)
    return n


def _split(ranges: list[_Range], tasks: int) -> list[list[_Range]]:
    """``tasks`` groups of contiguous ranges with about equal rows (episodes cut into
    step ranges where needed), in store/episode/step order."""
    total = sum(r.rows for r in ranges)
    tasks = max(1, min(tasks, total // _MIN_TASK_ROWS or 1))
    per_task = -(-total // tasks)
    groups: list[list[_Range]] = [[]]
    room = per_task
    for r in ranges:
        start = r.start
        while start < r.stop:
            if room == 0:
                groups.append([])
                room = per_task
            stop = min(r.stop, start + room)
            groups[-1].append(
                _Range(r.store, r.run_id, r.env_id, r.episode, start, stop, r.frame_bytes)
            )
            room -= stop - start
            start = stop
    return [g for g in groups if g]


def _datasource_class() -> type:
    """The ``ray.data.Datasource`` subclass (made here: ray is imported only when used)."""
    rd = _ray_data()

    class StoreDatasource(rd.Datasource):
        """framestore stores as a Ray datasource: one read task per group of episode
        step ranges."""

        def __init__(self, ranges: list[_Range], options: _Options):
            self._ranges = ranges
            self._options = options

        def estimate_inmemory_data_size(self) -> int | None:
            return (
                sum(r.rows * r.frame_bytes for r in self._ranges) if self._options.frames else None
            )

        def get_read_tasks(
            self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
        ) -> list[Any]:
            from ray.data.block import BlockMetadata

            tasks = []
            for group in _split(self._ranges, parallelism):
                meta = BlockMetadata(
                    num_rows=sum(r.rows for r in group) if not self._options.frames else None,
                    size_bytes=sum(r.rows * r.frame_bytes for r in group),
                    input_files=None,
                    exec_stats=None,
                )
                options = self._options
                kwargs = (
                    {} if per_task_row_limit is None else {"per_task_row_limit": per_task_row_limit}
                )
                tasks.append(rd.ReadTask(lambda g=group, o=options: _read(g, o), meta, **kwargs))
            return tasks

        def get_name(self) -> str:
            return "FrameStore"

    return StoreDatasource


def read_store(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    episodes: Episodes = None,
    columns: Sequence[str] | None = None,
    frames: bool = True,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    storage_options: Mapping[str, Any] | None = None,
    override_num_blocks: int | None = None,
    stream: str = "render",
) -> Any:
    """Read one or more stores as a ``ray.data.Dataset`` (see the module docstring).

    Args:
        paths: store directories, published store directories or URLs (``s3://...``).
        episodes: episode ids to read (of every store), or ``{path: ids}`` per store;
            None: every live episode.
        columns: the columns to return (``framestore.columns.STEP_COLUMNS`` and
            ``frame``); None: all of them.
        frames: decode frames (the ``frame`` column); False reads step rows only.
        block_bytes: a block holds at most about this many bytes: the dataset's
            ``DataContext.target_max_block_size`` (Ray merges smaller blocks up to it),
            so it bounds a read task's memory.
        storage_options: fsspec options for URLs (endpoint, credentials).
        override_num_blocks: the number of read tasks (default: Ray's choice).
        stream: the frame stream the ``frame`` column holds (``EpisodeInfo.streams``:
            ``"observation"``, a camera...; every episode read must have it); steps
            without a frame in it are left out, as dropped frames are.

    Returns:
        A ``ray.data.Dataset``, one row per step.

    Raises:
        InvalidInput: no paths, an unknown column or episode id, a bad ``block_bytes``.
        NotAStore: a path that is not a store.
        MissingExtra: ray is not installed.
    """
    rd = _ray_data()
    locations = _locations(paths)
    cols = _columns(columns, frames)
    context = rd.DataContext.get_current()
    if block_bytes < 1:
        raise InvalidInput(f"block_bytes must be at least 1, got {block_bytes}")
    ranges, specs = [], []
    for location in locations:
        r, s = _plan_store(location, episodes, storage_options, stream)
        ranges += r
        specs += s
    options = _Options(
        columns=cols,
        frames=FRAME_COLUMN in cols,
        action_kind=action_kind(specs),
        block_bytes=int(block_bytes),
        storage_options=None if storage_options is None else dict(storage_options),
        stream=stream,
    )
    source = _datasource_class()(ranges, options)
    # The dataset keeps a copy of the context as it is now: set the block bound for it
    # alone, then put the caller's context back.
    saved = context.target_max_block_size
    context.target_max_block_size = int(block_bytes)
    try:
        return rd.read_datasource(source, override_num_blocks=override_num_blocks)
    finally:
        context.target_max_block_size = saved


def _locations(paths: Any) -> list[str]:
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not items:
        raise InvalidInput("read_store needs at least one store path")
    return [os.fspath(p).rstrip("/") for p in items]


def _columns(columns: Sequence[str] | None, frames: bool) -> tuple[str, ...]:
    every = (*STEP_COLUMNS, FRAME_COLUMN) if frames else STEP_COLUMNS
    if columns is None:
        return every
    unknown = [c for c in columns if c not in (*STEP_COLUMNS, FRAME_COLUMN)]
    if unknown:
        raise InvalidInput(f"unknown column {unknown[0]!r}; columns: {', '.join(every)}")
    if FRAME_COLUMN in columns and not frames:
        raise InvalidInput("column 'frame' asked for with frames=False")
    if not columns:
        raise InvalidInput("columns is empty")
    return tuple(dict.fromkeys(columns))


# --------------------------------------------------------------------------- read tasks
def _read(group: list[_Range], options: _Options) -> Iterator[Any]:
    """A read task: the blocks of its ranges, store by store (runs on a worker)."""
    block = _BlockBuilder(options)
    store: FrameStore | None = None
    opened = None  # the location ``store`` was opened from (as given: with credentials)
    try:
        for r in group:
            if store is None or opened != r.store:
                if store is not None:
                    store.close()
                store = FrameStore.open(
                    r.store, readonly=True, storage_options=options.storage_options
                )
                opened = r.store
            yield from _read_range(store, r, block)
        yield from block.flush()
    finally:
        if store is not None:
            store.close()


#: Columns known without reading a step row's action, reward, flags and info.
_ID_COLUMNS = {"store", "run_id", "episode_id", "step", "env_id", FRAME_COLUMN}


def _read_range(store: FrameStore, r: _Range, block: _BlockBuilder) -> Iterator[Any]:
    ids_only = set(block.options.columns) <= _ID_COLUMNS
    # the store column names the store as FrameStore does (a URL's credentials masked)
    shown = shown_location(r.store)
    ids = {"store": shown, "run_id": r.run_id, "episode_id": r.episode, "env_id": r.env_id}
    stream = block.options.stream
    for lo in range(r.start, r.stop, _PAGE_ROWS):
        hi = min(r.stop, lo + _PAGE_ROWS)
        if ids_only:  # frame pointers only: no JSON to decode
            steps: list[Any] = store.frame_locations(r.episode, lo, hi, stream=stream)
        else:
            steps = [(s.step, s) for s in store.read_steps(r.episode, lo, hi)]
        # another stream's pointers (render's are the rows' own)
        other = None
        if stream != "render" and not ids_only:
            other = dict(store.frame_locations(r.episode, lo, hi, stream=stream))
        for number, step in steps:
            location = step if ids_only else step.frame if other is None else other.get(number)
            frame = None
            if block.options.frames:
                if location is None:
                    continue  # dropped while recording: no pixels to give
                # No copy: the block stacks the frames (one copy) from the cached chunk.
                # read_at checks the chunk's key against the episode's stream key (a
                # merged episode's chunks carry the id it had in its own store)
                frame = store.read_at(location, r.episode, number, copy=False, stream=stream)
            if ids_only:
                row = {**ids, "step": number}
            else:
                row = step_row(
                    step,
                    store=shown,
                    run_id=r.run_id,
                    env_id=r.env_id,
                    kind=block.options.action_kind,
                )
            yield from block.add(row, frame)


class _BlockBuilder:
    """Rows collected into Arrow blocks of at most ``block_bytes`` of frames, one frame
    shape per block."""

    def __init__(self, options: _Options):
        self.options = options
        self._rows: list[dict] = []
        self._frames: list[Any] = []
        self._bytes = 0
        self._shape: tuple[int, ...] | None = None

    def add(self, row: dict, frame: Any) -> Iterator[Any]:
        if frame is not None and self._shape is not None and frame.shape != self._shape:
            yield from self.flush()
        self._rows.append(row)
        if frame is not None:
            self._frames.append(frame)
            self._shape = frame.shape
            self._bytes += frame.nbytes
        if self._bytes >= self.options.block_bytes or len(self._rows) >= 1 << 16:
            yield from self.flush()

    def flush(self) -> Iterator[Any]:
        if not self._rows:
            return
        yield self._table()
        self._rows, self._frames, self._bytes, self._shape = [], [], 0, None

    def _table(self) -> Any:
        import numpy as np
        import pyarrow as pa
        from ray.data.extensions import ArrowTensorArray

        fields = {f.name: f for f in arrow_fields(pa, self.options.action_kind)}
        arrays, names = [], []
        for name in self.options.columns:
            if name == FRAME_COLUMN:
                arrays.append(ArrowTensorArray.from_numpy(np.stack(self._frames)))
            else:
                arrays.append(pa.array([r[name] for r in self._rows], type=fields[name].type))
            names.append(name)
        return pa.Table.from_arrays(arrays, names=names)


# --------------------------------------------------------------------------- recording
def record_parallel(
    env_id: str,
    *,
    workers: int,
    episodes: int,
    out: str | os.PathLike,
    seed: int = 0,
    max_steps: int | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    num_cpus: float = 1,
    policy: str = "random",
) -> list[dict[str, Any]]:
    """Record ``episodes`` episodes of ``env_id`` with ``workers`` Ray actors, each into
    its own store ``out/worker-NNN.store``, with the play loop of ``framestore record``
    (``framestore.gym.play``).

    ``policy`` is ``"random"`` or names the user's policy (``"pkg.module:callable"`` or
    ``"file.py:callable"``), checked here before any actor starts and loaded by each
    actor; its name is stored with each run. Episode ``i`` (0-based, over the whole job)
    is reset with seed ``seed + i`` and the policy with ``reset(seed + i)`` (the random
    policy seeds its action space with it), so every episode is the same whatever the
    number of workers, the same as ``framestore record`` gives it, and replays from its
    stored seed and actions. Worker ``w`` records a contiguous share of the episode
    indices.

    Returns:
        One summary per worker: ``store``, ``worker``, ``run_id``, ``episodes`` (ids with
        their seeds and step counts), ``steps``, ``frames``.

    Raises:
        InvalidInput: bad counts, an ``env_id`` Gymnasium does not know (checked before
            any actor starts or anything is created), or ``out`` exists and is not an
            empty directory.
        MissingExtra: ray is not installed.
    """
    ray = require("ray", extra="ray", what="record_parallel")
    load_policy(policy)  # a bad name is refused before any actor starts
    if workers < 1 or episodes < 1:
        raise InvalidInput(f"workers and episodes must be at least 1, got {workers}, {episodes}")
    if max_steps is not None and max_steps < 1:
        raise InvalidInput(f"max_steps must be at least 1, got {max_steps}")
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InvalidInput(f"{root}: exists and is not an empty directory")
    # here, not as an actor's traceback after the directory was made
    check_registered(env_id, hint="register it in this process before record_parallel")
    root.mkdir(parents=True, exist_ok=True)
    shares = [range(w * episodes // workers, (w + 1) * episodes // workers) for w in range(workers)]
    actor = ray.remote(num_cpus=num_cpus)(_Worker)
    actors = [actor.remote() for share in shares if len(share)]
    try:
        refs = [
            a.record.remote(
                str(root / f"worker-{w:03d}.store"),
                env_id,
                list(share),
                w,
                dict(
                    seed=seed,
                    max_steps=max_steps,
                    preset=preset,
                    overrides=dict(overrides or {}),
                    policy=policy,
                ),
            )
            for w, (a, share) in enumerate(zip(actors, [s for s in shares if len(s)], strict=True))
        ]
        return ray.get(refs)
    finally:
        for a in actors:
            ray.kill(a)


class _Worker:
    """A Ray actor that records episodes into its own store."""

    def record(
        self, path: str, env_id: str, indices: list[int], worker: int, kw: dict[str, Any]
    ) -> dict[str, Any]:
        return record_episodes(path, env_id, indices, worker=worker, **kw)


def record_episodes(
    path: str | os.PathLike,
    env_id: str,
    indices: Sequence[int],
    *,
    seed: int = 0,
    worker: int = 0,
    max_steps: int | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    policy: str = "random",
) -> dict[str, Any]:
    """Record the episodes ``indices`` of a ``record_parallel`` job into one store (what
    each actor runs; usable without Ray)."""
    from .envs import make_env
    from .gym.wrappers import RecordFrames

    spec = load_policy(policy)
    env = make_env(env_id, max_episode_steps=max_steps)
    try:
        with FrameStore.open(path) as store:
            config = {"policy": spec.name, "seed": seed, "max_steps": max_steps, "worker": worker}
            wrapped = RecordFrames(
                env,
                store,
                env_id=env_id,
                preset=preset,
                overrides=dict(overrides or {}),
                config=config,
            )
            played = spec.build(env.action_space)
            try:
                ids = [_play_episode(wrapped, played, seed + i) for i in indices]
            finally:
                wrapped.close()
            eps = [store.episode(i) for i in ids]
            return {
                "store": str(path),
                "worker": worker,
                "run_id": eps[0].run_id if eps else None,
                "episodes": [{"id": e.id, "seed": e.seed, "steps": e.steps} for e in eps],
                "steps": sum(e.steps for e in eps),
                "frames": sum(e.frames for e in eps),
            }
    finally:
        env.close()


def _play_episode(wrapped: Any, policy: Any, episode_seed: int) -> int:
    episode_id = None
    for _step in play_episode(wrapped, policy, episode_seed):
        if episode_id is None:
            episode_id = wrapped.recorder.current_episode
    return episode_id
