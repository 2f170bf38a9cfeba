"""``framestore export``: write an episode's frames as a video, an animation, PNG files or
an ``.npz`` archive. The GUI calls the same functions.

The output format follows the output path:

| output | writer | exact? | memory |
|---|---|---|---|
| ``*.mp4`` | PyAV, H.264 ``libx264`` yuv420p (plays in browsers) | no: lossy | O(chunk) |
| ``*.mp4`` + ``lossless`` | PyAV, ``libx264rgb`` crf 0, rgb24 (4:4:4; players vary) | yes | O(chunk) |
| ``*.gif`` | frames streamed, one local palette per frame | yes up to 256 colours | O(chunk) |
| ``*.webp`` | PyAV ``libwebp_anim``, lossless | yes (see below) | O(encoded output) |
| a directory, or a path ending in ``/`` | one PNG per step, ``step_000000.png`` | yes | O(chunk) |
| ``*.npz`` (deflated, like ``np.savez_compressed``) | ``frames``, ``step_index``, ``actions``, ``rewards``, ... | yes | O(chunk) + O(steps) |

"Exact" means decoding the output gives back the stored pixels (before ``scale`` and any
padding; grey frames come back as R = G = B in RGB videos); ``ExportReport.exact`` says
whether it holds. MP4 and GIF drop alpha; WebP keeps it, but libwebp stores fully
transparent pixels as transparent black (FFmpeg does not expose libwebp's ``exact``
setting). Only the default MP4 is lossy by design: that is what ``.mp4`` without
``lossless`` means. ``lossless`` never degrades silently: a GIF frame over 256 colours,
GIF with alpha, or a WebP frame with colour under transparent pixels fails the export
with ``InvalidInput`` naming the step. Pillow's animated GIF/WebP writers keep every
frame until the end, hence the frame-by-frame GIF writer here and PyAV for WebP.

Everything that can be checked is checked before anything is written (episode, range,
format, frame shapes, output path, PyAV present); the output is written as
``<name>.partial`` and renamed into place once complete and fsynced, so an error or an
interrupt part-way leaves no output behind.

A run export (``export_run``) writes into a directory (``episode_000042.mp4``, ...) or,
given a file name ``NAME.EXT``, one file per episode next to it: ``NAME-ep42.EXT``.

NPZ layout: one entry per exported frame (rows without a stored frame, and skipped
corrupt frames, are left out): ``frames`` (N, H, W[, C]) uint8 as stored, ``step_index``
(N,) int64, and aligned with it ``actions`` (the action that led to that row; 0 where
``has_action`` is False, i.e. the reset row), ``has_action``, ``rewards`` (float64),
``terminated``, ``truncated``. Actions numpy cannot hold as one numeric array (Dict or
Tuple spaces) are stored as JSON text in ``actions_json``. ``np.load`` works without
``allow_pickle``.

An episode that is still being recorded is exported as far as its rows are committed
when the export starts.

``export_parquet`` writes several episodes (a run, a list, or the whole store) as
sharded Parquet with frames as PNG bytes for Hugging Face ``datasets``, Ray Data, pandas
and DuckDB (see ``tools/export/_parquet.py``). ``export_lerobot`` writes them as a LeRobot
v3 dataset (``_lerobot.py``), ``export_rrd`` as a rerun recording (``_rrd.py``),
``export_minari`` as a Minari dataset (``_minari.py``).
"""

from ._lerobot import LeRobotReport, export_lerobot
from ._minari import MinariReport, export_minari
from ._options import DEFAULT_FPS, ExportOptions
from ._parquet import DEFAULT_SHARD_BYTES, ParquetReport, export_parquet
from ._plan import FORMATS, format_of
from ._report import ExportReport, Progress, RunProgress
from ._rrd import RrdReport, export_rrd
from ._run import export_episode, export_run, run_outputs

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_SHARD_BYTES",
    "FORMATS",
    "ExportOptions",
    "ExportReport",
    "LeRobotReport",
    "MinariReport",
    "ParquetReport",
    "Progress",
    "RrdReport",
    "RunProgress",
    "export_episode",
    "export_lerobot",
    "export_minari",
    "export_parquet",
    "export_rrd",
    "export_run",
    "format_of",
    "run_outputs",
]
