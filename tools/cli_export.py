"""CLI verbs ``export``, ``rm`` and ``info`` (registered by ``tools.cli``)."""

from __future__ import annotations

import click

from ._common import emit_json, show_progress
from ._export_datasets import DATASET_FORMATS, export_dataset
from ._progress import ProgressBars
from .text import human_bytes

store_arg = click.argument("store", type=click.Path(file_okay=True, dir_okay=True))
json_opt = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _describe(r) -> str:
    size = f"{r.width}x{r.height}" + (" (padded to even)" if r.padded else "")
    extra = []
    if r.skipped_steps:
        extra.append(f"skipped {len(r.skipped_steps)} corrupt frame(s): steps {_steps(r)}")
    if r.dropped_steps:
        extra.append(f"{len(r.dropped_steps)} step(s) had no stored frame")
    if not r.exact:
        extra.append("lossy")
    tail = f"; {'; '.join(extra)}" if extra else ""
    return (
        f"episode {r.episode_id}: {r.frames} frames (steps {r.start}..{r.stop - 1}) -> "
        f"{r.path} [{r.format}, {size}, {r.fps:g} fps, {human_bytes(r.bytes)}]{tail}"
    )


def _steps(r, limit: int = 10) -> str:
    shown = ", ".join(str(s) for s in r.skipped_steps[:limit])
    return shown + (", ..." if len(r.skipped_steps) > limit else "")


@click.command()
@store_arg
@click.option(
    "--episode",
    "episode_ids",
    type=int,
    multiple=True,
    help="Episode to export (repeatable with --format parquet, lerobot, rrd or minari).",
)
@click.option("--run", "run_id", type=int, default=None, help="Export every episode of a run.")
@click.option(
    "-o",
    "--out",
    required=True,
    help="Output: .mp4, .gif, .webp, .npz or DIR/ (PNGs). With --run: a directory "
    "(episode_000042.mp4, ... inside), or NAME.EXT for one file per episode next to it, "
    "NAME-ep42.EXT. With --format parquet: a new directory of Parquet shards.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mp4", "gif", "webp", "npz", "png", "parquet", *DATASET_FORMATS]),
    default=None,
    help="With --run into a directory: the format of each episode's file (default mp4). "
    "parquet: the episodes given (or the run, or the whole store) as sharded Parquet, one "
    "row per step, frames as PNG (Hugging Face datasets, Ray Data, pandas, DuckDB). "
    "lerobot: the same episodes as a LeRobot v3 dataset directory. rrd: as one rerun "
    "recording (-o FILE.rrd). minari: as a Minari dataset (-o DIR named like name-v0).",
)
@click.option(
    "--video",
    is_flag=True,
    help="With --format lerobot: frames as H.264 MP4 (lossy) instead of PNG (lossless).",
)
@click.option(
    "--task", default=None, help="With --format lerobot: the task text (default: env id)."
)
@click.option(
    "--shard-mb",
    type=click.FloatRange(min=0.0625),
    default=256,
    show_default=True,
    help="With --format parquet: the most MiB a shard file grows to.",
)
@click.option("--fps", type=float, default=None, help="Default: the run's render fps, else 60.")
@click.option("--start", type=int, default=0, show_default=True, help="First step exported.")
@click.option("--stop", type=int, default=None, help="Export steps before this one.")
@click.option(
    "--lossless",
    is_flag=True,
    help="Exact pixels or an error: MP4 libx264rgb crf 0; GIF fails on a frame over 256 "
    "colours or with alpha; WebP fails on colour under fully transparent pixels.",
)
@click.option("--scale", type=int, default=1, show_default=True, help="Integer upscaling.")
@click.option("--skip-corrupt", is_flag=True, help="Leave out corrupt frames instead of failing.")
@click.option(
    "--stream",
    default="render",
    show_default=True,
    help="The frame stream exported (mp4, gif, webp, png, npz): `framestore info` "
    "lists an episode's streams (render, observation, ...).",
)
@json_opt
def export(
    store,
    episode_ids,
    run_id,
    out,
    fmt,
    shard_mb,
    fps,
    start,
    stop,
    lossless,
    scale,
    skip_corrupt,
    as_json,
    video,
    task,
    stream,
):
    """Export an episode (or every episode of a run) as video, GIF, WebP, PNGs or NPZ;
    episodes as Parquet, a LeRobot dataset, a rerun recording or a Minari dataset.

    The default MP4 is H.264 yuv420p (lossy, plays in browsers); --lossless, GIF (up to
    256 colours), WebP, PNG, NPZ, parquet, lerobot (without --video), rrd and minari give
    back the stored pixels.
    """
    from .export import ExportOptions

    options = ExportOptions(
        fps=fps, start=start, stop=stop, lossless=lossless, scale=scale,
        skip_corrupt=skip_corrupt, stream=stream,
    )  # fmt: skip
    _check_format_options(fmt, stream=stream, video=video, task=task)
    if fmt == "parquet":
        _export_parquet(store, episode_ids, run_id, out, options, shard_mb, as_json)
        return
    if fmt in DATASET_FORMATS:
        export_dataset(
            fmt, store, episode_ids, run_id, out, options, task=task, video=video, as_json=as_json
        )
        return
    _export_media(store, episode_ids, run_id, out, fmt, options, as_json)


