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
| ``*.npz`` | ``frames``, ``step_index``, ``actions``, ``rewards``, ... | yes | O(chunk) + O(steps) |

"Exact" means decoding the output gives back the stored pixels (before ``scale`` and any
padding; grey frames come back as R = G = B in RGB videos). MP4 and GIF drop alpha
(``ExportReport.exact`` is then False); WebP keeps it, but libwebp may change the colour
of fully transparent pixels. Only the default MP4 is lossy by design: that is what
``.mp4`` without ``lossless`` means. Pillow's animated GIF/WebP writers keep every frame
until the end, hence the frame-by-frame GIF writer here and PyAV for WebP.

Everything that can be checked is checked before anything is written (episode, range,
format, frame shapes, output path, PyAV present); the output is written as
``<name>.partial`` and renamed into place once complete and fsynced, so an error or an
interrupt part-way leaves no output behind.

NPZ layout: one entry per exported frame (rows without a stored frame, and skipped
corrupt frames, are left out): ``frames`` (N, H, W[, C]) uint8 as stored, ``step_index``
(N,) int64, and aligned with it ``actions`` (the action that led to that row; 0 where
``has_action`` is False, i.e. the reset row), ``has_action``, ``rewards`` (float64),
``terminated``, ``truncated``. Actions numpy cannot hold as one numeric array (Dict or
Tuple spaces) are stored as JSON text in ``actions_json``. ``np.load`` works without
``allow_pickle``.

An episode that is still being recorded is exported as far as its rows are committed
when the export starts.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from framestore.errors import CorruptData, FrameNotFound, InvalidInput
from framestore.files import fsync_dir

__all__ = ["ExportReport", "export_episode", "export_run", "FORMATS", "DEFAULT_FPS"]

FORMATS = ("mp4", "gif", "webp", "png", "npz")
DEFAULT_FPS = 60.0
PARTIAL_SUFFIX = ".partial"
_PAGE_ROWS = 512  # step rows read from SQLite at a time
_AV_HINT = "install PyAV for MP4/WebP export: pip install 'framestore[video]'"

Progress = Callable[[int, int], None]  # (frames done, frames planned)


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
        from dataclasses import asdict

        d = asdict(self)
        d["source_shape"] = list(self.source_shape)
        return d


# --------------------------------------------------------------------------- planning
@dataclass
class _Plan:
    episode_id: int
    out: Path
    partial: Path
    format: str
    fps: float
    start: int
    stop: int
    planned: int  # rows with a stored frame in the range
    shape: tuple[int, ...]
    lossless: bool
    scale: int
    skip_corrupt: bool


def _format_of(out: str | os.PathLike) -> str:
    text = os.fspath(out)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return "png"
    ext = path.suffix.lower().lstrip(".")
    if ext in ("mp4", "gif", "webp", "npz"):
        return ext
    what = f"extension '.{ext}'" if ext else "no extension"
    raise InvalidInput(
        f"{text}: cannot tell the export format ({what}); use .mp4, .gif, .webp, .npz "
        "or a directory path ending in '/' for PNG files"
    )


