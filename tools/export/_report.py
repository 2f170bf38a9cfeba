"""``ExportReport``: what one export wrote."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ._options import DEFAULT_FPS

__all__ = ["ExportReport", "Progress", "RunProgress"]

Progress = Callable[[int, int], None]  # (frames done, frames planned)
RunProgress = Callable[[int, int, int], None]  # (episode id, frames done, frames planned)


@dataclass
class ExportReport:
    """What one export wrote.

    Attributes:
        episode_id: the exported episode.
        path: the output file or directory.
        format: one of ``FORMATS``.
        frames: frames written.
        start, stop: the step range exported (``start <= step < stop``).
        fps: frames per second of videos and animations.
        width, height: size of the written frames (after ``scale`` and padding).
        source_shape: shape of the stored frames.
        scale: integer upscaling factor applied.
        padded: True when a row/column was added (edge pixels) for H.264's even sizes.
        exact: True when decoding the output gives back the stored pixels.
        skipped_steps: steps whose frame was corrupt and was left out (``skip_corrupt``).
        dropped_steps: steps that have no stored frame (dropped while recording).
        bytes: size of the output on disk.
        seconds: wall time of the export.
    """

    episode_id: int
    path: str
    format: str
    frames: int = 0
    start: int = 0
    stop: int = 0
    fps: float = DEFAULT_FPS
    width: int = 0
    height: int = 0
    source_shape: tuple[int, ...] = ()
    scale: int = 1
    padded: bool = False
    exact: bool = True
    skipped_steps: list[int] = field(default_factory=list)
    dropped_steps: list[int] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-ready values."""
        d = asdict(self)
        d["source_shape"] = list(self.source_shape)
        return d
