"""Frame streams other than ``render`` (migration m003): an episode's ``streams`` rows
and the ``step_frames`` pointers of their frames. Render keeps its pointers in
``steps``; a store without m003's tables reads as one ``render`` stream."""

from __future__ import annotations

import math

from .._format import RENDER_STREAM
from .._format.streams import itemsize
from ..types import FrameLocation, StreamInfo
from ._base import END_OF_EPISODE, Connection
from ._validate import Cell

__all__ = ["StreamPointer", "Streams"]

#: ``(step, location or None, the frame's shape or None)``: one step of a stream.
StreamPointer = tuple[int, FrameLocation | None, tuple[int, ...] | None]


class Streams:
    """An episode's frame streams, their pointers, observations and per-stream totals."""

    def __init__(self, db: Connection):
        self._db = db

    def of_episode(self, episode_id: int, *, counts: bool = True) -> list[StreamInfo]:
        """The episode's streams in index order, ``render`` (index 0) first; without
        ``counts`` their ``frames`` are -1 (no count query: a reader's lookup)."""
        frames = -1
        if counts:
            (frames,) = self._db.one(
                "SELECT COUNT(*) FROM steps WHERE episode_id = ? AND frame_segment IS NOT NULL",
                [episode_id],
            )
        out = [StreamInfo(RENDER_STREAM, 0, "uint8", None, None, frames)]
        if not self._db.has_m003:
            return out
        count = (
            "(SELECT COUNT(*) FROM step_frames f WHERE f.episode_id = t.episode_id "
            " AND f.stream = t.idx AND f.frame_segment IS NOT NULL)"
            if counts
            else "-1"
        )
        for idx, name, dtype, shape, shared, n in self._db.rows(
            f"SELECT t.idx, t.name, t.dtype, t.shape, t.shared_with, {count} "
            "FROM streams t WHERE t.episode_id = ? ORDER BY t.idx",
            [episode_id],
        ):
            c = Cell("streams", f"episode {episode_id} idx {idx!r}")
            out.append(
                StreamInfo(
                    name=c.text("name", name, null=False),
                    index=c.int("idx", idx, lo=1, hi=2**16 - 1),
                    dtype=c.text("dtype", dtype, null=False),
                    shape=c.stream_shape("shape", shape),
                    shared_with=c.int("shared_with", shared, null=True, lo=0),
                    frames=n,
                )
            )
        return out

    def pointers(
        self, episode_id: int, stream: int, start: int = 0, stop: int | None = None
    ) -> list[StreamPointer]:
        """Every step row of ``start <= step < stop`` with its frame of stream index
        ``stream`` (``stream`` >= 1; render's are ``Episodes.frame_locations``): location None
        where the step has none."""
        if not self._db.has_m003:
            rows = self._db.rows(
                "SELECT step, NULL, NULL, NULL, NULL FROM steps "
                "WHERE episode_id = ? AND step >= ? AND step < ? ORDER BY step",
                [episode_id, start, END_OF_EPISODE if stop is None else stop],
            )
        else:
            rows = self._db.rows(
                "SELECT s.step, f.frame_segment, f.frame_offset, f.frame_slot, f.frame_shape "
                "FROM steps s LEFT JOIN step_frames f ON f.episode_id = s.episode_id "
                "AND f.stream = ? AND f.step = s.step "
                "WHERE s.episode_id = ? AND s.step >= ? AND s.step < ? ORDER BY s.step",
                [stream, episode_id, start, END_OF_EPISODE if stop is None else stop],
            )
        out: list[StreamPointer] = []
        for step, seg, off, slot, shape in rows:
            c = Cell("step_frames", f"episode {episode_id} stream {stream} step {step!r}")
            out.append(
                (
                    c.int("step", step, lo=0),
                    c.location(seg, off, slot),
                    c.stream_shape("frame_shape", shape),
                )
            )
        return out

    def observations(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> list[tuple[int, bytes | None]]:
        """``(step, typed binary or None)`` of the episode's rows (m004's
        ``steps.observation``; None everywhere in an older store)."""
        column = "observation" if self._db.has_m004 else "NULL"
        rows = self._db.rows(
            f"SELECT step, {column} FROM steps WHERE episode_id = ? AND step >= ? "
            "AND step < ? ORDER BY step",
            [episode_id, start, END_OF_EPISODE if stop is None else stop],
        )
        out = []
        for step, blob in rows:
            c = Cell("steps", f"episode {episode_id} step {step!r}")
            if blob is not None and not isinstance(blob, bytes):
                raise c.bad("observation", "expected a blob")
            out.append((c.int("step", step, lo=0), blob))
        return out

    def totals(self) -> dict[str, tuple[int, int]]:
        """``{stream name: (frames, raw bytes)}`` of live episodes' streams other than
        render; a frame stored once for a stream and render (the same pointer) counts as
        that stream's frame but not its raw bytes (render's count them). A published
        store's come from its per-stream totals (never its steps or step_frames)."""
        if self._db.has_stream_totals:
            return {
                name: (int(frames), int(raw))
                for name, frames, raw in self._db.rows(
                    "SELECT t.name, SUM(x.frames), SUM(x.raw_frame_bytes) FROM stream_totals x "
                    "JOIN streams t ON t.episode_id = x.episode_id AND t.idx = x.stream "
                    "JOIN episodes e ON e.id = x.episode_id WHERE e.status != 'deleted' "
                    "GROUP BY t.name HAVING SUM(x.frames) > 0 ORDER BY t.name"
                )
            }
        out: dict[str, tuple[int, int]] = {}
        for _idx, name, n, size in self._stream_frame_groups(None):
            frames, raw = out.get(name, (0, 0))
            out[name] = (frames + n, raw + size)
        return dict(sorted(out.items()))

    def episode_totals(self, episode_id: int) -> dict[int, tuple[int, int]]:
        """``{stream index: (frames, raw bytes)}`` of every stream of one episode other
        than render (``(0, 0)`` for one without frames), counted as ``totals``
        counts (a frame shared with render: no raw bytes). What ``publish`` writes."""
        if not self._db.has_m003:
            return {}
        out = {
            int(idx): (0, 0)
            for (idx,) in self._db.rows(
                "SELECT idx FROM streams WHERE episode_id = ? ORDER BY idx", [int(episode_id)]
            )
        }
        for idx, _name, n, size in self._stream_frame_groups(int(episode_id)):
            frames, raw = out.get(idx, (0, 0))
            out[idx] = (frames + n, raw + size)
        return out

    def _stream_frame_groups(self, episode_id: int | None) -> list[tuple[int, str, int, int]]:
        """``(stream index, name, frames, raw bytes)`` per group of stored frames of
        streams other than render, of live episodes (of one episode when
        ``episode_id``); a frame with render's pointer counts no raw bytes."""
        if not self._db.has_m003:
            return []
        where, params = "", []
        if episode_id is not None:
            where, params = " AND f.episode_id = ?", [episode_id]
        out = []
        for idx, name, dtype, shape, shared, n in self._db.rows(
            "SELECT t.idx, t.name, t.dtype, f.frame_shape, "
            "(s.frame_segment IS f.frame_segment AND s.frame_offset IS f.frame_offset "
            " AND s.frame_slot IS f.frame_slot), COUNT(*) "
            "FROM step_frames f JOIN streams t ON t.episode_id = f.episode_id AND t.idx = f.stream "
            "JOIN episodes e ON e.id = f.episode_id "
            "JOIN steps s ON s.episode_id = f.episode_id AND s.step = f.step "
            f"WHERE e.status != 'deleted' AND f.frame_segment IS NOT NULL{where} "
            "GROUP BY t.idx, t.name, t.dtype, f.frame_shape, 5",
            params,
        ):
            c = Cell("streams", f"name {name!r}")
            dims = c.stream_shape("frame_shape", shape) or ()
            size = 0 if shared else n * math.prod(dims) * itemsize(dtype)
            out.append((int(idx), name, int(n), size))
        return out
