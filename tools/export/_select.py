"""What a multi-episode export reads: the chosen episodes and their step ranges, checked
before anything is written, and their steps with frames, streamed in step order.

Shared by the dataset exports (``parquet``, ``lerobot``, ``rrd``, ``minari``): each turns
the ``StepFrame`` stream into its own rows. Memory stays O(page of step rows + a few
decoded chunks), whatever the episode length.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from framestore import EpisodeInfo, FrameStore, StepInfo, StreamInfo
from framestore.columns import action_kind
from framestore.errors import CorruptData, InvalidInput
from framestore.files import why_not_writable

from ._options import ExportOptions
from ._plan import PARTIAL_SUFFIX, check_not_in_store, output_path

__all__ = [
    "Selection",
    "Span",
    "StepFrame",
    "StreamCursor",
    "check_new_path",
    "episode_streams",
    "is_image",
    "iter_step_frames",
    "select_episodes",
]

_PAGE_ROWS = 512  # step rows read from SQLite at a time


def is_image(info: StreamInfo) -> bool:
    """A stream whose frames are images: its first (``render``, whatever its frames), or
    uint8 HxW or HxWxC frames with C 1, 3 or 4 (not frame stacks or other arrays)."""
    shape = info.shape or ()
    return info.index == 0 or (
        info.dtype == "uint8" and (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4)))
    )


def episode_streams(store: FrameStore, episode: EpisodeInfo) -> list[str]:
    """The names of the image streams an episode's steps hold (``render`` first, then
    the others ``record_step(frames=...)`` recorded, in stream order). Exports build
    their per-stream features (LeRobot) or entities (rerun) from this list."""
    return [s.name for s in store.streams(episode.id) if is_image(s)]


@dataclass(frozen=True)
class Span:
    """One episode's exported range: steps ``start <= step < stop`` (``stop`` clipped to
    the rows committed when the export was planned; ``committed`` counts them all)."""

    episode: EpisodeInfo
    start: int
    stop: int
    committed: int
    shapes: tuple[str, ...]  # the distinct frame shapes of the range, "HxWxC"
    frames: int  # stored frames in the range

    @property
    def id(self) -> int:
        return self.episode.id

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Selection:
    """The episodes of one export, in export order, and the ``action`` column's kind
    (``framestore.columns.action_kind``) over all of them."""

    spans: list[Span]
    kind: str

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.spans)


@dataclass(frozen=True)
class StepFrame:
    """A step and its frame (``None`` when the frame was dropped while recording), its
    frames of the other streams asked for (``None``: none at this step) and, when asked
    for, its observation (``FrameStore.read_observation``: an array, a dict, or None)."""

    span: Span
    step: StepInfo
    frame: np.ndarray | None
    others: dict[str, np.ndarray | None] = field(default_factory=dict)
    observation: Any = None

    def of(self, stream: str, first: str) -> np.ndarray | None:
        """The frame of ``stream`` (``first``: the episode's first stream's name)."""
        return self.frame if stream == first else self.others.get(stream)


def select_episodes(
    store: FrameStore,
    episodes: list[int] | None,
    run_id: int | None,
    options: ExportOptions,
    *,
    what: str,
) -> Selection:
    """The episodes to export: ``episodes`` (ids, in that order), every live episode of
    ``run_id``, or (neither) every live episode of the store; each clipped to
    ``options.start``/``options.stop`` and to what is committed now.

    Raises:
        InvalidInput: both given, nothing to export, or ``scale`` other than 1.
        EpisodeNotFound, RunNotFound: unknown ids.
    """
    if options.scale != 1:
        raise InvalidInput(f"{what} holds the stored frames exactly; scale applies to images/video")
    if episodes and run_id is not None:
        raise InvalidInput("give --episode IDs or --run ID, not both")
    if run_id is not None:
        store.run(run_id)  # RunNotFound
        eps = store.episodes(run_id=run_id)
    elif episodes:
        eps = [store.episode(i) for i in dict.fromkeys(episodes)]  # EpisodeNotFound
    else:
        eps = store.episodes()
    if not eps:
        raise InvalidInput("nothing to export: no live episodes")
    spans = []
    for ep in eps:
        # A snapshot of what is committed now: rows of a live episode keep arriving.
        summary = store.frame_summary(ep.id, options.start, options.stop)
        if summary.stop > options.start:
            spans.append(
                Span(
                    ep,
                    options.start,
                    int(summary.stop),
                    int(summary.steps),
                    tuple(summary.shapes),
                    int(summary.frames),
                )
            )
    if not spans:
        raise InvalidInput(f"no steps from step {options.start} in the chosen episodes")
    kind = action_kind(store.catalog.episodes.action_spec(s.id) for s in spans)
    return Selection(spans, kind)


def check_new_path(out: str | os.PathLike, *, directory: bool) -> tuple[Path, Path]:
    """``(out, out.partial)`` for an export that creates ``out``: a directory that does
    not exist yet or is empty (``directory``), else a file that may be replaced; its
    parent exists and is writable, and it is not inside a store."""
    path = output_path(out)
    check_not_in_store(path)
    if directory:
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InvalidInput(f"{path}: exists and is not an empty directory")
    elif path.is_dir():
        raise InvalidInput(f"{path}: is a directory")
    if not path.parent.is_dir():
        raise InvalidInput(f"{path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InvalidInput(f"{path}: directory {path.parent} is not writable")
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    if not os.path.lexists(partial):
        # os.access lets root "write" where no file can be made (/proc, /sys): try the
        # partial name once, so the refusal comes now and names the user's path
        try:
            if directory:
                partial.mkdir()
                partial.rmdir()
            else:
                partial.touch(exist_ok=False)
                partial.unlink()
        except OSError as e:
            raise InvalidInput(f"cannot write {path}: {why_not_writable(path, e)}") from None
    return path, partial


def iter_step_frames(
    store: FrameStore,
    spans: list[Span],
    *,
    extra_step: bool = False,
    streams: dict[int, list[str]] | None = None,
    observations: bool = False,
) -> Iterator[StepFrame]:
    """Every step of the spans in order with its frame, read page by page.

    ``extra_step``: also the step right after each span's range when it is committed
    (the transition out of the range's last step). ``streams``: per episode id, the other
    streams whose frames each step carries in ``others`` (read in step order alongside).
    ``observations``: each step carries its observation (read page by page alongside).
    A frame whose decoded shape is not its row's ``frame_shape`` is corrupt:
    ``CorruptData``, never written."""
    for span in spans:
        stop = min(span.stop + 1, span.committed) if extra_step else span.stop
        cursors = {
            name: StreamCursor(store, span.id, span.start, stop, name)
            for name in (streams or {}).get(span.id, [])
        }
        for lo in range(span.start, stop, _PAGE_ROWS):
            hi = min(stop, lo + _PAGE_ROWS)
            obs = dict(store.iter_observations(span.id, lo, hi)) if observations else {}
            for step in store.read_steps(span.id, lo, hi):
                frame = None
                if step.frame is not None:
                    frame = store.read_at(step.frame, span.id, step.step)
                    if step.frame_shape is not None and tuple(frame.shape) != step.frame_shape:
                        raise CorruptData(
                            "framestore.db",
                            0,
                            f"episode {span.id} step {step.step}: the database says "
                            f"{'x'.join(map(str, step.frame_shape))} but the stored frame is "
                            f"{'x'.join(map(str, frame.shape))}",
                        )
                others = {name: c.at(step.step) for name, c in cursors.items()}
                yield StepFrame(span, step, frame, others, obs.get(step.step))


class StreamCursor:
    """One episode's frames of one stream, read in step order as the steps ask."""

    def __init__(self, store: FrameStore, episode_id: int, start: int, stop: int, stream: str):
        self._frames = store.iter_steps_frames(episode_id, start, stop, stream=stream)
        self._next = next(self._frames, None)

    def at(self, step: int) -> np.ndarray | None:
        """The frame of ``step`` (None: the stream has none there)."""
        while self._next is not None and self._next[0] < step:
            self._next = next(self._frames, None)
        if self._next is not None and self._next[0] == step:
            return self._next[1]
        return None
