"""Frame streams other than ``render`` (migration m003): an episode's ``streams`` rows
and the ``step_frames`` pointers of their frames. Render keeps its pointers in
``steps``; a store without m003's tables reads as one ``render`` stream."""

from __future__ import annotations

from .._format import RENDER_STREAM
from ..types import FrameLocation, StreamInfo
from ._base import END_OF_EPISODE, CatalogBase
from ._validate import Cell

__all__ = ["StreamPointer", "StreamQueries"]

#: ``(step, location or None, the frame's shape or None)``: one step of a stream.
StreamPointer = tuple[int, FrameLocation | None, tuple[int, ...] | None]


class StreamQueries(CatalogBase):
    def episode_streams(self, episode_id: int) -> list[StreamInfo]:
        """The episode's streams in index order, ``render`` (index 0) first."""
        (frames,) = self._one(
            "SELECT COUNT(*) FROM steps WHERE episode_id = ? AND frame_segment IS NOT NULL",
            [episode_id],
        )
        out = [StreamInfo(RENDER_STREAM, 0, "uint8", None, None, frames)]
        if not self.has_m003:
            return out
        for idx, name, dtype, shape, shared, n in self._rows(
            "SELECT t.idx, t.name, t.dtype, t.shape, t.shared_with, "
            "(SELECT COUNT(*) FROM step_frames f WHERE f.episode_id = t.episode_id "
            " AND f.stream = t.idx AND f.frame_segment IS NOT NULL) "
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

    def stream_pointers(
        self, episode_id: int, stream: int, start: int = 0, stop: int | None = None
    ) -> list[StreamPointer]:
        """Every step row of ``start <= step < stop`` with its frame of stream index
        ``stream`` (``stream`` >= 1; render's are ``frame_locations``): location None
        where the step has none."""
        if not self.has_m003:
            rows = self._rows(
                "SELECT step, NULL, NULL, NULL, NULL FROM steps "
                "WHERE episode_id = ? AND step >= ? AND step < ? ORDER BY step",
                [episode_id, start, END_OF_EPISODE if stop is None else stop],
            )
        else:
            rows = self._rows(
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