def _check_output(out: Path, fmt: str) -> None:
    parent = out.parent
    if not parent.exists():
        raise InvalidInput(f"{out}: directory {parent} does not exist")
    if not parent.is_dir():
        raise InvalidInput(f"{out}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidInput(f"{out}: directory {parent} is not writable")
    if fmt == "png":
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InvalidInput(f"{out}: exists and is not an empty directory")
    elif out.is_dir():
        raise InvalidInput(f"{out}: is a directory")


def _needs_av(fmt: str) -> None:
    if fmt in ("mp4", "webp"):
        try:
            import av  # noqa: F401
        except ImportError:
            raise InvalidInput(f"{fmt} export needs PyAV; {_AV_HINT}") from None


def _plan(
    store,
    episode_id: int,
    out: str | os.PathLike,
    *,
    fps: float | None,
    start: int,
    stop: int | None,
    lossless: bool,
    scale: int,
    skip_corrupt: bool,
    check_out: bool = True,
) -> _Plan:
    """Every check that can be made before writing; raises ``InvalidInput`` /
    ``EpisodeNotFound``."""
    ep = store.episode(episode_id)  # EpisodeNotFound for unknown or deleted ids
    fmt = _format_of(out)
    out_path = Path(os.fspath(out).rstrip("/" + os.sep) or ".")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise InvalidInput(f"scale must be an integer >= 1, got {scale!r}")
    if fmt == "npz" and scale != 1:
        raise InvalidInput("npz holds the stored frames exactly; scale applies to images/video")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise InvalidInput(f"start must be an integer >= 0, got {start!r}")
    if stop is not None and (
        isinstance(stop, bool) or not isinstance(stop, (int, np.integer)) or stop <= start
    ):
        raise InvalidInput(f"stop must be an integer > start ({start}), got {stop!r}")
    if fps is None:
        fps = store.run(ep.run_id).config.get("render_fps") or DEFAULT_FPS
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise InvalidInput(f"fps must be a number, got {fps!r}") from None
    if not math.isfinite(fps) or fps <= 0 or fps > 1000:
        raise InvalidInput(f"fps must be in (0, 1000], got {fps:g}")

    # A snapshot of what is committed now: rows of a live episode keep arriving.
    summary = store.frame_summary(ep.id, start, stop)
    end, stop, shapes, planned = summary.steps, summary.stop, list(summary.shapes), summary.frames
    if planned == 0:
        where = f"steps {start}..{stop - 1}" if stop > start else f"from step {start}"
        raise InvalidInput(f"episode {ep.id} has no stored frames {where} (it has {end} steps)")
    if len(shapes) != 1 and fmt != "png":
        raise InvalidInput(
            f"episode {ep.id} has frames of several shapes ({', '.join(sorted(shapes))}); "
            f"{fmt} needs one size: export to a PNG directory instead"
        )
    shape = tuple(int(x) for x in shapes[0].split("x"))
    for text in shapes:
        s = tuple(int(x) for x in text.split("x"))
        if len(s) not in (2, 3) or (len(s) == 3 and s[2] not in (1, 2, 3, 4)):
            raise InvalidInput(f"cannot export frames of shape {text}: need HxW or HxWxC, C<=4")
    _needs_av(fmt)
    if check_out:
        _check_output(out_path, fmt)
    partial = out_path.with_name(out_path.name + PARTIAL_SUFFIX)
    return _Plan(
        ep.id,
        out_path,
        partial,
        fmt,
        fps,
        int(start),
        int(stop),
        int(planned),
        shape,
        bool(lossless),
        int(scale),
        bool(skip_corrupt),
    )


# --------------------------------------------------------------------------- reading
def _iter_rows(store, plan: _Plan, report: ExportReport) -> Iterator[tuple[Any, np.ndarray]]:
    """``(StepInfo, frame)`` in step order, paging through SQLite; O(chunk) memory for
    frames (the reader caches a few decoded chunks)."""
    bad_chunks: set[tuple[int, int]] = set()
    for lo in range(plan.start, plan.stop, _PAGE_ROWS):
        for row in store.read_steps(plan.episode_id, lo, min(plan.stop, lo + _PAGE_ROWS)):
            if row.frame is None:
                report.dropped_steps.append(row.step)
                continue
            chunk = (row.frame[0], row.frame[1])
            if chunk in bad_chunks:
                report.skipped_steps.append(row.step)
                continue
            try:
                frame = store.reader.read(row.frame, expect_key=(plan.episode_id, row.step))
            except (CorruptData, FrameNotFound):
                if not plan.skip_corrupt:
                    raise
                bad_chunks.add(chunk)
                report.skipped_steps.append(row.step)
                continue
            yield row, frame


def _frames(
    store, plan: _Plan, report: ExportReport, progress: Progress | None
) -> Iterator[np.ndarray]:
    done = 0
    for _row, frame in _iter_rows(store, plan, report):
        yield frame
        done += 1
        if progress is not None:
            progress(done, plan.planned)


# --------------------------------------------------------------------------- pixels
def _to_rgb(frame: np.ndarray, *, keep_alpha: bool = False) -> np.ndarray:
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


def _has_alpha(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[2] in (2, 4)


def _upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return frame
    return np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


def _pad_even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    pad = [(0, h % 2), (0, w % 2)] + [(0, 0)] * (frame.ndim - 2)
    return np.pad(frame, pad, mode="edge")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- writers
def _write_mp4(frames: Iterator[np.ndarray], plan: _Plan, report: ExportReport) -> None:
    import av

    h, w = plan.shape[0] * plan.scale, plan.shape[1] * plan.scale
    if not plan.lossless:
        h, w = h + h % 2, w + w % 2
        report.padded = (h, w) != (plan.shape[0] * plan.scale, plan.shape[1] * plan.scale)
    report.width, report.height = w, h
    report.exact = plan.lossless and not _has_alpha(plan.shape)
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
        for i, frame in enumerate(frames):
            rgb = _upscale(_to_rgb(frame), plan.scale)
            if not plan.lossless:
                rgb = _pad_even(rgb)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
            report.frames += 1
        container.mux(stream.encode(None))


def _write_webp(frames: Iterator[np.ndarray], plan: _Plan, report: ExportReport) -> None:
    import av

    h, w = plan.shape[0] * plan.scale, plan.shape[1] * plan.scale
    report.width, report.height = w, h
    rate = Fraction(plan.fps).limit_denominator(1001)
    # libwebp's animation encoder keeps the encoded frames until the end (O(output)).
    with av.open(str(plan.partial), "w", format="webp", options={"loop": "0"}) as container:
        stream = container.add_stream("libwebp_anim", rate=rate, options={"lossless": "1"})
        stream.pix_fmt = "bgra"
        stream.width, stream.height = w, h
        for i, frame in enumerate(frames):
            rgba = _upscale(_to_rgb(frame, keep_alpha=True), plan.scale)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba), format="rgba")
            vf.pts = i
            container.mux(stream.encode(vf))
            report.frames += 1
        container.mux(stream.encode(None))


