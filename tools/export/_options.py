"""``ExportOptions``: what to export and how, checked once when built."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from framestore.errors import InvalidInput

__all__ = ["DEFAULT_FPS", "MAX_FPS", "MAX_SCALE", "MIN_FPS", "ExportOptions", "check_fps"]

DEFAULT_FPS = 60.0
MAX_FPS = 1000.0
#: GIF delays are 16-bit centiseconds (655 s at most); no format wants slower.
MIN_FPS = 0.01
#: Integer upscaling beyond this is never useful (the scaled frame is bounded too).
MAX_SCALE = 64


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_fps(fps: Any) -> float:
    """``fps`` as a float in [``MIN_FPS``, ``MAX_FPS``]; ``InvalidInput`` otherwise."""
    try:
        value = float(fps)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"fps must be a number, got {fps!r}") from None
    if not math.isfinite(value) or not MIN_FPS <= value <= MAX_FPS:
        raise InvalidInput(f"fps must be from {MIN_FPS:g} to {MAX_FPS:g}, got {value:g}")
    return value


@dataclass(frozen=True)
class ExportOptions:
    """The choices of one export, shared by every episode of a run export.

    Built once (``InvalidInput`` for a bad value) and passed through unchanged.

    Attributes:
        fps: frames per second of videos and animations; None: the run's
            ``render_fps``, else ``DEFAULT_FPS``.
        start: first step exported.
        stop: export steps before this one; None: to the last committed step.
        lossless: every written pixel decodes to the stored one, or the export fails
            (MP4: ``libx264rgb`` crf 0; GIF: no frame over 256 colours, no alpha; WebP:
            no colour under fully transparent pixels). MP4 drops alpha (reported).
        scale: integer nearest-neighbour upscaling (not for npz).
        skip_corrupt: leave out frames whose data fails a check (listed in the report)
            instead of stopping with the ``CorruptData`` error.
        stream: the frame stream exported (``EpisodeInfo.streams``; default ``render``).
    """

    fps: float | None = None
    start: int = 0
    stop: int | None = None
    lossless: bool = False
    scale: int = 1
    skip_corrupt: bool = False
    stream: str = "render"

    def __post_init__(self) -> None:
        if not isinstance(self.stream, str) or not self.stream:
            raise InvalidInput(f"stream must be a stream name, got {self.stream!r}")
        if not _is_int(self.scale) or not 1 <= self.scale <= MAX_SCALE:
            raise InvalidInput(
                f"scale must be an integer from 1 to {MAX_SCALE}, got {self.scale!r}"
            )
        if not _is_int(self.start) or self.start < 0:
            raise InvalidInput(f"start must be an integer >= 0, got {self.start!r}")
        if self.stop is not None and (not _is_int(self.stop) or self.stop <= self.start):
            raise InvalidInput(f"stop must be an integer > start ({self.start}), got {self.stop!r}")
        # Plain Python values from here on (numpy integers, "30" from a text field).
        set_field = object.__setattr__
        set_field(self, "scale", int(self.scale))
        set_field(self, "start", int(self.start))
        set_field(self, "stop", None if self.stop is None else int(self.stop))
        set_field(self, "fps", None if self.fps is None else check_fps(self.fps))
        set_field(self, "lossless", bool(self.lossless))
        set_field(self, "skip_corrupt", bool(self.skip_corrupt))

    @classmethod
    def of(cls, options: ExportOptions | None, overrides: dict[str, Any]) -> ExportOptions:
        """``options``, or one built from keyword arguments; not both."""
        if options is None:
            return cls(**overrides)
        if overrides:
            raise TypeError(f"pass ExportOptions or keyword options, not both: {sorted(overrides)}")
        return options
