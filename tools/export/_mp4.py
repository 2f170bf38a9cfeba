"""MP4 writer: H.264 through PyAV, browser-friendly yuv420p or exact ``libx264rgb``."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from framestore.files import fsync_file

from ._pixels import has_alpha, pad_even, to_rgb, upscale
from ._plan import Plan
from ._report import ExportReport
from ._rows import Row

__all__ = ["write_mp4"]


def write_mp4(rows: Iterator[Row], plan: Plan, report: ExportReport) -> None:
    """Default: ``libx264`` yuv420p, sizes padded to even with edge pixels (lossy).
    ``lossless``: ``libx264rgb`` crf 0, rgb24 4:4:4 at the exact size. Alpha is dropped."""
    import av

    h, w = plan.scaled_size
    if not plan.lossless:
        h, w = h + h % 2, w + w % 2
        report.padded = (h, w) != plan.scaled_size
    report.width, report.height = w, h
    report.exact = plan.lossless and not has_alpha(plan.shape)
    rate = Fraction(plan.fps).limit_denominator(1001)
    with av.open(
        str(plan.partial), "w", format="mp4", options={"movflags": "+faststart"}
    ) as container:
        if plan.lossless:
            stream = container.add_stream("libx264rgb", rate=rate, options={"crf": "0"})
            stream.pix_fmt = "rgb24"
        else:
            stream = container.add_stream("libx264", rate=rate)
            stream.pix_fmt = "yuv420p"
        stream.width, stream.height = w, h
        for i, (_row, frame) in enumerate(rows):
            rgb = upscale(to_rgb(frame), plan.scale)
            if not plan.lossless:
                rgb = pad_even(rgb)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
            report.frames += 1
        container.mux(stream.encode(None))
    fsync_file(plan.partial)