def _check_format_options(fmt, *, stream, video, task) -> None:
    """Options that apply to other formats than ``fmt``: refused before anything is read."""
    from framestore.errors import InvalidInput

    if stream != "render" and (fmt == "parquet" or fmt in DATASET_FORMATS):
        raise InvalidInput(
            f"--stream applies to mp4, gif, webp, png and npz; --format {fmt} carries every stream"
            if fmt == "parquet"
            else f"--stream applies to mp4, gif, webp, png and npz, not --format {fmt}"
        )
    if (video or task is not None) and fmt != "lerobot":
        raise InvalidInput("--video and --task apply to --format lerobot")


def _export_media(store, episode_ids, run_id, out, fmt, options, as_json) -> None:
    """One episode to a file, or a run's episodes into a directory (video, images, NPZ)."""
    from framestore import FrameStore
    from framestore.errors import InvalidInput

    from .export import export_episode, export_run, format_of

    if len(episode_ids) > 1:
        raise click.UsageError("several --episode IDs need --format parquet; else use --run ID")
    episode_id = episode_ids[0] if episode_ids else None
    if (episode_id is None) == (run_id is None):
        raise click.UsageError("give exactly one of --episode ID or --run ID")
    if episode_id is not None and fmt is not None and fmt != format_of(out):
        raise InvalidInput(
            f"--format {fmt} applies to --run; with --episode the extension of {out} names "
            "the format"
        )
    with (
        FrameStore.open(store, readonly=True) as st,
        ProgressBars(show_progress() and not as_json, label=lambda ep: f"episode {ep}") as bars,
    ):
        if episode_id is not None:
            reports = [
                export_episode(
                    st, episode_id, out, options, progress=lambda d, t: bars(episode_id, d, t)
                )
            ]
        else:
            reports = export_run(st, run_id, out, options, format=fmt, progress=bars)
    if as_json:
        emit_json([r.as_dict() for r in reports] if run_id is not None else reports[0].as_dict())
        return
    for r in reports:
        click.echo(_describe(r))


def _export_parquet(store, episode_ids, run_id, out, options, shard_mb, as_json) -> None:
    from framestore import FrameStore

    from .export import export_parquet

    with (
        FrameStore.open(store, readonly=True) as st,
        ProgressBars(show_progress() and not as_json, label=lambda _k: "rows") as bars,
    ):
        report = export_parquet(
            st,
            out,
            episodes=list(episode_ids) or None,
            run_id=run_id,
            options=options,
            shard_bytes=int(shard_mb * 1024 * 1024),
            progress=lambda done, total: bars(None, done, total),
        )
    if as_json:
        emit_json(report.as_dict())
        return
    click.echo(
        f"{len(report.episodes)} episode(s): {report.rows} rows, {report.frames} frames -> "
        f"{report.path}/ [parquet, {len(report.shards)} shard(s), {human_bytes(report.bytes)}]"
    )


@click.command()
@store_arg
@click.option(
    "--episode", "episode_ids", type=int, multiple=True, help="Episode to delete (repeatable)."
)
@click.option("--run", "run_id", type=int, default=None, help="Delete every episode of a run.")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; change nothing.")
@json_opt
def rm(store, episode_ids, run_id, dry_run, as_json):
    """Delete episodes: they vanish from listings at once; `framestore gc` reclaims the
    space."""
    from framestore import FrameStore
    from framestore.errors import InvalidInput

    from .gc import reclaimable

    if bool(episode_ids) == (run_id is not None):
        raise click.UsageError("give --episode ID (repeatable) or --run ID")
    with FrameStore.open(store, create=False) as st:
        if run_id is not None:
            if run_id not in {r.id for r in st.runs()}:
                raise InvalidInput(f"no run {run_id} in this store")
            episode_ids = [e.id for e in st.episodes(run_id=run_id)]
            if not episode_ids:
                raise InvalidInput(f"run {run_id} has no episodes left to delete")
        sizes = {i: st.episode_bytes(i) for i in dict.fromkeys(episode_ids) if _exists(st, i)}
        eps = st.delete_episodes(episode_ids, dry_run=dry_run)
        reclaim = (0, 0) if dry_run else (reclaimable(st), reclaimable(st, 1.0))
    rows = [
        {"id": e.id, "run_id": e.run_id, "steps": e.steps, "bytes": sizes.get(e.id, 0)} for e in eps
    ]
    total = sum(r["bytes"] for r in rows)
    if as_json:
        emit_json({"dry_run": dry_run, "deleted": rows, "bytes": total})
        return
    verb = "would delete" if dry_run else "deleted"
    ids = ", ".join(str(r["id"]) for r in rows)
    click.echo(f"{verb} {len(rows)} episode(s): {ids} ({human_bytes(total)} of frames)")
    if not dry_run:
        click.echo(_gc_hint(store, reclaim))


