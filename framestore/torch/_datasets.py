"""The PyTorch datasets: map-style steps with windows, an iterable pass in chunk order,
transitions, and a collate function for uint8 frames (see ``framestore.torch``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Self

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..errors import InvalidInput
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

FRAME_DTYPES = ("uint8", "float32")
Episodes = Mapping[str, Iterable[int]] | Iterable[int] | None


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
            self.episodes, numeric = load_episodes(self.stores, episodes)
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
    def frame(self, ep: EpisodeArrays, row: int) -> np.ndarray:
        """The frame of ``row`` (a read-only view of a cached decoded chunk)."""
        loc = ep.location(row)
        if loc is None:
            raise InvalidInput(f"episode {ep.episode} step {int(ep.steps[row])} has no frame")
        store = self.stores.get(ep.store)
        return store.read_at(loc, ep.episode, int(ep.steps[row]), copy=False)

    def frames(self, ep: EpisodeArrays, rows: np.ndarray, pad: np.ndarray) -> np.ndarray:
        """Frames of ``rows`` (clamped into the episode) stacked; a row without a stored
        frame gives zeros and is marked in ``pad``."""
        n = len(ep)
        clamped = np.clip(rows, 0, n - 1)
        have = ep.has_frame[clamped]
        pad |= ~have
        first = int(clamped[np.argmax(have)]) if have.any() else None
        if first is None:
            raise InvalidInput(f"episode {ep.episode}: no frame around step {int(rows[-1])}")
        sample = self.frame(ep, first)
        out = np.zeros((len(rows), *sample.shape), dtype=np.uint8)
        for i, r in enumerate(clamped):
            if have[i]:
                out[i] = self.frame(ep, int(r))
        return out

    def image(self, frames: np.ndarray) -> torch.Tensor:
        """Frames (one or a stack, channels last, owned by the caller) as a tensor."""
        t = torch.from_numpy(frames)
        if self.channels_first and t.dim() >= 3 and frames.shape[-1] in (1, 3, 4):
            t = t.movedim(-1, -3)
        if self.frame_dtype == "float32":
            t = t.to(torch.float32).div_(255.0)
        return t

    # ----------------------------------------------------------------- values
    def field(self, ep: EpisodeArrays, name: str, rows: Any) -> torch.Tensor:
        if name == "action":
            return torch.from_numpy(np.array(ep.actions[rows]))
        if name == "reward":
            return torch.from_numpy(np.array(ep.rewards[rows]))
        if name == "terminated":
            return torch.from_numpy(np.array(ep.terminated[rows]))
        return torch.from_numpy(np.array(ep.truncated[rows]))

    def ids(self, ep: EpisodeArrays, row: int) -> dict[str, torch.Tensor]:
        return {
            "episode": torch.tensor(ep.episode, dtype=torch.int64),
            "step": torch.tensor(int(ep.steps[row]), dtype=torch.int64),
            "store": torch.tensor(ep.store, dtype=torch.int64),
        }

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
        self._rows = [
            np.flatnonzero(ep.has_frame) if self.streams else np.arange(len(ep))
            for ep in self.episodes
        ]
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

    def item(self, ep: EpisodeArrays, row: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        n = len(ep)
        for key in (*self.streams, *self.fields):
            offsets = self.window.get(key)
            if offsets is None:
                if key in self.streams:
                    out[key] = self.image(np.array(self.frame(ep, row)))
                else:
                    out[key] = self.field(ep, key, row)
                continue
            rows = row + offsets
            pad = (rows < 0) | (rows >= n)
            if key in self.streams:
                out[key] = self.image(self.frames(ep, rows, pad))
            else:
                clamped = np.clip(rows, 0, n - 1)
                if key == "action":
                    pad |= ~ep.has_action[clamped]
                out[key] = self.field(ep, key, clamped)
            out[f"{key}_is_pad"] = torch.from_numpy(pad)
        out.update(self.ids(ep, row))
        return out


class StepDataset(_Steps, Dataset):
    """Steps of one or more stores as a map-style ``torch.utils.data.Dataset``.

    An item is one step row that has a frame: a dict of tensors keyed by stream
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
        streams: image streams to return (today every store has ``"render"``); ``()``
            for values only.
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


class IterableStepDataset(_Steps, IterableDataset):
    """The items of ``StepDataset`` as one pass, for training epochs at sequential read
    speed: each DataLoader worker takes a contiguous share of the items (store, episode
    and step order) and walks it in order, so each chunk is decoded once. With
    ``shuffle_buffer=N`` items leave through a buffer of N, picked at random (seeded by
    ``seed``, the worker and the epoch; by PyTorch's worker seed when ``seed`` is None):
    memory stays bounded, order is local. Arguments as ``StepDataset``."""

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
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self._epoch = 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        start, stop = shares([len(r) for r in self._rows], workers)[worker]
        items = self._walk(start, stop)
        if self.shuffle_buffer > 1:
            seed = torch.initial_seed() if self.seed is None else (self.seed, worker, self._epoch)
            items = _shuffled(items, self.shuffle_buffer, np.random.default_rng(seed))
        self._epoch += 1
        return items

    def _walk(self, start: int, stop: int) -> Iterator[dict[str, torch.Tensor]]:
        """Items ``start <= i < stop`` in order, episode by episode."""
        for e, ep in enumerate(self.episodes):
            lo, hi = int(self._starts[e]), int(self._starts[e + 1])
            if hi <= start or lo >= stop:
                continue
            for row in self._rows[e][max(start, lo) - lo : min(stop, hi) - lo]:
                yield self.item(ep, int(row))


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
        self._offsets = np.arange(1 - frame_stack, 1, dtype=np.int64)
        self._rows = [
            np.flatnonzero(ep.has_frame[:-1] & ep.has_frame[1:] & ep.has_action[1:])
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
                out[key] = self.image(np.array(self.frame(ep, row)))
            else:
                rows = row + self._offsets
                pad = rows < 0
                out[key] = self.image(self.frames(ep, rows, pad))
                out[f"{key}_is_pad"] = torch.from_numpy(pad)
        for name in ("action", "reward", "terminated", "truncated"):
            out[name] = self.field(ep, name, t + 1)
        out.update(self.ids(ep, t))
        return out


# --------------------------------------------------------------------------- batches
def collate_steps(items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack a list of items (dicts of tensors or numpy arrays of equal shapes) into a
    dict of batched tensors: one copy per key, straight into shared memory inside a
    DataLoader worker (so the batch crosses to the main process without another), and
    none of ``default_collate``'s per-element type dispatch."""
    if not items:
        raise InvalidInput("collate_steps needs at least one item")
    in_worker = get_worker_info() is not None
    out: dict[str, torch.Tensor] = {}
    for key, first in items[0].items():
        values = [item[key] for item in items]
        if isinstance(first, np.ndarray):
            values = [torch.from_numpy(np.asarray(v)) for v in values]
            first = values[0]
        elif not isinstance(first, torch.Tensor):
            out[key] = torch.as_tensor(values)
            continue
        shape = (len(values), *first.shape)
        if in_worker:
            storage = first.untyped_storage()._new_shared(
                first.element_size() * first.numel() * len(values)
            )
            buf = first.new_empty(0).set_(storage).view(shape)
        else:
            buf = first.new_empty(shape)
        out[key] = torch.stack(values, out=buf)
    return out
