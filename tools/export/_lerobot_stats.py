"""Feature statistics of a LeRobot export, in LeRobot's layout, streamed.

LeRobot keeps per feature ``min``, ``max``, ``mean``, ``std``, ``count`` and the
quantiles ``q01``, ``q10``, ``q50``, ``q90``, ``q99``: per episode in ``meta/episodes``
(``stats/<feature>/<stat>``) and over the dataset in ``meta/stats.json``. Its own writer
holds a whole episode to compute them; here they come from running sums (exact ``mean``,
``std``, ``min``, ``max``, ``count``) and a bounded, evenly strided sample of the values
(the quantiles, which LeRobot also only estimates, from histograms), so memory does not
grow with the episode. Images follow LeRobot's ``compute_episode_stats``: a sample of
frames (``sample_indices``), downsampled like ``auto_downsample_height_width``, as RGB,
per channel, scaled to [0, 1], shaped (3, 1, 1); their quantiles are exact (256-bin
histograms of the uint8 values).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._pixels import to_rgb

__all__ = ["ImageStats", "VectorStats", "as_json", "image_sample_steps"]

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
_QUANTILE_KEYS = tuple(f"q{int(q * 100):02d}" for q in QUANTILES)
_SAMPLE_ROWS = 4096  # values kept per feature for its quantiles


def image_sample_steps(rows: int) -> set[int]:
    """The row positions of an episode of ``rows`` rows whose frames go into its image
    statistics (LeRobot's ``sample_indices``: 100 to 10,000 evenly spaced frames)."""
    if rows <= 0:
        return set()
    samples = max(min(100, rows), min(int(rows**0.75), 10_000))
    return {int(i) for i in np.round(np.linspace(0, rows - 1, samples))}


def _downsample(img: np.ndarray) -> np.ndarray:
    """LeRobot's ``auto_downsample_height_width`` on an HxWxC frame."""
    height, width = img.shape[:2]
    if max(width, height) < 300:
        return img
    factor = int(width / 150) if width > height else int(height / 150)
    return img[::factor, ::factor]


class VectorStats:
    """Statistics of a numeric feature of shape (d,), fed in batches of rows."""

    def __init__(self) -> None:
        self.count = 0
        self._sum: np.ndarray | None = None
        self._sumsq: np.ndarray | None = None
        self._min: np.ndarray | None = None
        self._max: np.ndarray | None = None
        self._sample: list[np.ndarray] = []
        self._kept = 0
        self._stride = 1

    def update(self, batch: np.ndarray) -> None:
        """Add rows: ``batch`` is (n,) or (n, d)."""
        values = np.asarray(batch, dtype=np.float64).reshape(len(batch), -1)
        if not len(values):
            return
        if self._sum is None:
            self._sum = values.sum(axis=0)
            self._sumsq = (values**2).sum(axis=0)
            self._min, self._max = values.min(axis=0), values.max(axis=0)
        else:
            self._sum += values.sum(axis=0)
            self._sumsq += (values**2).sum(axis=0)
            self._min = np.minimum(self._min, values.min(axis=0))
            self._max = np.maximum(self._max, values.max(axis=0))
        # Keep rows whose position is a multiple of the stride; halve the sample (and
        # double the stride) when it is full: an even sample of every row so far.
        first = (-self.count) % self._stride
        kept = values[first :: self._stride]
        self._sample.append(kept)
        self._kept += len(kept)
        self.count += len(values)
        if self._kept > _SAMPLE_ROWS:
            merged = np.concatenate(self._sample)[::2]
            self._sample, self._kept, self._stride = [merged], len(merged), self._stride * 2

    def stats(self) -> dict[str, np.ndarray]:
        assert self._sum is not None and self._sumsq is not None, "no rows"
        mean = self._sum / self.count
        std = np.sqrt(np.maximum(self._sumsq / self.count - mean**2, 0.0))
        out = {
            "min": self._min,
            "max": self._max,
            "mean": mean,
            "std": std,
            "count": np.array([self.count]),
        }
        sample = np.concatenate(self._sample)
        for key, q in zip(_QUANTILE_KEYS, QUANTILES, strict=True):
            out[key] = np.quantile(sample, q, axis=0)
        return out


class ImageStats:
    """Per-channel statistics of sampled frames, scaled to [0, 1], shaped (3, 1, 1).

    Only a 256-bin histogram per channel is kept: every statistic follows from it
    exactly, and adding a frame is one ``bincount``."""

    def __init__(self) -> None:
        self.count = 0  # frames
        self._hist = np.zeros((3, 256), dtype=np.int64)

    def update(self, frame: np.ndarray) -> None:
        rgb = _downsample(to_rgb(frame))
        for c in range(3):
            self._hist[c] += np.bincount(rgb[:, :, c].ravel(), minlength=256)
        self.count += 1

    def add(self, other: ImageStats) -> None:
        """Fold another one in (an episode's into the dataset's)."""
        self._hist += other._hist
        self.count += other.count

    def stats(self) -> dict[str, np.ndarray]:
        pixels = self._hist[0].sum()
        levels = np.arange(256, dtype=np.float64)
        mean = self._hist @ levels / pixels
        std = np.sqrt(np.maximum(self._hist @ levels**2 / pixels - mean**2, 0.0))
        seen = self._hist > 0
        out = {
            "min": np.array([levels[s].min() for s in seen]),
            "max": np.array([levels[s].max() for s in seen]),
            "mean": mean,
            "std": std,
        }
        cumulative = np.cumsum(self._hist, axis=1)
        for key, q in zip(_QUANTILE_KEYS, QUANTILES, strict=True):
            out[key] = np.array(
                [np.searchsorted(cumulative[c], q * pixels) for c in range(3)], dtype=np.float64
            )
        scaled = {k: (v / 255.0).reshape(3, 1, 1) for k, v in out.items()}
        scaled["count"] = np.array([self.count])
        return scaled


def as_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """``{feature: {stat: nested lists}}``, as LeRobot's ``write_stats`` writes them."""
    return {f: {k: np.asarray(v).tolist() for k, v in s.items()} for f, s in stats.items()}
