"""Animated WebP writer: PyAV's ``libwebp_anim`` in libwebp's lossless mode."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from framestore.errors import InvalidInput
from framestore.files import fsync_file

from ._pixels import colour_under_transparency, to_rgb, upscale
from ._plan import Plan
from ._report import ExportReport
from ._rows import Row

__all__ = ["write_webp"]


def write_webp(rows: Iterator[Row], plan: Plan, report: ExportReport) -> None:
    """Every frame lossless (``lossless=1``), alpha kept. libwebp stores fully transparent
    pixels as transparent black: a frame with colour there is not exact, which fails a
    ``lossless`` export (naming the step) and otherwise clears ``report.exact``.

    libwebp's animation encoder keeps the encoded frames until the end (O(output))."""
    import av

    h, w = plan.scaled_size
    report.width, report.height = w, h
    rate = Fraction(plan.fps).limit_denominator(1001)
    with av.open(str(plan.partial), "w", format="webp", options={"loop": "0"}) as container:
        stream = container.add_stream("libwebp_anim", rate=rate, options={"lossless": "1"})
        stream.pix_fmt = "bgra"
        stream.width, stream.height = w, h
        for i, (row, frame) in enumerate(rows):
            if colour_under_transparency(frame):
                if plan.lossless:
                    raise InvalidInput(
                        f"episode {plan.episode_id} step {row.step}: WebP keeps no colour "
                        "under fully transparent pixels, so lossless export cannot hold this "
                        "frame; use .npz or a PNG directory"
                    )
                report.exact = False
            rgba = upscale(to_rgb(frame, keep_alpha=True), plan.scale)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba), format="rgba")
            vf.pts = i
            container.mux(stream.encode(vf))
            report.frames += 1
        container.mux(stream.encode(None))
    fsync_file(plan.partial)
