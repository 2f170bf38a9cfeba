"""Running exports: one episode (``export_episode``) or every episode of a run
(``export_run``), each written as ``<name>.partial`` and renamed into place."""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from framestore import FrameStore
from framestore.errors import CorruptData, FrameStoreError, InvalidInput
from framestore.files import fsync_dir, why_not_writable

from ._gif import write_gif
from ._mp4 import write_mp4
from ._npz import SCRATCH_SUFFIX, write_npz
from ._options import ExportOptions
from ._plan import (
    FORMATS,
    Plan,
    check_not_in_store,
    format_of,
    is_directory_path,
    make_plan,
    output_path,
)
from ._png import write_png_dir
from ._report import ExportReport, Progress, RunProgress
from ._rows import Row, counted, iter_rows
from ._webp import write_webp

__all__ = ["export_episode", "export_run", "run_outputs"]

_WRITERS: dict[str, Callable[[Iterator[Row], Plan, ExportReport], None]] = {
    "mp4": write_mp4,
    "webp": write_webp,
    "gif": write_gif,
    "png": write_png_dir,
    "npz": write_npz,
}
DEFAULT_RUN_FORMAT = "mp4"


def export_episode(
    store: FrameStore,
    episode_id: int,
    out: str | os.PathLike,
    options: ExportOptions | None = None,
    *,
    progress: Progress | None = None,
    **option_kwargs: Any,
) -> ExportReport:
    """Export the frames of one episode; the format follows ``out`` (see ``tools.export``).

    Args:
        store: an open ``FrameStore`` (read-only is enough).
        episode_id: a live episode of the store.
        out: ``*.mp4``, ``*.gif``, ``*.webp``, ``*.npz``, or a directory (existing and
            empty, or a path ending in ``/``) for one PNG per step.
        options: an ``ExportOptions``; or give its fields (``fps``, ``start``, ``stop``,
            ``lossless``, ``scale``, ``skip_corrupt``) as keyword arguments instead.
        progress: called as ``progress(frames_done, frames_planned)``.

    Returns:
        An ``ExportReport``.

    Raises:
        EpisodeNotFound: unknown or deleted episode.
        InvalidInput: bad format, range, fps, scale or output path (nothing is written);
            or a frame a ``lossless`` GIF/WebP cannot hold (the partial output is removed).
        CorruptData: a corrupt frame (without ``skip_corrupt``); the partial output is
            removed.
    """
    plan = make_plan(store, episode_id, out, ExportOptions.of(options, option_kwargs))
    return _execute(store, plan, progress)


def export_run(
    store: FrameStore,
    run_id: int,
    out: str | os.PathLike,
    options: ExportOptions | None = None,
    *,
    format: str | None = None,
    progress: RunProgress | None = None,
    **option_kwargs: Any,
) -> list[ExportReport]:
    """Export every live episode of a run; ``run_outputs`` names the files.

    ``out`` is a directory (created if missing; its parent must exist) that receives
    ``episode_000042.<format>`` per episode, or a file name ``NAME.EXT`` that gives
    ``NAME-ep42.EXT`` per episode next to it. ``format`` (default: from ``EXT``, else
    mp4) must agree with ``EXT``.

    Every episode is checked before the first is written. If one fails part-way, the
    episodes before it stay exported and the failing one leaves nothing behind.
    ``progress`` is called as ``progress(episode_id, frames_done, frames_planned)``.
    ``options`` and keyword options as for ``export_episode``.
    """
    options = ExportOptions.of(options, option_kwargs)
    episode_ids = _live_episode_ids(store, run_id)
    directory, targets = run_outputs(out, format, episode_ids)
    check_out = directory is None or directory.exists()
    # Check every episode (and the output paths) before writing anything.
    plans = [make_plan(store, eid, t, options, check_out=check_out) for eid, t in targets.items()]
    if directory is not None:
        try:
            directory.mkdir(exist_ok=True)
        except OSError as e:
            raise InvalidInput(
                f"cannot create {directory}: {why_not_writable(directory, e)}"
            ) from e
    return [_execute(store, plan, _for_episode(progress, plan.episode_id)) for plan in plans]


