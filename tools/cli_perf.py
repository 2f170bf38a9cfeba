"""Performance verbs: ``framestore bench``, ``framestore presets``, ``framestore tune``.

Registered by ``tools.cli`` through ``COMMANDS``. Each command parses, calls one library
function (``tools.bench``, ``framestore.settings``) and prints.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import click

from framestore.errors import InvalidInput

from ._common import (
    Failure,
    LazyChoice,
    durability_choices,
    emit_json,
    show_progress,
)
from .exitcodes import ExitCode
from .text import human_bytes

json_opt = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
GAME_CHOICES = ("assault", "carracing", "noise", "all")


def _progress(enabled: bool):
    if not enabled:
        return None
    return lambda msg: click.echo(f"bench: {msg}", err=True)


def _check_level(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """``--level`` within zstd's levels (read when the option is used, not at start-up)."""
    from framestore.settings import ZSTD_LEVELS

    return click.IntRange(ZSTD_LEVELS.start, ZSTD_LEVELS.stop - 1).convert(value, param, ctx)


def _check_levels(ctx: click.Context, param: click.Parameter, values: tuple) -> tuple:
    """``--zstd-level`` (repeatable): each within zstd's levels."""
    return tuple(_check_level(ctx, param, v) for v in values)


@click.command()
@click.option("--frames", type=click.IntRange(min=1), default=None, help="Frames per game.")
@click.option(
    "--game",
    type=click.Choice(GAME_CHOICES),
    default="all",
    show_default=True,
    help="Frame source.",
)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="Hz.")
@click.option("--envs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--vector-mode",
    type=click.Choice(("sync", "async")),
    default="sync",
    show_default=True,
    help="With --envs N (no --rate): step the copies in this process (sync) or in one "
    "worker process each (async).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Length of each --rate / --overload run.",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Run each pipeline N times and keep the fastest (a noisy machine).",
)
@click.option("--overload", is_flag=True, help="Producer 10x faster than the writer.")
@click.option(
    "--scale-out",
    is_flag=True,
    help="Frames/s of framestore.ray.read_store (1 and 2 read tasks) against iter_frames, "
    "local and published to S3 (moto), and the readers' peak memory (needs the ray extra).",
)
@click.option(
    "--torch",
    "torch_",
    is_flag=True,
    help="The framestore.torch datasets through DataLoaders against iter_frames on the same "
    "Assault frames (default 3000), interleaved, medians of --repeat rounds (default 5): "
    "a pass, random items, shuffled epochs, 4-frame windows, per-item cost (needs torch).",
)
@click.option(
    "--writers",
    is_flag=True,
    help="Writer and sink as threads vs in a storage process, with plain zstd, "
    "interleaved round by round (medians of --repeat rounds, default 5); with --envs N: "
    "record_steps with each placement.",
)
@click.option(
    "--reads",
    is_flag=True,
    help="Chunk length and zstd level: write CPU and bytes, random read_frame p50 "
    "(cache misses) and a sequential iter_frames pass against plain zstd, interleaved "
    "(medians of --repeat rounds, default 5; 12,000 Assault frames).",
)
@click.option(
    "--exports",
    is_flag=True,
    help="The parquet, LeRobot, rerun and Minari exports of one Assault episode of "
    "--frames steps (default 10,000), interleaved (medians of --repeat rounds, default 5): "
    "wall and CPU seconds against parquet's, peak memory against an episode a tenth as "
    "long, progress.",
)
@click.option(
    "--chunk-frames",
    "chunk_frames",
    multiple=True,
    type=click.IntRange(min=1),
    help="With --reads: a chunk length to measure (repeatable; default: the preset's).",
)
@click.option(
    "--part-frames",
    "part_frames",
    multiple=True,
    type=click.IntRange(min=0),
    help="With --reads: frames per independently decodable zstd part of a chunk to "
    "measure (repeatable; 0: one zstd frame per chunk; default: the preset's).",
)
@click.option(
    "--zstd-level",
    "zstd_levels",
    multiple=True,
    type=int,
    callback=_check_levels,
    help="With --reads: a zstd level to measure (repeatable; default: the preset's).",
)
@click.option(
    "--durability",
    "durabilities",
    multiple=True,
    type=LazyChoice(durability_choices),
    help="Run framestore under this durability profile (repeatable); default: the preset's.",
)
@click.option(
    "--level",
    type=int,
    default=19,
    show_default=True,
    callback=_check_level,
    help="zstd level for --overload.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the temporary outputs go (default: the system temp dir).",
)
@json_opt
def bench(
    frames,
    game,
    csv_path,
    rate,
    envs,
    vector_mode,
    seconds,
    repeat,
    overload,
    scale_out,
    torch_,
    writers,
    reads,
    exports,
    chunk_frames,
    part_frames,
    zstd_levels,
    durabilities,
    level,
    workdir,
    as_json,
):
    """Measure framestore against baselines on the same frames.

    Default: throughput, producer cost, bytes per frame and peak memory of framestore,
    base64-in-SQLite, PNG files, HDF5-lzf and plain zstd (the limit). --rate HZ --envs N:
    frame-pacing jitter of a fixed-rate loop with and without recording. --envs N (no
    --rate): a vector env of N Assault copies (--vector-mode) recorded through
    record_steps (--writers: with each placement), through N single-step recorders and
    not at all, interleaved, medians of --repeat rounds (default 5); and reading one
    episode out of 16 interleaved against it alone.
    --overload: a producer far faster than the writer under both queue policies.
    --writers: the frame writer and the SQLite sink as threads vs in a storage process,
    with plain zstd, interleaved round by round (--rate HZ --writers: the pacing loop
    with each). --reads: chunk length and zstd level, writing and reading (random
    read_frame, sequential iter_frames) against plain zstd. --scale-out: reading with
    Ray Data against one process, from a local store and from S3 (moto). --torch: the
    PyTorch datasets against iter_frames. --exports: the dataset exports of one long
    episode against parquet's.

    Exits 1 when a check fails (a pipeline error, frames not read back bit-exact, an
    overload run over its memory bound), after printing the table.
    """
    from . import bench as lib

    if csv_path:
        _check_writable(csv_path)
    games = ("assault", "carracing", "noise") if game == "all" else (game,)
    vector = envs > 1 and rate is None and not (overload or scale_out or torch_ or reads or exports)
    captured = (
        () if vector else _captured(games, game, exports, torch_, scale_out, overload, rate, reads)
    )
    for g in captured if frames else ():
        lib.check_fits(g, frames)  # frames are held in memory: refuse before a capture
    progress = _progress(show_progress() or not as_json)
    if vector:
        _bench_vector(
            envs, frames, repeat, vector_mode, writers, workdir, csv_path, as_json, progress
        )
        return
    rows, columns = _measure(
        games, game=game, frames=frames, rate=rate, envs=envs, seconds=seconds, repeat=repeat,
        overload=overload, scale_out=scale_out, torch_=torch_, writers=writers, reads=reads,
        exports=exports, chunk_frames=chunk_frames, part_frames=part_frames,
        zstd_levels=zstd_levels, durabilities=durabilities, level=level, workdir=workdir,
        progress=progress,
    )  # fmt: skip
    _report(rows, columns, csv_path, as_json)