def _gc_hint(store: str, reclaim: tuple[int, int]) -> str:
    """What gc will free now, in words: at its default threshold it rewrites only
    segments under half live, so it may free nothing yet."""
    from ._gcpolicy import DEFAULT_THRESHOLD

    now, every = reclaim
    if now >= every:
        return f"`framestore gc {store}` reclaims {human_bytes(now)}"
    if now == 0:
        return (
            f"`framestore gc {store}` reclaims nothing yet (it rewrites segments under "
            f"{DEFAULT_THRESHOLD:.0%} live); `framestore gc {store} --threshold 1` reclaims "
            f"{human_bytes(every)}"
        )
    return (
        f"`framestore gc {store}` reclaims {human_bytes(now)}; "
        f"`framestore gc {store} --threshold 1` reclaims {human_bytes(every)}"
    )


def _exists(store, episode_id: int) -> bool:
    from framestore.errors import EpisodeNotFound

    try:
        store.episode(episode_id)
    except EpisodeNotFound:
        return False
    return True


@click.command()
@store_arg
@json_opt
def info(store, as_json):
    """Counts, sizes on disk, compression ratio and versions of a store."""
    from framestore import FrameStore

    from .info import store_info

    with FrameStore.open(store, readonly=True) as st:
        data = store_info(st)
    if as_json:
        emit_json(data)
        return
    eps, seg, db = data["episodes"], data["segments"], data["database"]
    states = ", ".join(f"{n} {s}" for s, n in seg["by_state"].items()) or "none"
    ratio = data["compression_ratio"]
    state = data["state"]
    lines = [
        f"store        {data['store']}",
        f"state        {state['state']}: {state['detail']}",
        f"runs         {data['runs']}",
        f"episodes     {eps['live']} live, {eps['deleted']} deleted",
        f"steps        {data['steps']}",
        f"frames       {data['frames']} ({data['frames_dropped']} dropped)",
        *(
            [f"streams      {', '.join(f'{n} ({k} frames)' for n, k in data['streams'].items())}"]
            if len(data["streams"]) > 1
            else []
        ),
        f"segments     {seg['count']} ({states})",
        f"segment data {human_bytes(seg['bytes'])}: {human_bytes(seg['live_bytes'])} live, "
        f"{human_bytes(seg['dead_bytes'])} dead, "
        f"{human_bytes(seg['overhead_bytes'])} file headers and seals",
        f"reclaimable  {_reclaimable(seg)}",
        (
            f"database     {human_bytes(db['bytes'])} + {human_bytes(db['wal_bytes'])} WAL "
            f"+ {human_bytes(db['shm_bytes'])} SHM"
            if db["wal_bytes"] is not None
            else "database     - (published: the catalogue is Parquet tables)"
        ),
        f"on disk      {human_bytes(data['bytes_on_disk'])}",
        f"compression  {f'{ratio}x' if ratio else '-'} "
        f"({human_bytes(data['raw_frame_bytes'])} of raw frames)",
        "durability   "
        + (", ".join(f"{k} ({v} runs)" for k, v in data["durability"].items()) or "-"),
        f"schema       version {data['schema']['version']}"
        + (f" ({data['schema']['latest_migration']})" if data["schema"]["latest_migration"] else "")
        + (
            f", pending: {', '.join(data['schema']['pending_migrations'])}"
            if data["schema"]["pending_migrations"]
            else ""
        ),
        f"format       segment format version {data['format_version']}",
    ]
    click.echo("\n".join(lines))


def _reclaimable(seg: dict) -> str:
    """What ``gc`` frees, and when the default threshold leaves dead bytes, why."""
    now, every = seg["reclaimable_bytes"], seg["reclaimable_all_bytes"]
    if now is None:
        return "- (a published store never changes)"
    text = f"{human_bytes(now)} by `framestore gc`"
    if every > now:
        text += (
            f" (it rewrites sealed segments under {seg['gc_threshold']:.0%} live); "
            f"{human_bytes(every)} by `framestore gc --threshold 1`"
        )
    return text


COMMANDS = [export, rm, info]
