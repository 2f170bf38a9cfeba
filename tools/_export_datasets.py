"""``framestore export --format lerobot|rrd|minari``: the dataset exports of several
episodes (the ones given, a run, or the whole store), called by ``cli_export``."""

from __future__ import annotations

import click

from ._common import emit_json, show_progress
from ._progress import ProgressBars
from .text import human_bytes

DATASET_FORMATS = ("lerobot", "rrd", "minari")


def export_dataset(fmt, store, episode_ids, run_id, out, options, *, task, video, as_json):
    """Run one dataset export and print what it wrote (one line, or ``--json``)."""
    from framestore import FrameStore

    from .export import export_lerobot, export_minari, export_rrd

    with (
        FrameStore.open(store, readonly=True) as st,
        ProgressBars(show_progress() and not as_json, label=lambda _k: "steps") as bars,
    ):
        chosen = {
            "episodes": list(episode_ids) or None,
            "run_id": run_id,
            "options": options,
            "progress": lambda done, total: bars(None, done, total),
        }
        if fmt == "lerobot":
            report = export_lerobot(st, out, task=task, video=video, **chosen)
        elif fmt == "rrd":
            report = export_rrd(st, out, **chosen)
        else:
            report = export_minari(st, out, **chosen)
    if as_json:
        emit_json(report.as_dict())
        return
    if fmt == "rrd":
        click.echo(
            f"{len(report.episodes)} episode(s): {report.steps} steps, {report.frames} frames "
            f"-> {report.path} [rerun recording, PNG frames (lossless), "
            f"{human_bytes(report.bytes)}]"
        )
        return
    if fmt == "minari":
        recover = "" if report.recoverable else "; no env spec: recover_environment() cannot work"
        click.echo(
            f"{len(report.episodes)} episode(s): {report.steps} steps -> {report.path}/ "
            f"[Minari dataset {report.dataset_id}, frames as uint8 arrays (lossless), "
            f"{human_bytes(report.bytes)}]{recover}"
        )
        return
    frames = "MP4 video, lossy" if report.video else "PNG images, lossless"
    tail = f"; {len(report.empty_episodes)} episode(s) without a transition left out" * bool(
        report.empty_episodes
    )
    if report.dropped_steps:  # no image, no row: as the Parquet export's frame count says
        tail += f"; {report.dropped_steps} step(s) without a stored frame left out"
    click.echo(
        f"{len(report.episodes)} episode(s): {report.rows} rows -> {report.path}/ "
        f"[LeRobot {report.fps} fps, frames as {frames}, {human_bytes(report.bytes)}]{tail}"
    )
