"""The PyTorch datasets: map-style steps with windows, an iterable pass in chunk order,
transitions, and a collate function for uint8 frames (see ``framestore.torch``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..errors import InvalidInput
from ..types import Episodes
from ._episodes import (
    DEFAULT_CACHE_BYTES,
    EpisodeArrays,
    Sources,
    StoreSet,
    check_fields,
    check_streams,
    check_window,
    load_episodes,
    locations_of,
    shares,
)
from ._handover import BatchPool, Handover

FRAME_DTYPES = ("uint8", "float32")


class _StepIndex:
    """What every dataset here shares: the stores, each episode's arrays in memory, the
    items (an episode and a row), and how a row's frames and values become tensors."""

    def __init__(
        self,
        sources: Sources,
        *,
        streams: str | Iterable[str] | None,
        fields: str | Iterable[str] | None,
        episodes: Episodes,
        frame_dtype: str,
        channels_first: bool,
        storage_options: Mapping[str, Any] | None,
        cache_bytes: int,
    ):
        if frame_dtype not in FRAME_DTYPES:
            raise InvalidInput(
                f"frame_dtype must be one of {', '.join(FRAME_DTYPES)}, got {frame_dtype!r}"
            )
        if not isinstance(cache_bytes, int) or cache_bytes < 1:
            raise InvalidInput(f"cache_bytes must be a positive integer, got {cache_bytes!r}")
        self.streams = check_streams(streams)
        self.fields = check_fields(fields)
        self.frame_dtype = frame_dtype
        self.channels_first = bool(channels_first)
        self.stores = StoreSet(locations_of(sources), storage_options, cache_bytes)
        try:
            self.episodes, numeric = load_episodes(self.stores, episodes, self.streams)
        finally:
            self.stores.close()  # each process (each worker) opens its own when it reads
        if "action" in self.fields and not numeric:
            raise InvalidInput(
                "the actions are not numeric arrays of one shape (a Dict or Tuple space?) "
                "and cannot become tensors; leave 'action' out of fields"
            )

    @property
    def locations(self) -> list[str]:
        """The stores, by location, in the order the ``store`` value of an item counts."""
        return list(self.stores.locations)

    # ----------------------------------------------------------------- frames
    #: Random access: each process decodes a frame's zstd part whole once and keeps it
    #: within ``cache_bytes`` (``FrameStore.read_at(keep=True)``); a pass in order reads
    #: each part's frames one after the other from the reader's scratch buffer instead.
    keep_parts = True

    def frame(self, ep: EpisodeArrays, row: int, stream: str = "render") -> np.ndarray:
        """The frame of ``row`` in ``stream`` (a read-only view of a kept decoded part, or
        a read-only copy)."""
        loc = ep.location(row, stream)
        if loc is None:
            raise InvalidInput(
                f"episode {ep.episode} step {int(ep.steps[row])} has no frame in {stream!r}"
            )
        store = self.stores.get(ep.store)
        return store.read_at(
            loc, ep.episode, int(ep.steps[row]), copy=False, stream=stream, keep=self.keep_parts
        )

    def frames(
        self, ep: EpisodeArrays, rows: np.ndarray, pad: np.ndarray, stream: str = "render"
    ) -> np.ndarray:
        """Frames of ``rows`` (clamped into the episode) stacked; a row without a stored
        frame gives zeros and is marked in ``pad``."""
        n = len(ep)
        clamped = np.clip(rows, 0, n - 1)
        have = ep.has(stream)[clamped]
        pad |= ~have
        if not have.any():
            raise InvalidInput(f"episode {ep.episode}: no frame around step {int(rows[-1])}")
        sample = self.frame(ep, int(clamped[np.argmax(have)]), stream)
        out = np.zeros((len(rows), *sample.shape), dtype=sample.dtype)
        for i, r in enumerate(clamped):
            if have[i]:
                out[i] = self.frame(ep, int(r), stream)
        return out

    def image(self, frames: torch.Tensor, frame_ndim: int) -> torch.Tensor:
        """Frames (channels last, owned by the caller) as ``frame_dtype`` and layout
        (a stream of other arrays, e.g. float observations, is given as it is)."""
        t = frames
        if t.dtype != torch.uint8:
            return t
        if self.channels_first and frame_ndim == 3:
            t = t.movedim(-1, -3).contiguous()
        if self.frame_dtype == "float32":
            t = t.to(torch.float32).div_(255.0)
        return t

    # ----------------------------------------------------------------- values
    @staticmethod
    def values(ep: EpisodeArrays, name: str) -> np.ndarray:
        if name == "action":
            return ep.actions
        if name == "reward":
            return ep.rewards
        if name == "terminated":
            return ep.terminated
        return ep.truncated

    def ids(self, keys: Sequence[tuple[EpisodeArrays, int]]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in _id_arrays(_segments(keys)).items()}

    def close(self) -> None:
        """Close the stores this process opened (reading again reopens them)."""
        self.stores.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- steps
