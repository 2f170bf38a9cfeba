"""What the PyTorch datasets index, without torch: each episode's frame pointers and step
values as arrays in memory (read once, so no SQLite query per item), the stores each
DataLoader worker opens for itself, and the checks of ``streams``, ``fields`` and
``window`` arguments."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._format import RENDER_STREAM as RENDER
from .._format.streams import check_stream_name
from ..errors import InvalidInput
from ..store import FrameStore
from ..types import episodes_wanted

#: The stream every store has (what ``env.render()`` showed); episodes recorded with
#: ``record_step(frames=...)`` or observations have more (``EpisodeInfo.streams``).
STREAMS = ("render",)
#: Per-step values a dataset item can hold besides frames.
FIELDS = ("action", "reward", "terminated", "truncated")
#: Decoded chunks each worker keeps, in bytes (``FrameStore.open(cache_bytes=...)``).
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024

Sources = str | os.PathLike | FrameStore | Sequence[str | os.PathLike | FrameStore]


@dataclass(frozen=True)
class EpisodeArrays:
    """One episode's committed rows, in step order, as arrays (``n`` rows).

    ``segment``/``offset``/``slot`` are the frame pointers (-1 where the frame was
    dropped); ``actions`` holds the action of each row (the action that led to its frame;
    zeros where ``has_action`` is False: the reset row, rows rebuilt by ``recover``);
    ``rewards`` is NaN where unknown."""

    store: int  # the index of its store in the dataset's sources
    episode: int  # its id in that store
    steps: np.ndarray
    segment: np.ndarray
    offset: np.ndarray
    slot: np.ndarray
    actions: np.ndarray
    has_action: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    #: streams other than render asked for: ``(n, 3)`` pointers, -1 where none
    streams: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def has_frame(self) -> np.ndarray:
        return self.segment >= 0

    def has(self, stream: str) -> np.ndarray:
        """Rows with a stored frame in ``stream``."""
        return self.has_frame if stream == RENDER else self.streams[stream][:, 0] >= 0

    def pointers(self, stream: str = "render") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The segment, offset and slot columns of ``stream``'s frame pointers."""
        if stream == RENDER:
            return self.segment, self.offset, self.slot
        ptr = self.streams[stream]
        return ptr[:, 0], ptr[:, 1], ptr[:, 2]

    def location(self, row: int, stream: str = "render") -> tuple[int, int, int] | None:
        if stream != RENDER:
            loc = self.streams[stream][row]
            return None if loc[0] < 0 else (int(loc[0]), int(loc[1]), int(loc[2]))
        if self.segment[row] < 0:
            return None
        return int(self.segment[row]), int(self.offset[row]), int(self.slot[row])


class StoreSet:
    """The dataset's stores by location, each opened read-only on first use in the
    process that uses it: a DataLoader worker (forked or spawned) opens its own, and
    pickling carries the locations only, never an open store."""

    def __init__(
        self,
        locations: Sequence[str],
        storage_options: Mapping[str, Any] | None,
        cache_bytes: int,
    ):
        self.locations = list(locations)
        self.storage_options = None if storage_options is None else dict(storage_options)
        self.cache_bytes = int(cache_bytes)
        self._open: dict[int, FrameStore] = {}
        self._pid = os.getpid()

    def get(self, index: int) -> FrameStore:
        if self._pid != os.getpid():  # a forked worker: the parent's handles are not ours
            self._open, self._pid = {}, os.getpid()
        store = self._open.get(index)
        if store is None:
            store = self._open[index] = FrameStore.open(
                self.locations[index],
                readonly=True,
                storage_options=self.storage_options,
                cache_bytes=self.cache_bytes,
            )
        return store

    def close(self) -> None:
        opened, self._open = self._open, {}
        if self._pid == os.getpid():
            for store in opened.values():
                store.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": {}}


def locations_of(sources: Sources) -> list[str]:
    """Store locations from a path, a URL, an open ``FrameStore`` or a list of them."""
    items = [sources] if isinstance(sources, str | os.PathLike | FrameStore) else list(sources)
    if not items:
        raise InvalidInput("a dataset needs at least one store")
    out = []
    for item in items:
        if isinstance(item, FrameStore):
            # A worker opens it again by location (an open store cannot cross processes).
            out.append(item.location if item.published else str(item.root))
        elif isinstance(item, str | os.PathLike):
            out.append(os.fspath(item).rstrip("/") or "/")
        else:
            raise InvalidInput(f"a store must be a path, a URL or a FrameStore, got {item!r}")
    return out


def check_streams(streams: str | Iterable[str] | None) -> tuple[str, ...]:
    """The streams asked for (names checked here; each episode must have them, checked
    when the episodes are loaded)."""
    if streams is None:
        return STREAMS
    names = (streams,) if isinstance(streams, str) else tuple(streams)
    for name in names:
        check_stream_name(name)
    return tuple(dict.fromkeys(names))


def check_fields(fields: str | Iterable[str] | None) -> tuple[str, ...]:
    if fields is None:
        return FIELDS
    names = (fields,) if isinstance(fields, str) else tuple(fields)
    for name in names:
        if name not in FIELDS:
            raise InvalidInput(f"unknown field {name!r}; fields: {', '.join(FIELDS)}")
    return tuple(dict.fromkeys(names))