def _captured(games, game, exports, torch_, scale_out, overload, rate, reads) -> tuple[str, ...]:
    """The games whose --frames frames the bench the flags pick holds in memory, in
    ``_measure``'s order of checks (the vector bench steps live environments and holds
    none)."""
    one = "assault" if game == "all" else game
    if exports:
        return ("assault",)
    if torch_ or scale_out:
        return (one,)
    if overload:
        return ("noise",)
    if rate is not None:
        return tuple(g for g in games if g != "noise") or games
    return (one,) if reads else games


def _rounds(repeat: int) -> int:
    """Rounds of an interleaved bench: ``--repeat``, at least 5 unless asked for more."""
    return repeat if repeat > 1 else 5


def _measure(
    games, *, game, frames, rate, envs, seconds, repeat, overload, scale_out, torch_, writers,
    reads, exports, chunk_frames, part_frames, zstd_levels, durabilities, level, workdir,
    progress,
) -> tuple[list[Any], Any]:  # fmt: skip
    """Run the bench the flags pick (first match in the order of the checks below) and
    return its rows and table columns."""
    from . import bench as lib

    one = "assault" if game == "all" else game  # the game of the one-game benches
    placements = ("thread", "process") if writers else ()
    if exports:
        rows = lib.run_exports(
            frames or 10_000, rounds=_rounds(repeat), workdir=workdir, progress=progress
        )
        return rows, lib.EXPORTS_TABLE
    if torch_:
        fs = lib.capture(one, frames or 3000)
        rows = lib.run_torch(fs, rounds=_rounds(repeat), workdir=workdir, progress=progress)
        return rows, lib.TORCH_TABLE
    if scale_out:
        fs = lib.capture(one, frames or 3000)
        return lib.scale_out(fs, workdir=workdir, progress=progress), lib.SCALEOUT_TABLE
    if overload:
        fs = lib.capture("noise", frames or 256)
        rows = lib.overload(
            fs, level=level, seconds=seconds, workdir=workdir, writers=placements or ("thread",)
        )
        return rows, lib.OVERLOAD_TABLE
    if rate is not None:
        games = tuple(g for g in games if g != "noise") or games
        rows = lib.run_pacing(
            games, hz=rate, envs=envs, seconds=seconds, frames=frames, workdir=workdir,
            progress=progress, writers=placements,
        )  # fmt: skip
        return rows, lib.PACING_TABLE
    if reads:
        rows = lib.run_reads(
            one, frames=frames, chunk_frames=chunk_frames, levels=zstd_levels,
            part_frames=part_frames, rounds=_rounds(repeat), workdir=workdir, progress=progress,
        )  # fmt: skip
        return rows, lib.READS_TABLE
    if writers:
        rows = lib.run_writers(
            games, frames=frames, rounds=_rounds(repeat), workdir=workdir, progress=progress
        )
        return rows, lib.WRITERS_TABLE
    rows = lib.run_bench(
        games, frames=frames, workdir=workdir, repeat=repeat, progress=progress,
        durabilities=durabilities,
    )  # fmt: skip
    return rows, lib.THROUGHPUT_TABLE


