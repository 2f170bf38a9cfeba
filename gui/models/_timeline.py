"""``TimelineModel``: what the replay timeline draws, per step and per pixel column.

The data is a ``StepTrack`` (``FrameStore.step_track``: rewards, actions and flags of
every step, one query, no frames). The model keeps it as numpy arrays and answers what a
widget needs, without Qt:

* ``columns(width)``: the episode binned into ``width`` pixel columns (reward min/max,
  cumulative return, the action track, markers), computed once per width and data
  version, so repainting while scrubbing a 10,000-step episode costs a pixmap blit;
* ``x_of(step, width)`` / ``step_at(x, width)``: the cursor's position and the step a
  click or drag at ``x`` seeks to;
* ``describe(step)``: the hover text, exact values included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from framestore import FrameStore, StepTrack
from tools.text import format_number

from ._signal import Signal

__all__ = ["MARKERS", "PAGE_STEPS", "TimelineColumns", "TimelineModel"]

#: Marker kinds, in drawing order: a step that ended the episode, one cut by a time limit,
#: a step whose frame was not stored (dropped), a row rebuilt by ``recover``.
MARKERS = ("terminated", "truncated", "dropped", "recovered")
#: Steps read per query when fetching a long episode.
PAGE_STEPS = 4096


@dataclass(frozen=True)
class TimelineColumns:
    """An episode binned into ``width`` pixel columns. Arrays have one entry per column
    (``x = 0 .. width-1``); a column covers steps ``first[x] <= step < first[x + 1]``.

    Attributes:
        reward_min, reward_max: the smallest and largest reward in the column.
        returns: the cumulative return at the column's last step.
        reward_range, return_range: ``(low, high)`` over the whole episode, 0 included,
            never empty (what the plot is scaled to).
        action_kind: ``"discrete"``, ``"continuous"`` or ``"none"``.
        actions: discrete: the column's most frequent action (``-1``: none);
            continuous: shape ``(width, k)``, each component's mean scaled to 0..1.
        action_count: discrete: the number of distinct actions (for a palette).
        action_labels: discrete: the action each code stands for (code ``i`` is
            ``action_labels[i]``), for the colour key.
        markers: per kind in ``MARKERS``, the columns holding at least one such step.
    """

    width: int
    first: np.ndarray
    reward_min: np.ndarray
    reward_max: np.ndarray
    returns: np.ndarray
    reward_range: tuple[float, float]
    return_range: tuple[float, float]
    action_kind: str
    actions: np.ndarray
    action_count: int
    markers: dict[str, np.ndarray]
    action_labels: tuple[str, ...] = ()


_FIELDS = ("steps", "rewards", "actions", "terminated", "truncated", "has_frame", "recovered")


def _range(*arrays: np.ndarray) -> tuple[float, float]:
    lo = min([0.0] + [float(np.min(a)) for a in arrays if a.size])
    hi = max([0.0] + [float(np.max(a)) for a in arrays if a.size])
    if hi - lo < 1e-12:
        hi = lo + 1.0
    return lo, hi


class TimelineModel:
    """The steps of one episode for the timeline; ``changed()`` fires when they change.

    ``set_track(episode_id, track)`` replaces the data (a newly opened episode);
    ``extend(episode_id, track)`` appends the rows of a live episode recorded since.
    Columns are cached per width and recomputed only after the data changed.
    """

    def __init__(self) -> None:
        self.changed = Signal()
        self.episode_id: int | None = None
        self.version = 0
        self._cache: dict[int, TimelineColumns] = {}
        self._set_arrays(StepTrack((), (), (), (), (), (), ()))

    # ------------------------------------------------------------------ data
    @staticmethod
    def fetch(
        store: FrameStore, episode_id: int, *, start: int = 0, page: int = PAGE_STEPS
    ) -> StepTrack:
        """Read ``step >= start`` of an episode, ``page`` steps per query (it reads SQLite:
        not on the UI thread)."""
        parts: list[StepTrack] = []
        while True:
            part = store.step_track(episode_id, start, start + page)
            parts.append(part)
            if len(part) < page:
                break
            start = part.steps[-1] + 1
        if len(parts) == 1:
            return parts[0]
        return StepTrack(*(sum((getattr(p, f) for p in parts), ()) for f in _FIELDS))

    def set_track(self, episode_id: int | None, track: StepTrack) -> None:
        """Show ``track`` (all committed steps of ``episode_id``, from step 0)."""
        self.episode_id = episode_id
        self._set_arrays(track)
        self._bump()

    def clear(self) -> None:
        self.set_track(None, StepTrack((), (), (), (), (), (), ()))

    def extend(self, episode_id: int, track: StepTrack) -> None:
        """Append rows recorded since (steps at or after ``length`` only; others are
        already here)."""
        if episode_id != self.episode_id or not len(track):
            return
        keep = [i for i, s in enumerate(track.steps) if s >= self.length]
        if not keep:
            return
        merged = StepTrack(
            *(getattr(self._track, f) + tuple(getattr(track, f)[i] for i in keep) for f in _FIELDS)
        )
        self._set_arrays(merged)
        self._bump()

    def _set_arrays(self, track: StepTrack) -> None:
        self._track = track
        n = len(track)
        self.length = n
        self.reward_known = np.array([r is not None for r in track.rewards], dtype=bool)
        self.rewards = np.array([0.0 if r is None else r for r in track.rewards], dtype=float)
        self.returns = np.cumsum(self.rewards) if n else np.zeros(0)
        self.flags = {
            "terminated": np.array(track.terminated, dtype=bool),
            "truncated": np.array(track.truncated, dtype=bool),
            "dropped": ~np.array(track.has_frame, dtype=bool),
            "recovered": np.array(track.recovered, dtype=bool),
        }
        kind, values, labels = _encode_actions(track.actions)
        self.action_kind, self.action_values, self.action_labels = kind, values, labels
        self.action_count = len(labels)

    def _bump(self) -> None:
        self.version += 1
        self._cache.clear()
        self.changed.emit()

    # ------------------------------------------------------------------ geometry
    def step_at(self, x: float, width: int) -> int:
        """The step a click at ``x`` (0..width) means; clamped to the episode."""
        if self.length == 0 or width <= 0:
            return 0
        step = int(x * self.length / width)
        return min(max(step, 0), self.length - 1)

    def column_of(self, step: int, width: int) -> int:
        """The pixel column that draws ``step`` (the last one, when a short episode's step
        spans several)."""
        n = self.length
        if n == 0 or width <= 0:
            return 0
        step = min(max(step, 0), n - 1)
        return -(-(step + 1) * width // n) - 1  # largest x with x * n // width <= step

    def x_of(self, step: int, width: int) -> float:
        """Where the cursor of ``step`` goes: the middle of its span, or of the column
        holding it when columns hold several steps."""
        n = self.length
        if n == 0:
            return 0.0
        step = min(max(step, 0), n - 1)
        if n > width:
            return self.column_of(step, width) + 0.5
        return (step + 0.5) * width / n

    def columns(self, width: int) -> TimelineColumns:
        """The episode binned into ``width`` columns (cached until the data changes)."""
        width = max(1, int(width))
        hit = self._cache.get(width)
        if hit is None:
            hit = self._cache[width] = self._bin(width)
        return hit

    def _bin(self, width: int) -> TimelineColumns:
        n = self.length
        # column x covers steps first[x] .. first[x+1]-1; with fewer steps than pixels a
        # step spans several columns (first repeats), so map each column to a step
        first = (np.arange(width + 1) * n) // width if n else np.zeros(width + 1, dtype=int)
        if n == 0:
            empty = np.zeros(width)
            return TimelineColumns(
                width, first, empty, empty, empty, (0.0, 1.0), (0.0, 1.0), "none",
                np.full(width, -1), 0, {k: np.zeros(0, dtype=int) for k in MARKERS},
            )  # fmt: skip
        # reduceat over non-decreasing starts: a column reduces its own steps, and one
        # that shares its step with the next (a short episode) gets that step's value
        starts = np.minimum(first[:-1], n - 1)
        stops = np.maximum(first[1:], starts + 1)
        rmin = np.minimum.reduceat(self.rewards, starts)
        rmax = np.maximum.reduceat(self.rewards, starts)
        returns = self.returns[stops - 1]
        markers = {
            kind: np.flatnonzero(np.logical_or.reduceat(self.flags[kind], starts))
            for kind in MARKERS
        }
        return TimelineColumns(
            width=width,
            first=first,
            reward_min=rmin,
            reward_max=rmax,
            returns=returns,
            reward_range=_range(self.rewards),
            return_range=_range(self.returns),
            action_kind=self.action_kind,
            actions=self._bin_actions(starts, stops),
            action_count=self.action_count,
            markers=markers,
            action_labels=self.action_labels,
        )

    def _bin_actions(self, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        v = self.action_values
        if self.action_kind == "discrete":
            # the most frequent action of each column: per-column bincount by offsetting
            codes = v + 1  # -1 (no action) -> 0
            k = self.action_count + 1
            lengths = stops - starts
            col = np.repeat(np.arange(len(starts)), lengths)
            # the steps of every column, in order: starts[x], starts[x] + 1, ...
            offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            idx = np.repeat(starts, lengths) + offsets
            counts = np.bincount(col * k + codes[idx], minlength=len(starts) * k)
            counts = counts.reshape(len(starts), k)
            counts[:, 0] = np.where(counts[:, 1:].sum(axis=1) > 0, -1, counts[:, 0])
            return np.argmax(counts, axis=1) - 1
        if self.action_kind == "continuous":
            known = ~np.isnan(v)
            sums = np.add.reduceat(np.where(known, v, 0.0), starts, axis=0)
            counts = np.add.reduceat(known.astype(np.int64), starts, axis=0)
            means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            lo, hi = np.nanmin(v, axis=0), np.nanmax(v, axis=0)
            scale = np.where(hi - lo > 1e-12, hi - lo, 1.0)
            return np.nan_to_num((means - lo) / scale, nan=0.5)
        return np.full(len(starts), -1)

    # ------------------------------------------------------------------ text
    def describe(self, step: int) -> str:
        """The hover text of ``step``: readable numbers, then the exact reward."""
        if not 0 <= step < self.length:
            return ""
        t = self._track
        parts = [f"step {t.steps[step]}"]
        if self.reward_known[step]:
            parts.append(f"reward {format_number(t.rewards[step])}")
        else:
            parts.append("reward unknown")
        parts.append(f"return {format_number(float(self.returns[step]))}")
        action = t.actions[step]
        if action is not None:
            parts.append(f"action {_action_text(action)}")
        flags = [k for k in MARKERS if self.flags[k][step]]
        if flags:
            parts.append(", ".join(flags))
        text = "  ·  ".join(parts)
        if self.reward_known[step] and format_number(t.rewards[step]) != repr(t.rewards[step]):
            text += f"\nexact reward {t.rewards[step]!r}"
        return text


def _action_text(action) -> str:
    values = np.asarray(action).ravel()
    if values.dtype.kind == "f":
        inner = ", ".join(format_number(float(x)) for x in values)
        return inner if values.size == 1 else f"[{inner}]"
    return str(action.tolist() if isinstance(action, np.ndarray) else action)


def _encode_actions(actions: tuple) -> tuple[str, np.ndarray, tuple[str, ...]]:
    """``(kind, values, labels)``: discrete actions as small ints (``-1`` for none) with
    the action each code stands for, continuous ones as a float matrix (NaN rows for
    none); anything else: no track."""
    present = [a for a in actions if a is not None]
    if not present:
        return "none", np.full(len(actions), -1), ()
    try:
        arrays = [np.asarray(a) for a in present]
    except (TypeError, ValueError):
        return "none", np.full(len(actions), -1), ()
    shape = arrays[0].shape
    if any(a.shape != shape or a.dtype.kind not in "iubf" for a in arrays):
        return "none", np.full(len(actions), -1), ()
    if all(a.dtype.kind in "iub" for a in arrays) and shape == ():
        values = np.array([-1 if a is None else int(a) for a in actions], dtype=np.int64)
        distinct = np.unique(values[values >= 0])
        # codes 0..k-1 in order of value, so colours are stable across columns
        codes = np.full(len(values), -1, dtype=np.int64)
        codes[values >= 0] = np.searchsorted(distinct, values[values >= 0])
        return "discrete", codes, tuple(str(v) for v in distinct)
    width = int(np.prod(shape)) if shape else 1
    matrix = np.full((len(actions), width), np.nan)
    for i, a in enumerate(actions):
        if a is not None:
            matrix[i] = np.asarray(a, dtype=float).ravel()
    return "continuous", matrix, ()