def check_window(
    window: Mapping[str, Sequence[int]] | None, keys: Sequence[str]
) -> dict[str, np.ndarray]:
    """``{key: step offsets}`` for keys among ``keys`` (the streams and fields asked for)."""
    out: dict[str, np.ndarray] = {}
    for key, offsets in (window or {}).items():
        if key not in keys:
            raise InvalidInput(
                f"window names {key!r}, which is not a stream or field of this dataset "
                f"({', '.join(keys)})"
            )
        try:
            values = [int(o) for o in offsets]
        except (TypeError, ValueError):
            raise InvalidInput(f"window[{key!r}] must be a list of integer steps") from None
        if not values or any(v != o for v, o in zip(values, offsets, strict=True)):
            raise InvalidInput(f"window[{key!r}] must be a non-empty list of integer steps")
        out[key] = np.asarray(values, dtype=np.int64)
    return out


def load_episodes(
    stores: StoreSet,
    episodes: Mapping[str, Iterable[int]] | Iterable[int] | None,
    streams: Sequence[str] = (),
) -> tuple[list[EpisodeArrays], bool]:
    """Every live episode (or the ids asked for) of every store, as arrays: a snapshot of
    what is committed now (a store being recorded is read as far as it is committed).
    And whether the actions are numeric arrays of one shape (they can be batched)."""
    out: list[EpisodeArrays] = []
    raw: list[tuple[int, int, list, Any]] = []
    for index, location in enumerate(stores.locations):
        store = stores.get(index)
        wanted = episodes_wanted(episodes, location)
        for ep in store.episodes():
            if wanted is not None and ep.id not in wanted:
                continue
            missing = [s for s in streams if s not in ep.streams]
            if missing:
                raise InvalidInput(
                    f"{store.location}: episode {ep.id} has no stream {missing[0]!r} (its "
                    f"streams: {', '.join(ep.streams)}); choose episodes=... that have it"
                )
            pointers = store.frame_locations(ep.id)
            track = store.step_track(ep.id)
            extra = {s: store.frame_locations(ep.id, stream=s) for s in streams if s != RENDER}
            raw.append((index, ep.id, pointers, track, extra))
        if wanted is not None:
            missing = wanted - {e for i, e, *_rest in raw if i == index}
            if missing:
                raise InvalidInput(f"{store.location}: no episode {min(missing)}")
    template = _action_template(t.actions for _i, _e, _p, t, _x in raw)
    for index, episode, pointers, track, extra in raw:
        # a live store commits rows between the reads
        n = min(len(pointers), len(track), *(len(p) for p in extra.values()))
        if n == 0:
            continue
        arrays = _arrays(index, episode, pointers[:n], track, n, template)
        arrays.streams.update({s: _pointer_array(p, n) for s, p in extra.items()})
        out.append(arrays)
    return out, template is not None


def _action_template(tracks: Iterable[Sequence[Any]]) -> np.ndarray | None:
    """A zero action of the stores' action shape and dtype (None: actions are not
    numeric arrays, e.g. a Dict space, and cannot be batched)."""
    for actions in tracks:
        for a in actions:
            if a is None:
                continue
            try:
                arr = np.asarray(a)
            except (TypeError, ValueError):
                return None
            if arr.dtype.kind not in "biuf":
                return None
            dtype = np.float32 if arr.dtype.kind == "f" else arr.dtype
            dtype = np.int64 if arr.dtype.kind in "iu" else dtype
            return np.zeros(arr.shape, dtype=dtype)
    return np.zeros((), dtype=np.int64)


def _pointer_array(pointers: list, n: int) -> np.ndarray:
    """``(n, 3)`` pointers of ``(step, location)`` pairs, -1 where none."""
    ptr = np.full((n, 3), -1, dtype=np.int64)
    for row, (_s, loc) in enumerate(pointers[:n]):
        if loc is not None:
            ptr[row] = loc
    return ptr


def _arrays(
    index: int, episode: int, pointers: list, track: Any, n: int, template: np.ndarray | None
) -> EpisodeArrays:
    steps = np.fromiter((s for s, _loc in pointers), dtype=np.int64, count=n)
    if not np.array_equal(steps, np.asarray(track.steps[:n], dtype=np.int64)):
        raise InvalidInput(f"episode {episode}: its step rows changed while being read")
    ptr = np.full((n, 3), -1, dtype=np.int64)
    for row, (_s, loc) in enumerate(pointers):
        if loc is not None:
            ptr[row] = loc
    has_action = np.fromiter((a is not None for a in track.actions[:n]), dtype=bool, count=n)
    if template is None:
        actions = np.zeros(n, dtype=np.int64)
        has_action[:] = False
    else:
        actions = np.zeros((n, *template.shape), dtype=template.dtype)
        for row in np.flatnonzero(has_action):
            try:
                actions[row] = track.actions[row]
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"episode {episode} step {int(steps[row])}: action "
                    f"{track.actions[row]!r} does not fit the shape {template.shape}"
                ) from None
    rewards = np.array([np.nan if r is None else r for r in track.rewards[:n]], dtype=np.float32)
    return EpisodeArrays(
        store=index,
        episode=episode,
        steps=steps,
        segment=ptr[:, 0].copy(),
        offset=ptr[:, 1].copy(),
        slot=ptr[:, 2].copy(),
        actions=actions,
        has_action=has_action,
        rewards=rewards,
        terminated=np.asarray(track.terminated[:n], dtype=bool),
        truncated=np.asarray(track.truncated[:n], dtype=bool),
    )


def shares(sizes: Sequence[int], parts: int) -> list[tuple[int, int]]:
    """Split items ``0..sum(sizes)`` into ``parts`` contiguous ``[start, stop)`` ranges of
    about equal size."""
    total = int(sum(sizes))
    return [(total * p // parts, total * (p + 1) // parts) for p in range(parts)]