def _live_episode_ids(store: FrameStore, run_id: int) -> list[int]:
    if run_id not in {r.id for r in store.runs()}:
        raise InvalidInput(f"no run {run_id} in this store")
    ids = [ep.id for ep in store.episodes(run_id=run_id)]
    if not ids:
        raise InvalidInput(f"run {run_id} has no episodes to export")
    return ids


def _for_episode(progress: RunProgress | None, episode_id: int) -> Progress | None:
    if progress is None:
        return None
    return lambda done, total: progress(episode_id, done, total)


def run_outputs(
    out: str | os.PathLike, format: str | None, episode_ids: list[int]
) -> tuple[Path | None, dict[int, str]]:
    """Where each episode of a run export goes: ``(directory to create, {episode id:
    output path})``.

    ``out`` is a directory when it ends in ``/``, exists as a directory or has no
    extension: it holds ``episode_000042.<format>`` (``episode_000042/`` for png).
    Otherwise ``out`` is a file name ``NAME.EXT`` naming the format, and episode 42 goes
    to ``NAME-ep42.EXT`` in the same directory (``directory`` is then None).
    """
    if format is not None and format not in FORMATS:
        raise InvalidInput(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    path = output_path(out)
    check_not_in_store(path)
    if is_directory_path(out) or not path.suffix:
        _check_run_directory(path)
        return path, _directory_outputs(path, format or DEFAULT_RUN_FORMAT, episode_ids)
    return None, _file_outputs(path, format, episode_ids)


def _directory_outputs(path: Path, fmt: str, episode_ids: list[int]) -> dict[int, str]:
    ending = "/" if fmt == "png" else f".{fmt}"
    return {eid: str(path / f"episode_{eid:06d}") + ending for eid in episode_ids}


def _file_outputs(path: Path, format: str | None, episode_ids: list[int]) -> dict[int, str]:
    fmt = format_of(path)  # InvalidInput for an extension that names no format
    if format is not None and format != fmt:
        raise InvalidInput(
            f"{path}: the extension says {fmt} but the format asked is {format}; "
            "end the path with '/' to export into a directory"
        )
    return {eid: str(path.with_name(f"{path.stem}-ep{eid}{path.suffix}")) for eid in episode_ids}


def _check_run_directory(path: Path) -> None:
    """An existing directory, or one that can be created (its parent exists, writable)."""
    if path.is_dir():
        return
    if path.exists():
        raise InvalidInput(f"{path}: exists and is not a directory")
    if not path.parent.is_dir():
        raise InvalidInput(f"{path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InvalidInput(f"{path}: directory {path.parent} is not writable")


def _execute(store: FrameStore, plan: Plan, progress: Progress | None) -> ExportReport:
    """Write one planned export to its partial path, then rename it into place."""
    t0 = time.perf_counter()
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
        rows = counted(iter_rows(store, plan, report), plan.planned, progress)
        _WRITERS[plan.format](rows, plan, report)
        if report.frames == 0:
            raise CorruptData(
                "-", 0, f"episode {plan.episode_id}: every frame in the range is corrupt"
            )
        _commit(plan)
    except OSError as e:
        _remove(plan.partial)
        if isinstance(e, FrameStoreError):
            raise
        raise _output_error(plan, e) from e
    except BaseException:
        _remove(plan.partial)
        raise
    report.bytes = _size(plan.out)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


#: Failures that mean the output cannot go where the user asked (bad input, exit 2), not
#: an I/O failure of a writable place (a full disk, EIO).
_BAD_PLACE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR)


def _output_error(plan: Plan, exc: OSError) -> Exception:
    """The failure in words about the user's output path (never the ``.partial`` name)."""
    text = f"cannot write {plan.out}: {why_not_writable(plan.out, exc)}"
    if exc.errno in _BAD_PLACE:
        return InvalidInput(text)
    return OSError(exc.errno, text)


def _commit(plan: Plan) -> None:
    """Rename the complete, fsynced partial output into place, durably."""
    if plan.format == "png" and plan.out.is_dir():
        plan.out.rmdir()  # checked empty when planning
    os.replace(plan.partial, plan.out)
    fsync_dir(plan.out.parent)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    path.with_name(path.name + SCRATCH_SUFFIX).unlink(missing_ok=True)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size