class _Steps(_StepIndex):
    """Items are the rows with a frame in every stream asked for (every row when no
    stream is), in store, episode and step order; ``window`` adds neighbours."""

    def __init__(self, sources: Sources, *, window: Mapping[str, Sequence[int]] | None, **kw):
        super().__init__(sources, **kw)
        self.window = check_window(window, (*self.streams, *self.fields))
        self._rows = [_rows_with(ep, self.streams) for ep in self.episodes]
        #: (store, episode, stream) -> a frame's shape and dtype (batches in order)
        self._frame_kinds: dict[tuple[int, int, str], tuple[tuple[int, ...], np.dtype]] = {}
        self._starts = np.cumsum([0, *(len(r) for r in self._rows)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[EpisodeArrays, int]:
        """The episode and row of item ``index``."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"item {index} out of range ({n} items)")
        index %= n
        e = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self.episodes[e], int(self._rows[e][index - self._starts[e]])

    def chunk_keys(self) -> np.ndarray:
        """``(store, segment, offset)`` of the chunk holding each item's frame in the
        first stream returned, in item order (``ChunkShuffleSampler`` groups by it); in a
        dataset of values only every item is its own key ``(store, episode, row)``."""
        stream = self.streams[0] if self.streams else None
        keys = [np.zeros((0, 3), dtype=np.int64)]
        for ep, rows in zip(self.episodes, self._rows, strict=True):
            if stream is None:
                where = np.column_stack([np.full(len(rows), ep.episode), rows])
            elif stream == "render":
                where = np.column_stack([ep.segment[rows], ep.offset[rows]])
            else:
                where = ep.streams[stream][rows, :2]
            keys.append(np.column_stack([np.full(len(rows), ep.store), where]).astype(np.int64))
        return np.concatenate(keys)

    def item(self, ep: EpisodeArrays, row: int) -> dict[str, torch.Tensor]:
        if self.window:  # neighbours and pads: a batch of one
            return {k: v[0] for k, v in self.gather([(ep, row)]).items()}
        out: dict[str, torch.Tensor] = {}
        for key in self.streams:  # the few calls an item needs: its cost is the decode
            frame = self.frame(ep, row, key)
            out[key] = self.image(torch.from_numpy(frame.copy()), frame.ndim)
        for key in self.fields:
            out[key] = torch.from_numpy(np.array(self.values(ep, key)[row]))
        out["episode"] = torch.from_numpy(np.array(ep.episode, dtype=np.int64))
        out["step"] = torch.from_numpy(np.array(ep.steps[row]))
        out["store"] = torch.from_numpy(np.array(ep.store, dtype=np.int64))
        return out

    def gather(
        self,
        keys: Sequence[tuple[EpisodeArrays, int]],
        pool: BatchPool | None = None,
    ) -> dict[str, torch.Tensor]:
        """The items ``keys`` (episode, row) as one batch: each key's values stacked,
        frames copied once from the cached chunks (into shared memory inside a DataLoader
        worker, so the batch reaches the main process without another copy). With
        ``pool`` (an in-order pass of uint8 frames) the batch goes into one of the pool's
        reused slots, frames decoded straight into it (``_handover``)."""
        plans: dict[str, _FramePlan] = {}
        arrays: dict[str, np.ndarray] = {}
        layout: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for key in self.streams:
            plans[key] = plan = self._plan_frames(key, keys)
            layout[key] = (plan.shape, _torch_dtype(plan.dtype))
            if plan.pads is not None:
                arrays[f"{key}_is_pad"] = plan.pads
                layout[f"{key}_is_pad"] = (plan.pads.shape, torch.bool)
        values: dict[str, np.ndarray] = {}
        segments = _segments(keys)
        for key in self.fields:
            self._gather_values(key, keys, segments, values)
        values.update(_id_arrays(segments))
        for name, arr in values.items():
            arrays[name] = arr
            layout[name] = (arr.shape, _torch_dtype(arr.dtype))
        out = None
        if pool is not None and self._images_as_stored():
            out = pool.batch(layout, worker=get_worker_info() is not None)
        if out is None:
            out = {
                name: torch.from_numpy(arrays[name]) if name in arrays else _empty(shape, dtype)
                for name, (shape, dtype) in layout.items()
            }
        else:
            for name, arr in arrays.items():
                out[name].numpy()[...] = arr
        for key, plan in plans.items():
            plan.fill(self, key, out[key].numpy().reshape(-1, *plan.frame_shape))
            out[key] = self.image(out[key], len(plan.frame_shape))
        return out

    def _images_as_stored(self) -> bool:
        """Whether ``image`` gives uint8 frames as they are (no new tensor)."""
        return self.frame_dtype == "uint8" and not self.channels_first

    def _plan_frames(self, key: str, keys: Sequence[tuple[EpisodeArrays, int]]) -> _FramePlan:
        offsets = self.window.get(key)
        if offsets is None and not self.keep_parts:
            # A pass in order: runs of consecutive slots, decoded into the batch in place.
            ep, row = keys[0]
            kind = self._frame_kinds.get((ep.store, ep.episode, key))
            if kind is None:  # once per episode: a frame read here would decode its part
                frame = self.frame(ep, row, key)
                kind = self._frame_kinds[ep.store, ep.episode, key] = (frame.shape, frame.dtype)
            if kind[1] == np.uint8:
                return _FramePlan.of_runs(_segments(keys), key, *kind)
        span = 1 if offsets is None else len(offsets)
        pads = np.zeros((len(keys), span), dtype=bool)
        views: list[np.ndarray | None] = []
        for i, (ep, row) in enumerate(keys):
            if offsets is None:
                views.append(self.frame(ep, row, key))  # an item's own row has a frame
                continue
            rows = row + offsets
            pads[i] = (rows < 0) | (rows >= len(ep))
            has = ep.has(key)
            for j, r in enumerate(np.clip(rows, 0, len(ep) - 1)):
                if has[r]:
                    views.append(self.frame(ep, int(r), key))
                else:
                    views.append(None)
                    pads[i, j] = True
        sample = next((v for v in views if v is not None), None)
        if sample is None:
            sample = self.frame(*keys[0], key)
        if any(v is None for v in views):
            zeros = np.zeros_like(sample)
            views = [zeros if v is None else v for v in views]
        lead = (len(keys),) if offsets is None else (len(keys), span)
        return _FramePlan(
            (*lead, *sample.shape), sample.dtype, sample.shape, views=views,
            pads=None if offsets is None else pads,
        )  # fmt: skip

    def _gather_values(self, key: str, keys, segments: list[_Segment], out) -> None:
        offsets = self.window.get(key)
        if offsets is None:
            out[key] = np.concatenate([self.values(ep, key)[rows] for ep, rows in segments])
            return
        picked, pads = [], []
        for ep, row in keys:
            rows = row + offsets
            clamped = np.clip(rows, 0, len(ep) - 1)
            pad = (rows < 0) | (rows >= len(ep))
            if key == "action":
                pad |= ~ep.has_action[clamped]
            picked.append(self.values(ep, key)[clamped])
            pads.append(pad)
        out[key] = np.stack(picked)
        out[f"{key}_is_pad"] = np.stack(pads)


@dataclass
class _FramePlan:
    """How one stream's frames of a batch are filled: from ``views`` (frames read one
    by one, copied in) or from ``runs`` (consecutive slots of one chunk each, decoded
    into the batch by ``FrameStore.read_into``)."""

    shape: tuple[int, ...]  # the batch tensor's
    dtype: np.dtype
    frame_shape: tuple[int, ...]
    views: list[np.ndarray] | None = None
    runs: list[_Run] | None = None
    pads: np.ndarray | None = None

    @classmethod
    def of_runs(
        cls, segments: list[_Segment], stream: str, shape: tuple[int, ...], dtype: np.dtype
    ) -> _FramePlan:
        runs: list[_Run] = []
        index = 0
        for ep, rows in segments:
            seg, off, slot = (column[rows] for column in ep.pointers(stream))
            steps = ep.steps[rows]
            breaks = np.flatnonzero(
                (seg[1:] != seg[:-1]) | (off[1:] != off[:-1]) | (slot[1:] != slot[:-1] + 1)
            )
            bounds = [0, *(breaks + 1).tolist(), len(rows)]
            for a, b in itertools.pairwise(bounds):
                loc = (int(seg[a]), int(off[a]), int(slot[a]))
                runs.append(_Run(index + a, loc, ep, steps[a:b]))
            index += len(rows)
        return cls((index, *shape), dtype, shape, runs=runs)

    def fill(self, owner: _StepIndex, stream: str, out: np.ndarray) -> None:
        """Write the frames into ``out`` (``(frames, *frame_shape)``)."""
        if self.views is not None:
            try:
                np.stack(self.views, out=out)
            except ValueError:
                self._mixed(v.shape for v in self.views)
            return
        assert self.runs is not None
        for run in self.runs:
            part = out[run.index : run.index + len(run.steps)]
            store = owner.stores.get(run.ep.store)
            try:
                store.read_into(run.location, run.ep.episode, run.steps, part, stream=stream)
            except ValueError:  # another shape than the batch's first frame
                for k in range(len(run.steps)):
                    frame = owner.frame(run.ep, run.row(k), stream)
                    if frame.shape != self.frame_shape or frame.dtype != self.dtype:
                        self._mixed((self.frame_shape, frame.shape))
                    part[k] = frame

    @staticmethod
    def _mixed(shapes) -> None:
        names = sorted({str(tuple(s)) for s in shapes})
        raise InvalidInput(
            f"frames of different shapes in one batch ({', '.join(names)}): "
            "make one dataset per shape (episodes=...)"
        )


@dataclass
class _Run:
    """Items ``index..`` of a batch whose frames lie in consecutive slots of one chunk."""

    index: int
    location: tuple[int, int, int]
    ep: EpisodeArrays
    steps: np.ndarray

    def row(self, k: int) -> int:
        return int(np.searchsorted(self.ep.steps, self.steps[k]))


#: An episode and rows of it, in a batch's order.
_Segment = tuple[EpisodeArrays, np.ndarray]


def _segments(keys: Sequence[tuple[EpisodeArrays, int]]) -> list[_Segment]:
    """``keys`` as runs of the same episode (a batch of a pass in order: a few)."""
    out: list[_Segment] = []
    rows: list[int] = []
    current = None
    for ep, row in keys:
        if ep is not current:
            if rows:
                out.append((current, np.asarray(rows, dtype=np.int64)))
            current, rows = ep, []
        rows.append(row)
    if rows:
        out.append((current, np.asarray(rows, dtype=np.int64)))
    return out


def _id_arrays(segments: list[_Segment]) -> dict[str, np.ndarray]:
    return {
        "episode": np.concatenate([np.full(len(r), ep.episode, np.int64) for ep, r in segments]),
        "step": np.concatenate([ep.steps[r].astype(np.int64, copy=False) for ep, r in segments]),
        "store": np.concatenate([np.full(len(r), ep.store, np.int64) for ep, r in segments]),
    }


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def _rows_with(ep: EpisodeArrays, streams: Sequence[str]) -> np.ndarray:
    """The rows of ``ep`` with a frame in every stream of ``streams`` (all: none asked)."""
    have = np.ones(len(ep), dtype=bool)
    for stream in streams:
        have &= ep.has(stream)
    return np.flatnonzero(have)


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A new tensor; in shared memory inside a DataLoader worker (what the worker's
    queue would otherwise copy it into)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    storage = torch.UntypedStorage._new_shared(nbytes)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


class _Gathered(Sequence):
    """Items gathered as one batch (``StepDataset.__getitems__``): ``collate_steps``
    takes the batch as it is; any other collate function sees a list of items."""

    def __init__(self, batch: dict[str, torch.Tensor], size: int):
        self.batch = batch
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._size))]
        if not -self._size <= i < self._size:
            raise IndexError(i)
        return {k: v[i] for k, v in self.batch.items()}


class StepDataset(_Steps, Dataset):
    """Steps of one or more stores as a map-style ``torch.utils.data.Dataset``.

    An item is one step row that has a frame in every stream asked for: a dict of
    tensors keyed by stream
    (``"render"``: the frame, uint8 ``(H, W, C)`` as recorded, or float32 in [0, 1] with
    ``frame_dtype="float32"``; ``(C, H, W)`` with ``channels_first``) and by field
    (``action``, ``reward``, ``terminated``, ``truncated``: the row's values, i.e. the
    action that led to this frame and what it earned; the reset row, step 0, has no
    action), plus ``episode``, ``step`` and ``store`` (the index of its store in
    ``locations``).

    ``window={"render": [-3, -2, -1, 0], "action": [0, 1]}`` gives those keys a leading
    axis of neighbouring rows of the same episode (a frame stack, an action chunk).
    Offsets beyond the episode repeat its first or last row and are marked True in
    ``"<key>_is_pad"`` (as LeRobot names it); so are rows without an action or frame.

    Each DataLoader worker opens the stores itself, read-only (a directory or a
    published store's URL), and keeps decoded chunks up to ``cache_bytes``; every
    episode's frame pointers and values are read once, here, so an item costs no SQLite
    query.

    Args:
        sources: a store path or URL, an open ``FrameStore`` (reopened by location), or
            a list of them.
        streams: frame streams to return (``"render"``, the default; an episode's other
            streams, ``EpisodeInfo.streams``: ``"observation"``, a camera...; every
            episode must have them); ``()`` for values only. A stream of non-uint8
            arrays (a large observation vector) comes back in its own dtype.
        fields: per-step values to return (default: all four).
        window: ``{stream or field: [step offsets]}``.
        episodes: episode ids (of every store), or ``{location: ids}``; None: all live.
        frame_dtype: ``"uint8"`` or ``"float32"`` (divided by 255).
        channels_first: frames as ``(C, H, W)``.
        storage_options: fsspec options for URLs.
        cache_bytes: decoded chunks each process keeps.

    Raises:
        InvalidInput: an unknown stream, field or window key, bad offsets, a missing
            episode, actions that cannot be tensors.
    """

    def __init__(
        self,
        sources: Sources,
        *,
        streams: str | Iterable[str] | None = None,
        fields: str | Iterable[str] | None = None,
        window: Mapping[str, Sequence[int]] | None = None,
        episodes: Episodes = None,
        frame_dtype: str = "uint8",
        channels_first: bool = False,
        storage_options: Mapping[str, Any] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        super().__init__(
            sources,
            window=window,
            streams=streams,
            fields=fields,
            episodes=episodes,
            frame_dtype=frame_dtype,
            channels_first=channels_first,
            storage_options=storage_options,
            cache_bytes=cache_bytes,
        )

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ep, row = self.locate(index)
        return self.item(ep, row)

    def __getitems__(self, indices: Sequence[int]) -> Sequence[dict[str, torch.Tensor]]:
        """A DataLoader's batch of items in one gather (``collate_steps`` keeps it)."""
        return _Gathered(self.gather([self.locate(int(i)) for i in indices]), len(indices))


class IterableStepDataset(_Steps, IterableDataset):
    """The items of ``StepDataset`` as one pass, for training epochs at sequential read
    speed: each DataLoader worker takes a contiguous share of the items (store, episode
    and step order) and walks it in order, so each chunk is decoded once. With
    ``shuffle_buffer=N`` items leave through a buffer of N, picked at random (seeded by
    ``seed``, the worker and the epoch; by PyTorch's worker seed when ``seed`` is None):
    memory stays bounded, order is local (the buffer holds keys; the frames come from
    the chunk cache, so keep ``shuffle_buffer`` frames within ``cache_bytes``).

    ``batch_size=B`` yields batches of B items gathered whole: use it with
    ``DataLoader(ds, batch_size=None)``, the fastest pass. In order (no shuffle buffer)
    with uint8 frames as stored, frames are decoded straight into one of a few batch
    slots that each process reuses within ``cache_bytes``, and a DataLoader worker hands
    a slot over as a handle instead of new shared memory per batch
    (``framestore/torch/_handover.py``); a slot is refilled only once every tensor of
    its batch is freed. Other arguments as ``StepDataset``."""

    def __init__(
        self,
        sources: Sources,
        *,
        streams: str | Iterable[str] | None = None,
        fields: str | Iterable[str] | None = None,
        window: Mapping[str, Sequence[int]] | None = None,
        episodes: Episodes = None,
        frame_dtype: str = "uint8",
        channels_first: bool = False,
        storage_options: Mapping[str, Any] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        shuffle_buffer: int = 0,
        seed: int | None = None,
        batch_size: int | None = None,
    ):
        super().__init__(
            sources,
            window=window,
            streams=streams,
            fields=fields,
            episodes=episodes,
            frame_dtype=frame_dtype,
            channels_first=channels_first,
            storage_options=storage_options,
            cache_bytes=cache_bytes,
        )
        if not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise InvalidInput(f"shuffle_buffer must be 0 or more, got {shuffle_buffer!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise InvalidInput(f"batch_size must be None or at least 1, got {batch_size!r}")
        self.shuffle_buffer = shuffle_buffer
        self.keep_parts = shuffle_buffer > 1  # in order: the scratch buffer serves
        self.seed = seed
        self.batch_size = batch_size
        self._epoch = 0
        self._pool: BatchPool | None = None  # made by the process that iterates

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        start, stop = shares([len(r) for r in self._rows], workers)[worker]
        keys = self._walk(start, stop)
        if self.shuffle_buffer > 1:
            seed = torch.initial_seed() if self.seed is None else (self.seed, worker, self._epoch)
            keys = _shuffled(keys, self.shuffle_buffer, np.random.default_rng(seed))
        self._epoch += 1
        if self.batch_size is None:
            return (self.item(ep, row) for ep, row in keys)
        return self._batches(keys, self.batch_size, stop - start)

    def _walk(self, start: int, stop: int) -> Iterator[tuple[EpisodeArrays, int]]:
        """The keys (episode, row) of items ``start <= i < stop`` in order."""
        for e, ep in enumerate(self.episodes):
            lo, hi = int(self._starts[e]), int(self._starts[e + 1])
            if hi <= start or lo >= stop:
                continue
            for row in self._rows[e][max(start, lo) - lo : min(stop, hi) - lo]:
                yield ep, int(row)

    def _batches(
        self, keys: Iterator[tuple[EpisodeArrays, int]], size: int, count: int
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of ``size`` of the ``count`` keys; in order, in the reused slots of
        this process's ``BatchPool`` (a shuffled pass reads kept parts, copied in)."""
        pool = None
        if not self.keep_parts:
            if self._pool is None:
                self._pool = BatchPool(self.stores.cache_bytes)
            pool = self._pool
            pool.start_pass()
        batch: list[tuple[EpisodeArrays, int]] = []
        done = 0
        for key in keys:
            batch.append(key)
            if len(batch) == size or done + len(batch) == count:
                out = self.gather(batch, pool)
                done += len(batch)
                if done >= count:
                    BatchPool.mark_last(out)
                yield out
                batch = []
        if batch:
            yield self.gather(batch, pool)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None}  # slots stay in the process that made them


def _shuffled(items: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = int(rng.integers(size))
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


# --------------------------------------------------------------------------- transitions
class TransitionDataset(_StepIndex, Dataset):
    """``(obs, action, reward, next_obs, terminated, truncated)`` transitions of one or
    more stores, map-style: item t of an episode pairs the frame of step t with the
    action taken there (step t+1's row), its reward and flags and the frame of step t+1.
    Steps whose frame (or the next one) was dropped are left out.

    ``frame_stack=k`` makes ``obs`` and ``next_obs`` the k frames ending at t and t+1
    (``(k, H, W, C)``), the first frame repeated before an episode's start and marked in
    ``obs_is_pad``/``next_obs_is_pad``. ``stream`` chooses the image stream. Items also
    hold ``episode``, ``step`` (t) and ``store``. Other arguments as ``StepDataset``.
    """

    def __init__(
        self,
        sources: Sources,
        *,
        stream: str = "render",
        frame_stack: int = 1,
        episodes: Episodes = None,
        frame_dtype: str = "uint8",
        channels_first: bool = False,
        storage_options: Mapping[str, Any] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        if not isinstance(frame_stack, int) or frame_stack < 1:
            raise InvalidInput(f"frame_stack must be at least 1, got {frame_stack!r}")
        super().__init__(
            sources,
            streams=check_streams(stream),
            fields=None,
            episodes=episodes,
            frame_dtype=frame_dtype,
            channels_first=channels_first,
            storage_options=storage_options,
            cache_bytes=cache_bytes,
        )
        self.frame_stack = frame_stack
        self.stream = self.streams[0]
        self._offsets = np.arange(1 - frame_stack, 1, dtype=np.int64)
        self._rows = [
            np.flatnonzero(ep.has(self.stream)[:-1] & ep.has(self.stream)[1:] & ep.has_action[1:])
            for ep in self.episodes
        ]
        self._starts = np.cumsum([0, *(len(r) for r in self._rows)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"item {index} out of range ({n} items)")
        index %= n
        e = int(np.searchsorted(self._starts, index, side="right")) - 1
        ep, t = self.episodes[e], int(self._rows[e][index - self._starts[e]])
        out: dict[str, torch.Tensor] = {}
        for key, row in (("obs", t), ("next_obs", t + 1)):
            if self.frame_stack == 1:
                frame = self.frame(ep, row, self.stream)
                out[key] = self.image(torch.from_numpy(np.array(frame)), frame.ndim)
            else:
                rows = row + self._offsets
                pad = rows < 0
                frames = self.frames(ep, rows, pad, self.stream)
                out[key] = self.image(torch.from_numpy(frames), frames.ndim - 1)
                out[f"{key}_is_pad"] = torch.from_numpy(pad)
        for name in ("action", "reward", "terminated", "truncated"):
            out[name] = torch.from_numpy(np.array(self.values(ep, name)[t + 1]))
        out.update({k: v[0] for k, v in self.ids([(ep, t)]).items()})
        return out


# --------------------------------------------------------------------------- batches
def collate_steps(items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack a list of items (dicts of tensors or numpy arrays of equal shapes) into a
    dict of batched tensors: one copy per key (``numpy.stack``, steadier than
    ``torch.stack`` for uint8 frames), straight into shared memory inside a DataLoader
    worker (so the batch crosses to the main process without another). A batch that
    ``StepDataset`` gathered whole (``__getitems__``), or one batch that
    ``IterableStepDataset(batch_size=...)`` yields (a dict, with ``batch_size=None`` in
    the DataLoader), is taken as it is."""
    if isinstance(items, _Gathered):
        return items.batch
    if isinstance(items, Handover):  # a batch in a worker's slot: handed over as it is
        return items
    if isinstance(items, Mapping):
        return dict(items)
    if not items:
        raise InvalidInput("collate_steps needs at least one item")
    out: dict[str, torch.Tensor] = {}
    for key, first in items[0].items():
        values = [item[key] for item in items]
        if isinstance(first, torch.Tensor):
            arrays = [v.numpy() for v in values]
            dtype = first.dtype
        elif isinstance(first, np.ndarray | np.generic):
            arrays = [np.asarray(v) for v in values]
            dtype = torch.from_numpy(np.empty(0, dtype=arrays[0].dtype)).dtype
        else:
            out[key] = torch.as_tensor(values)
            continue
        batch = _empty((len(arrays), *arrays[0].shape), dtype)
        try:
            np.stack(arrays, out=batch.numpy())
        except ValueError:
            shapes = sorted({str(a.shape) for a in arrays})
            raise InvalidInput(
                f"{key!r}: items of different shapes ({', '.join(shapes)})"
            ) from None
        out[key] = batch
    return out