def _gif_frame(rgb: np.ndarray) -> tuple[np.ndarray, bytes, bool]:
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


def _gif_delays(fps: float) -> Iterator[int]:
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


def _write_gif(frames: Iterator[np.ndarray], plan: _Plan, report: ExportReport) -> None:
    """Animated GIF written frame by frame (Pillow's save_all keeps every frame until the
    end): header, NETSCAPE loop block, then per frame a graphic control extension, an
    image descriptor with a local colour table and LZW data from Pillow's GIF encoder."""
    from PIL import GifImagePlugin, Image

    h, w = plan.shape[0] * plan.scale, plan.shape[1] * plan.scale
    if w > 0xFFFF or h > 0xFFFF:
        raise InvalidInput(f"GIF frames are at most 65535x65535, not {w}x{h}")
    report.width, report.height = w, h
    report.exact = not _has_alpha(plan.shape)
    delays = _gif_delays(plan.fps)
    with open(plan.partial, "wb") as fp:
        fp.write(b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0))
        fp.write(b"!\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", 0) + b"\x00")
        previous = None
        for frame in frames:
            rgb = _upscale(_to_rgb(frame), plan.scale)
            # Only the rectangle that changed is stored (disposal 1 keeps the rest).
            x0, y0, region = 0, 0, rgb
            if previous is not None:
                changed = (rgb != previous).any(axis=2)
                rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(0))
                if len(rows):
                    y0, x0 = int(rows[0]), int(cols[0])
                    region = rgb[y0 : rows[-1] + 1, x0 : cols[-1] + 1]
                else:
                    region = rgb[:1, :1]  # unchanged: a 1-pixel frame keeps the timing
            previous = rgb
            index, palette, exact = _gif_frame(region)
            if not exact:
                if plan.lossless:
                    raise InvalidInput(
                        "a frame has more than 256 colours: GIF cannot hold it exactly"
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


def _write_png_dir(
    rows: Iterator[tuple[Any, np.ndarray]], plan: _Plan, report: ExportReport
) -> None:
    from PIL import Image

    plan.partial.mkdir()
    for row, frame in rows:
        img = frame[:, :, 0] if frame.ndim == 3 and frame.shape[2] == 1 else frame
        img = _upscale(img, plan.scale)
        path = plan.partial / f"step_{row.step:06d}.png"
        with open(path, "wb") as fp:
            Image.fromarray(np.ascontiguousarray(img)).save(fp, format="PNG")
            fp.flush()
            os.fsync(fp.fileno())
        report.frames += 1
        report.height, report.width = img.shape[:2]
    fsync_dir(plan.partial)


def _actions_array(actions: list[Any]) -> dict[str, np.ndarray]:
    """Actions as a numeric array (zeros where a row has none) plus ``has_action``; action
    types numpy cannot hold in one numeric array go to ``actions_json`` as text."""
    import json

    has = np.array([a is not None for a in actions], dtype=bool)
    present = [a for a in actions if a is not None]
    try:
        sample = np.asarray(present[0]) if present else np.asarray(0)
        if sample.dtype == object or sample.dtype.kind not in "biuf":
            raise TypeError
        filled = [a if a is not None else np.zeros_like(sample) for a in actions]
        arr = np.asarray(filled)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError
        return {"actions": arr, "has_action": has}
    except (TypeError, ValueError):

        def default(o):
            if isinstance(o, np.ndarray | np.generic):
                return o.tolist()
            raise TypeError(type(o).__name__)

        text = [json.dumps(a, default=default) for a in actions]
        return {"actions_json": np.asarray(text, dtype=str), "has_action": has}


def _write_npz(rows: Iterator[tuple[Any, np.ndarray]], plan: _Plan, report: ExportReport) -> None:
    """``frames`` is streamed to a scratch file, then copied into the zip entry once its
    final length is known (corrupt frames may be skipped), so frames never sit in memory
    all at once; the per-step columns are O(steps) scalars."""
    scratch = plan.partial.with_name(plan.partial.name + ".frames")
    step_index: list[int] = []
    actions: list[Any] = []
    rewards: list[float] = []
    terminated: list[bool] = []
    truncated: list[bool] = []
    try:
        with open(scratch, "wb") as raw:
            for row, frame in rows:
                raw.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
                step_index.append(row.step)
                actions.append(row.action)
                rewards.append(np.nan if row.reward is None else row.reward)
                terminated.append(row.terminated)
                truncated.append(row.truncated)
                report.frames += 1
        shape = (report.frames, *plan.shape)
        columns = {
            "step_index": np.asarray(step_index, dtype=np.int64),
            **_actions_array(actions),
            "rewards": np.asarray(rewards, dtype=np.float64),
            "terminated": np.asarray(terminated, dtype=bool),
            "truncated": np.asarray(truncated, dtype=bool),
        }
        with zipfile.ZipFile(plan.partial, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("frames.npy", "w", force_zip64=True) as entry:
                header = {"descr": "|u1", "fortran_order": False, "shape": shape}
                np.lib.format.write_array_header_2_0(entry, header)
                with open(scratch, "rb") as raw:
                    shutil.copyfileobj(raw, entry, 1 << 20)
            for name, arr in columns.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, arr, allow_pickle=False)
        _fsync_file(plan.partial)
    finally:
        scratch.unlink(missing_ok=True)
    report.height, report.width = plan.shape[:2]


# --------------------------------------------------------------------------- public
def export_episode(
    store,
    episode_id: int,
    out: str | os.PathLike,
    *,
    fps: float | None = None,
    start: int = 0,
    stop: int | None = None,
    lossless: bool = False,
    scale: int = 1,
    skip_corrupt: bool = False,
    progress: Progress | None = None,
) -> ExportReport:
    """Export the frames of one episode; the format follows ``out`` (see the module doc).

    Args:
        store: an open ``FrameStore`` (read-only is enough).
        episode_id: a live episode of the store.
        out: ``*.mp4``, ``*.gif``, ``*.webp``, ``*.npz``, or a directory (existing and
            empty, or a path ending in ``/``) for one PNG per step.
        fps: frames per second of videos/animations; default the run's ``render_fps``,
            else 60.
        start, stop: export steps ``start <= step < stop`` (``stop`` defaults to the
            last committed step + 1).
        lossless: MP4 only: ``libx264rgb`` crf 0, decodes to the stored pixels. GIF: fail
            rather than quantise a frame with more than 256 colours.
        scale: integer nearest-neighbour upscaling (not for npz).
        skip_corrupt: leave out frames whose data fails a check (listed in the report)
            instead of stopping with the ``CorruptData`` error.
        progress: called as ``progress(frames_done, frames_planned)``.

    Returns:
        An ``ExportReport``.

    Raises:
        EpisodeNotFound: unknown or deleted episode.
        InvalidInput: bad format, range, fps, scale or output path; nothing is written.
        CorruptData: a corrupt frame (without ``skip_corrupt``); the partial output is
            removed.
    """
    t0 = time.perf_counter()
    plan = _plan(
        store,
        episode_id,
        out,
        fps=fps,
        start=start,
        stop=stop,
        lossless=lossless,
        scale=scale,
        skip_corrupt=skip_corrupt,
    )
    report = ExportReport(
        episode_id=plan.episode_id,
        path=str(plan.out),
        format=plan.format,
        start=plan.start,
        stop=plan.stop,
        fps=plan.fps,
        source_shape=plan.shape,
        scale=plan.scale,
    )
    _remove(plan.partial)  # a leftover from an interrupted export
    try:
        if plan.format == "mp4":
            _write_mp4(_frames(store, plan, report, progress), plan, report)
        elif plan.format == "webp":
            _write_webp(_frames(store, plan, report, progress), plan, report)
        elif plan.format == "gif":
            _write_gif(_frames(store, plan, report, progress), plan, report)
        else:
            rows = _with_progress(_iter_rows(store, plan, report), plan, progress)
            if plan.format == "png":
                _write_png_dir(rows, plan, report)
            else:
                _write_npz(rows, plan, report)
        if report.frames == 0:
            raise CorruptData(
                "-", 0, f"episode {plan.episode_id}: every frame in the range is corrupt"
            )
        if plan.format in ("mp4", "webp"):
            _fsync_file(plan.partial)
        if plan.format == "png" and plan.out.is_dir():
            plan.out.rmdir()  # checked empty in _plan
        os.replace(plan.partial, plan.out)
        fsync_dir(plan.out.parent)
    except BaseException:
        _remove(plan.partial)
        raise
    report.bytes = _size(plan.out)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def export_run(
    store,
    run_id: int,
    out_dir: str | os.PathLike,
    *,
    format: str = "mp4",
    fps: float | None = None,
    start: int = 0,
    stop: int | None = None,
    lossless: bool = False,
    scale: int = 1,
    skip_corrupt: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
) -> list[ExportReport]:
    """Export every live episode of a run into ``out_dir`` (created if missing; its
    parent must exist) as ``episode_000042.<format>`` (``episode_000042/`` for png).

    Every episode is checked before the first is written. If one fails part-way, the
    episodes before it stay exported and the failing one leaves nothing behind.
    ``progress`` is called as ``progress(episode_id, frames_done, frames_planned)``.
    Other arguments as for ``export_episode``.
    """
    if format not in FORMATS:
        raise InvalidInput(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if run_id not in {r.id for r in store.runs()}:
        raise InvalidInput(f"no run {run_id} in this store")
    episodes = store.episodes(run_id=run_id)
    if not episodes:
        raise InvalidInput(f"run {run_id} has no episodes to export")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"{out_dir}: exists and is not a directory")
    if not out_dir.parent.is_dir():
        raise InvalidInput(f"{out_dir}: directory {out_dir.parent} does not exist")

    def target(eid: int) -> Path:
        name = f"episode_{eid:06d}"
        return out_dir / (name + "/" if format == "png" else f"{name}.{format}")

    # Check every episode (and the output directory) before writing anything.
    for ep in episodes:
        _plan(
            store,
            ep.id,
            str(target(ep.id)) + ("/" if format == "png" else ""),
            fps=fps,
            start=start,
            stop=stop,
            lossless=lossless,
            scale=scale,
            skip_corrupt=skip_corrupt,
            check_out=out_dir.exists(),
        )
    out_dir.mkdir(exist_ok=True)
    reports = []
    for ep in episodes:
        cb = None
        if progress is not None:

            def cb(done, total, _eid=ep.id):
                progress(_eid, done, total)

        t = target(ep.id)
        reports.append(
            export_episode(
                store,
                ep.id,
                str(t) + ("/" if format == "png" else ""),
                fps=fps,
                start=start,
                stop=stop,
                lossless=lossless,
                scale=scale,
                skip_corrupt=skip_corrupt,
                progress=cb,
            )
        )
    return reports


def _with_progress(rows, plan: _Plan, progress: Progress | None):
    done = 0
    for item in rows:
        yield item
        done += 1
        if progress is not None:
            progress(done, plan.planned)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    scratch = path.with_name(path.name + ".frames")
    if scratch.exists():
        scratch.unlink()


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size
