"""Pixel conversions shared by the writers: to RGB(A), integer upscaling, even padding."""

from __future__ import annotations

import numpy as np

__all__ = ["has_alpha", "pad_even", "to_rgb", "colour_under_transparency", "upscale"]


def has_alpha(shape: tuple[int, ...]) -> bool:
    """True for HxWx2 (grey + alpha) and HxWx4 frames."""
    return len(shape) == 3 and shape[2] in (2, 4)


def to_rgb(frame: np.ndarray, *, keep_alpha: bool = False) -> np.ndarray:
    """HxW, HxWx1, HxWx2 (grey+alpha), HxWx3, HxWx4 -> HxWx3, or HxWx4 with
    ``keep_alpha`` (opaque frames get alpha 255)."""
    if frame.ndim == 2:
        frame = frame[:, :, None]
    c = frame.shape[2]
    rgb = np.repeat(frame[:, :, :1], 3, axis=2) if c in (1, 2) else frame[:, :, :3]
    if not keep_alpha:
        return rgb
    if c in (2, 4):
        alpha = frame[:, :, -1:]
    else:
        alpha = np.full(frame.shape[:2] + (1,), 255, np.uint8)
    return np.concatenate([rgb, alpha], axis=2)


def colour_under_transparency(frame: np.ndarray) -> bool:
    """True when a fully transparent pixel (alpha 0) has a colour other than black.

    libwebp (as FFmpeg drives it, without its ``exact`` setting) stores such pixels as
    transparent black, so they do not decode to the stored values."""
    if not has_alpha(frame.shape):
        return False
    clear = frame[:, :, -1] == 0
    return bool(frame[:, :, :-1][clear].any())


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor."""
    if scale == 1:
        return frame
    return np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


def pad_even(frame: np.ndarray) -> np.ndarray:
    """Repeat the last row/column to make both sizes even (H.264 yuv420p needs it)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    pad = [(0, h % 2), (0, w % 2)] + [(0, 0)] * (frame.ndim - 2)
    return np.pad(frame, pad, mode="edge")