def _check_writable(path: str) -> None:
    """Open the CSV output before the run (a file that was not there is removed again):
    a path that cannot be written fails now, not after minutes of measuring."""
    existed = os.path.lexists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as e:
        raise InvalidInput(f"--csv {path}: cannot write there ({e.strerror or e})") from None
    if not existed:
        os.unlink(path)


def _report(rows: list[Any], columns, csv_path, as_json: bool) -> None:
    """Print (and save) a bench table; a failed check is exit 1, after the table."""
    from . import bench as lib

    if csv_path:
        lib.write_csv(rows, csv_path)
    if as_json:
        emit_json([asdict(r) for r in rows])
    else:
        click.echo(lib.format_table(rows, columns))
        if csv_path:
            click.echo(f"wrote {csv_path}", err=True)
    problems = lib.failed_checks(rows)
    if problems:
        raise Failure(
            f"bench: {len(problems)} check(s) failed: {'; '.join(problems)}", ExitCode.PROBLEMS
        )


def _bench_vector(
    envs, frames, repeat, vector_mode, writers, workdir, csv_path, as_json, progress
) -> None:
    """``bench --envs N`` without ``--rate``: the vector environment bench."""
    from . import bench as lib

    steps = max(10, (frames or 2400 * envs // 8) // envs)
    rows = lib.run_vector(
        envs, steps=steps, rounds=_rounds(repeat), vector_mode=vector_mode, writers=writers,
        workdir=workdir, progress=progress,
    )  # fmt: skip
    if progress:
        progress("reading one episode out of 16 interleaved, and alone")
    reads = lib.read_interleaved(lib.capture("assault", 16 * 500), workdir=workdir)
    if csv_path:
        lib.write_csv(rows, csv_path)
    if as_json:
        emit_json({"vector": [asdict(r) for r in rows], "read": [asdict(r) for r in reads]})
    else:
        click.echo(lib.format_table(rows, lib.VECTOR_TABLE))
        click.echo()
        click.echo(lib.format_table(reads, lib.READ_TABLE))
    problems = lib.failed_checks(rows)
    if problems:
        raise Failure(
            f"bench: {len(problems)} check(s) failed: {'; '.join(problems)}", ExitCode.PROBLEMS
        )


def _presets_data(resolved, explain) -> dict[str, Any]:
    host = resolved.host
    return {
        "env_id": resolved.env_id,
        "family": resolved.family,
        "preset": resolved.preset,
        "host_profile": resolved.host_profile,
        "host": asdict(host) if host is not None else None,
        "memory_budget_bytes": resolved.memory_budget_bytes,
        "frame_bytes_hint": resolved.frame_bytes_hint,
        "config_file": str(resolved.config_file) if resolved.config_file else None,
        "lite_suggested": resolved.lite_suggested,
        "settings": [{"name": n, "value": v, "source": s} for n, v, s in explain(resolved)],
    }


@click.command()
@click.option("--env", "env_id", default="ALE/Assault-v5", show_default=True)
@click.option(
    "--custom-env",
    is_flag=True,
    help="ENV is registered by your own code, not Gymnasium's registry: show its settings.",
)
@click.option("--preset", default=None, help="A named preset (listed below).")
@json_opt
def presets(env_id, custom_env, preset, as_json):
    """Show the effective recording settings for ENV and where each value came from."""
    from framestore.settings import PRESETS, check_registered, explain, resolve

    if not custom_env:
        check_registered(env_id, hint="pass --custom-env if your own code registers it")
    resolved = resolve(env_id, preset=preset)
    data = _presets_data(resolved, explain)
    data["presets"] = dict(PRESETS)
    if as_json:
        emit_json(data)
        return
    host = resolved.host
    click.echo(
        f"{resolved.env_id} (family {resolved.family}), preset {resolved.preset}, "
        f"host profile {resolved.host_profile}"
        + (
            f" ({host.cores} cores, {human_bytes(host.ram_bytes)} RAM, disk {host.disk_kind})"
            if host
            else ""
        )
    )
    click.echo(f"memory budget for queue + lite ring: {human_bytes(resolved.memory_budget_bytes)}")
    width = max(len(s["name"]) for s in data["settings"])
    for s in data["settings"]:
        value = s["value"]
        shown = (
            f"{value} ({human_bytes(value)})"
            if s["name"].endswith("_bytes") and isinstance(value, int)
            else str(value)
        )
        click.echo(f"  {s['name']:<{width}}  {shown:<24} {s['source']}")
    click.echo("presets: " + ", ".join(PRESETS))


def observed_runs(store) -> list[dict[str, Any]]:
    """The queue statistics ``Recorder.close`` stored with each finished run, in the
    shape ``framestore.settings.suggest_tuning`` takes. Runs without stats are skipped."""
    from framestore.settings import OBSERVED_KEYS

    needed = tuple(k for k in OBSERVED_KEYS if k != "env_id")
    out = []
    for run in store.runs():
        stats = run.stats or {}
        if not all(k in stats for k in needed):
            continue
        row = {"env_id": run.env_id, **{k: stats[k] for k in needed}}
        batch = (run.config.get("settings") or {}).get("batch_size")
        if isinstance(batch, int) and not isinstance(batch, bool):
            row["batch_size"] = batch
        out.append(row)
    return out


@click.command()
@click.argument("store", type=click.Path(file_okay=True, dir_okay=True))
@click.option("--apply", "apply_", is_flag=True, help="Save the suggestions to the presets file.")
@json_opt
def tune(store, apply_, as_json):
    """Propose better per-game queue and batch settings from the runs recorded in STORE."""
    from framestore import FrameStore
    from framestore.settings import default_config_path, save_tuning, suggest_tuning

    with FrameStore.open(store, readonly=True) as st:
        observed = observed_runs(st)
    suggestions = suggest_tuning(observed)
    saved = str(save_tuning(suggestions)) if apply_ and suggestions else None
    if as_json:
        emit_json(
            {
                "runs": len(observed),
                "observed": observed,
                "suggestions": suggestions,
                "config_file": str(default_config_path()),
                "saved": saved,
            }
        )
        return
    if not observed:
        click.echo("no finished runs with queue statistics in this store")
        return
    click.echo(f"{len(observed)} run(s) observed")
    if not suggestions:
        click.echo("the current settings fit what was observed: nothing to change")
        return
    for env_id, table in suggestions.items():
        click.echo(f"[{env_id}]")
        for key, value in table.items():
            click.echo(f"  {key} = {value}")
    if saved:
        click.echo(f"saved to {saved}")
    else:
        click.echo(f"run with --apply to save them to {default_config_path()}", err=True)


COMMANDS = [bench, presets, tune]
