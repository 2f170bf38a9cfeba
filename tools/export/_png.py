"""PNG directory writer: one exact PNG per step, ``step_000042.png``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from framestore.files import fsync_dir

from ._pixels import upscale
from ._plan import Plan
from ._report import ExportReport
from ._rows import Row

__all__ = ["write_png_dir"]


def write_png_dir(rows: Iterator[Row], plan: Plan, report: ExportReport) -> None:
    """Frames as stored (grey, grey+alpha, RGB, RGBA), each file fsynced, then the
    directory."""
    from PIL import Image

    plan.partial.mkdir()
    for row, frame in rows:
        img = frame[:, :, 0] if frame.ndim == 3 and frame.shape[2] == 1 else frame
        img = upscale(img, plan.scale)
        path = plan.partial / f"step_{row.step:06d}.png"
        with open(path, "wb") as fp:
            Image.fromarray(np.ascontiguousarray(img)).save(fp, format="PNG")
            fp.flush()
            os.fsync(fp.fileno())
        report.frames += 1
        report.height, report.width = img.shape[:2]
    fsync_dir(plan.partial)
