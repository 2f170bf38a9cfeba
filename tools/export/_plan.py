"""The export plan: every check that can be made before a byte is written.

``make_plan`` runs the steps in order: the episode exists, the output names a format, the
options fit that format, the fps is known, the range holds stored frames of a shape the
format can hold, PyAV is there when needed, and the output path is writable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from framestore import EpisodeInfo, FrameStore, FrameSummary
from framestore.catalog import parse_shape
from framestore.errors import CorruptData, FrameNotFound, InvalidInput
from framestore.store import enclosing_store

from ._options import DEFAULT_FPS, ExportOptions, check_fps
from ._pixels import has_alpha

__all__ = [
    "check_not_in_store",
    "output_path",
    "FILE_FORMATS",
    "FORMATS",
    "PARTIAL_SUFFIX",
    "Plan",
    "format_of",
    "is_directory_path",
    "make_plan",
]

FORMATS = ("mp4", "gif", "webp", "png", "npz")
FILE_FORMATS = ("mp4", "gif", "webp", "npz")  # named by the output's extension
PARTIAL_SUFFIX = ".partial"
_AV_HINT = "install PyAV for MP4/WebP export: pip install 'framestore[video]'"
#: The largest frame an export writes after ``scale`` (bytes of RGB(A)) and its sides.
MAX_OUTPUT_FRAME_BYTES = 256 * 1024 * 1024
MAX_OUTPUT_SIDE = 16384


@dataclass(frozen=True)
class Plan:
    """One checked export: where, what and how.

    ``stop`` is clipped to the committed steps and ``planned`` counts the rows with a
    stored frame in ``start <= step < stop`` when the plan was made. ``shape`` is the
    shape of the first stored frame of the range *as decoded* from its checksummed chunk
    (the database's ``frame_shape`` must agree with it, or the export is corrupt)."""

    episode_id: int
    out: Path
    partial: Path
    format: str
    fps: float
    start: int
    stop: int
    planned: int
    shape: tuple[int, ...]
    options: ExportOptions

    @property
    def scale(self) -> int:
        return self.options.scale

    @property
    def lossless(self) -> bool:
        return self.options.lossless

    @property
    def scaled_size(self) -> tuple[int, int]:
        """(height, width) of a frame after ``scale``."""
        return self.shape[0] * self.scale, self.shape[1] * self.scale


def is_directory_path(out: str | os.PathLike) -> bool:
    """A path ending in ``/`` or an existing directory."""
    text = os.fspath(out)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def format_of(out: str | os.PathLike) -> str:
    """The export format named by an output path (``png`` for a directory)."""
    if is_directory_path(out):
        return "png"
    text = os.fspath(out)
    ext = Path(text).suffix.lower().lstrip(".")
    if ext in FILE_FORMATS:
        return ext
    what = f"extension '.{ext}'" if ext else "no extension"
    raise InvalidInput(
        f"{text}: cannot tell the export format ({what}); use .mp4, .gif, .webp, .npz "
        "or a directory path ending in '/' for PNG files"
    )


def make_plan(
    store: FrameStore,
    episode_id: int,
    out: str | os.PathLike,
    options: ExportOptions,
    *,
    check_out: bool = True,
) -> Plan:
    """Check everything that can be checked before writing.

    Raises:
        EpisodeNotFound: unknown or deleted episode.
        InvalidInput: bad format, range, fps, frame shape or output path.
    """
    ep = store.episode(episode_id)  # EpisodeNotFound for unknown or deleted ids
    out_path = output_path(out)
    check_not_in_store(out_path)
    fmt = format_of(out)
    _check_options_fit(fmt, options)
    fps = _resolve_fps(store, ep, options)
    # A snapshot of what is committed now: rows of a live episode keep arriving.
    summary = store.frame_summary(ep.id, options.start, options.stop, stream=options.stream)
    shape = _frame_shape(ep.id, fmt, summary, options.start, options.stream)
    shape = _decoded_shape(store, ep.id, options, int(summary.stop), shape, fmt)
    _check_scaled_size(shape, options)
    _check_lossless(fmt, shape, options)
    _needs_av(fmt)
    if check_out:
        _check_output(out_path, fmt)
    return Plan(
        episode_id=ep.id,
        out=out_path,
        partial=out_path.with_name(out_path.name + PARTIAL_SUFFIX),
        format=fmt,
        fps=fps,
        start=options.start,
        stop=int(summary.stop),
        planned=int(summary.frames),
        shape=shape,
        options=options,
    )


def output_path(out: str | os.PathLike) -> Path:
    """The output as a path naming a file or a directory to create: ``''``, ``/``, ``.``
    and ``./`` name no new thing (an export replaces its output) and are refused."""
    text = os.fspath(out)
    if not text.strip():
        raise InvalidInput("the output path is empty; name a file (.mp4, .gif, ...) or DIR/")
    path = Path(text.rstrip("/" + os.sep) or os.sep)
    if path.name in ("", ".", ".."):
        raise InvalidInput(
            f"{text}: name a new file or directory to export to, not an existing place "
            "itself (e.g. frames/ or out.mp4)"
        )
    return path


def check_not_in_store(out: Path) -> None:
    """Outputs are never written into a store: its directory holds only its own files."""
    store = enclosing_store(out.parent)
    if store is None and os.path.lexists(out):
        store = enclosing_store(out)
    if store is not None:
        raise InvalidInput(f"{out}: is inside the store {store}; export to a place outside it")


def _decoded_shape(
    store: FrameStore,
    episode_id: int,
    options: ExportOptions,
    stop: int,
    declared: tuple[int, ...],
    fmt: str,
) -> tuple[int, ...]:
    """The shape of the range's first readable frame as its chunk decodes it. Nothing
    is sized from the database: a ``frame_shape`` that disagrees is corruption."""
    stream = options.stream
    for step, loc in store.frame_locations(episode_id, options.start, stop, stream=stream):
        if loc is None:
            continue
        try:
            shape = tuple(store.read_at(loc, episode_id, step, copy=False, stream=stream).shape)
        except (CorruptData, FrameNotFound):
            if not options.skip_corrupt:
                raise
            continue
        if fmt != "png" and shape != declared:
            raise CorruptData(
                "framestore.db",
                0,
                f"episode {episode_id} step {step}: the database says frames are "
                f"{'x'.join(map(str, declared))} but the stored frame is "
                f"{'x'.join(map(str, shape))}",
            )
        return shape
    return declared  # nothing readable: the export fails with "every frame is corrupt"


def _check_scaled_size(shape: tuple[int, ...], options: ExportOptions) -> None:
    h, w = shape[0] * options.scale, shape[1] * options.scale
    if max(h, w) > MAX_OUTPUT_SIDE or h * w * 4 > MAX_OUTPUT_FRAME_BYTES:
        raise InvalidInput(
            f"scale {options.scale} makes {w}x{h} frames; exported frames are at most "
            f"{MAX_OUTPUT_SIDE} pixels a side and {MAX_OUTPUT_FRAME_BYTES >> 20} MiB"
        )


def _check_options_fit(fmt: str, options: ExportOptions) -> None:
    if fmt == "npz" and options.scale != 1:
        raise InvalidInput("npz holds the stored frames exactly; scale applies to images/video")


def _resolve_fps(store: FrameStore, ep: EpisodeInfo, options: ExportOptions) -> float:
    if options.fps is not None:
        return options.fps
    return check_fps(store.run(ep.run_id).config.get("render_fps") or DEFAULT_FPS)


def _parse_shape(text: str, fmt: str, stream: str) -> tuple[int, ...]:
    if stream != "render":  # a stream's frames: frame stacks and vectors too
        shape = tuple(int(d) for d in text.split("x"))
        image = len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 2, 3, 4))
        if fmt != "npz" and not image:
            raise InvalidInput(
                f"stream {stream!r} holds arrays of shape {text}, not images: export it to .npz"
            )
        return shape
    shape = parse_shape(text)  # CorruptCatalog for text that is not a shape
    assert shape is not None
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 2, 3, 4)):
        raise InvalidInput(f"cannot export frames of shape {text}: need HxW or HxWxC, C<=4")
    return shape


