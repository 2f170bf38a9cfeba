"""Animated GIF writer, frame by frame (Pillow's ``save_all`` keeps every frame until the
end): header, NETSCAPE loop block, then per frame a graphic control extension, an image
descriptor with a local colour table and LZW data from Pillow's GIF encoder."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import numpy as np

from framestore.errors import InvalidInput

from ._pixels import has_alpha, to_rgb, upscale
from ._plan import Plan
from ._report import ExportReport
from ._rows import Row

__all__ = ["write_gif"]

_MAX_SIDE = 0xFFFF


def write_gif(rows: Iterator[Row], plan: Plan, report: ExportReport) -> None:
    """Exact while every changed region has at most 256 colours (one local palette per
    frame); otherwise quantised, or with ``lossless`` an error naming the step. Alpha is
    dropped (``lossless`` refuses alpha frames when planning)."""
    from PIL import GifImagePlugin, Image

    h, w = plan.scaled_size
    if w > _MAX_SIDE or h > _MAX_SIDE:
        raise InvalidInput(f"GIF frames are at most 65535x65535, not {w}x{h}")
    report.width, report.height = w, h
    report.exact = not has_alpha(plan.shape)
    delays = gif_delays(plan.fps)
    with open(plan.partial, "wb") as fp:
        fp.write(b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0))
        fp.write(b"!\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", 0) + b"\x00")
        previous = None
        for row, frame in rows:
            rgb = upscale(to_rgb(frame), plan.scale)
            (x0, y0), region = _changed_region(rgb, previous)
            previous = rgb
            index, palette, exact = _palette_frame(region)
            if not exact:
                if plan.lossless:
                    raise InvalidInput(
                        f"episode {plan.episode_id} step {row.step} has more than 256 colours: "
                        "GIF cannot hold it exactly; use .webp, .npz or a PNG directory"
                    )
                report.exact = False
            im = Image.frombytes("P", (region.shape[1], region.shape[0]), index.tobytes())
            im.putpalette(palette, "RGB")
            # Pillow's frame writer (LZW); the delay goes in our own control block.
            data = GifImagePlugin.getdata(im, (x0, y0), include_color_table=True)
            fp.write(b"!\xf9\x04\x04" + struct.pack("<H", next(delays)) + b"\x00\x00")
            for part in data:
                fp.write(part)
            report.frames += 1
        fp.write(b";")
        fp.flush()
        os.fsync(fp.fileno())


def _changed_region(
    rgb: np.ndarray, previous: np.ndarray | None
) -> tuple[tuple[int, int], np.ndarray]:
    """``((x0, y0), region)``: only the rectangle that changed is stored (disposal 1
    keeps the rest); an unchanged frame is one pixel, which keeps the timing."""
    if previous is None:
        return (0, 0), rgb
    changed = (rgb != previous).any(axis=2)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if not len(rows):
        return (0, 0), rgb[:1, :1]
    y0, x0 = int(rows[0]), int(cols[0])
    return (x0, y0), rgb[y0 : rows[-1] + 1, x0 : cols[-1] + 1]


def _palette_frame(rgb: np.ndarray) -> tuple[np.ndarray, bytes, bool]:
    """An HxWx3 frame as (palette indices, 768-byte palette, exact)."""
    packed = (
        rgb[:, :, 0].astype(np.uint32) << 16
        | rgb[:, :, 1].astype(np.uint32) << 8
        | rgb[:, :, 2].astype(np.uint32)
    )
    colors, index = np.unique(packed.ravel(), return_inverse=True)
    if len(colors) <= 256:
        pal = np.zeros((256, 3), np.uint8)
        pal[: len(colors), 0] = colors >> 16
        pal[: len(colors), 1] = (colors >> 8) & 0xFF
        pal[: len(colors), 2] = colors & 0xFF
        return index.reshape(rgb.shape[:2]).astype(np.uint8), pal.tobytes(), True
    from PIL import Image

    q = Image.fromarray(rgb, "RGB").quantize(256, dither=Image.Dither.NONE)
    pal = bytes(q.getpalette("RGB") or b"")[:768].ljust(768, b"\0")
    return np.asarray(q, dtype=np.uint8), pal, False


def gif_delays(fps: float) -> Iterator[int]:
    """Frame delays in centiseconds whose running sum tracks 100/fps per frame. GIF
    viewers treat delays under 2 cs as 10 cs, so 2 cs (50 fps) is the floor."""
    exact = 100.0 / fps
    total = 0.0
    shown = 0
    while True:
        total += exact
        d = max(2, round(total - shown))
        shown += d
        yield d