def _frame_shape(
    episode_id: int, fmt: str, summary: FrameSummary, start: int, stream: str = "render"
) -> tuple[int, ...]:
    """The one frame shape of the range (PNG files may differ from step to step)."""
    if summary.frames == 0:
        stop = summary.stop
        where = f"steps {start}..{stop - 1}" if stop > start else f"from step {start}"
        raise InvalidInput(
            f"episode {episode_id} has no stored frames {where} (it has {summary.steps} steps)"
        )
    shapes = [_parse_shape(text, fmt, stream) for text in summary.shapes]
    if len(shapes) != 1 and fmt != "png":
        raise InvalidInput(
            f"episode {episode_id} has frames of several shapes ({', '.join(summary.shapes)}); "
            f"{fmt} needs one size: export to a PNG directory instead"
        )
    return shapes[0]


def _check_lossless(fmt: str, shape: tuple[int, ...], options: ExportOptions) -> None:
    """Formats that cannot keep these frames exactly refuse ``lossless`` up front."""
    if options.lossless and fmt == "gif" and has_alpha(shape):
        size = "x".join(map(str, shape))
        raise InvalidInput(
            f"GIF has no alpha channel: lossless export cannot keep the alpha of {size} "
            "frames; use .webp, .npz or a PNG directory"
        )


def _needs_av(fmt: str) -> None:
    if fmt in ("mp4", "webp"):
        try:
            import av  # noqa: F401
        except ImportError:
            raise InvalidInput(f"{fmt} export needs PyAV; {_AV_HINT}") from None


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
