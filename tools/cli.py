"""The ``framestore`` command line. One thin command per verb: parse, open the store,
call one library function, print. Library errors become one line and an exit code
(see ``tools._common``)."""

from __future__ import annotations

import os
import sqlite3
import sys
import time

import click

from framestore.errors import FrameStoreError

from . import cli_export, cli_maintenance, cli_merge, cli_perf, cli_publish
from ._common import (
    FramestoreGroup,
    LazyChoice,
    codec_choices,
    durability_choices,
    emit_json,
    show_progress,
    vector_mode_choices,
    writer_choices,
)
from ._warnings import current as current_warnings
from .cli_gui import gui_command
from .exitcodes import ExitCode
from .text import format_number, human_bytes

# Start-up: nothing at module level imports the library's heavy modules (numpy,
# gymnasium, sqlite-utils and the pandas it pulls in): the verbs import what they use
# when they run, and option choices that are library constants load when first used
# (tests/cli/test_cli_startup.py checks `--help` in a subprocess).


store_arg = click.argument("store", type=click.Path(file_okay=True, dir_okay=True))
json_opt = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group(cls=FramestoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="framestore")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Print every library warning as logged (LOG code and fields); by default the "
    "first of each kind is said in words and the rest counted.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=86400),
    default=None,
    metavar="SECONDS",
    help="Seconds one request to a published store (a URL) may take before the verb "
    "fails with one line [default: 30, or $FRAMESTORE_TIMEOUT].",
)
def cli(verbose: bool, timeout: float | None) -> None:
    """Record Gymnasium sessions: frames in compressed segments, steps in SQLite."""
    if timeout is not None:  # read where a published store is opened; put back after
        _set_env("FRAMESTORE_TIMEOUT", str(timeout))


def _set_env(name: str, value: str) -> None:
    """Set ``name`` for the rest of this command (the CLI runs in-process in tests)."""
    before = os.environ.get(name)
    os.environ[name] = value

    def restore() -> None:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before

    click.get_current_context().call_on_close(restore)


@cli.command()
@store_arg
@click.option("--env", "env_id", required=True, help="Gymnasium id, e.g. ALE/Assault-v5.")
@click.option(
    "--episodes",
    default=1,
    show_default=True,
    type=int,
    help="Episodes to record. With --envs N: recording stops once at least this many "
    "have ended (sub-environments ending on the same step may add a few; the ones still "
    "running end as interrupted).",
)
@click.option(
    "--max-steps",
    type=int,
    default=None,
    help="Truncate each episode after N actions; it then holds N+1 steps (step 0 is the "
    "frame after the reset).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Episode i uses seed S+i.")
@click.option(
    "--policy",
    default="random",
    show_default=True,
    help="random, or your policy as pkg.module:callable or path/to/file.py:callable (a "
    "callable obs -> action, or an object or class with act(obs) and reset(seed)); its "
    "name is stored with the run.",
)
@click.option("--preset", default=None, help="Performance preset (see `framestore presets`).")
@click.option("--codec", type=LazyChoice(codec_choices), default=None)
@click.option("--durability", type=LazyChoice(durability_choices), default=None)
@click.option(
    "--writer",
    type=LazyChoice(writer_choices),
    default=None,
    help="Run the frame writer and the SQLite sink as threads or in a storage process "
    "(default: the host profile's choice, see `framestore presets`).",
)
@click.option(
    "--envs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Record N copies of ENV at once (a gymnasium.vector environment).",
)
@click.option(
    "--vector-mode",
    type=LazyChoice(vector_mode_choices),
    default="sync",
    show_default=True,
    help="With --envs: step the copies in this process (sync) or in subprocesses (async).",
)
@click.option(
    "--observations",
    is_flag=True,
    help="Also record each step's observation: images as the frame stream 'observation' "
    "(stored once when equal to the rendered frame), small arrays in the step row.",
)
@json_opt
def record(
    store, env_id, episodes, max_steps, seed, policy, preset, codec, durability, writer, envs,
    vector_mode, observations, as_json,
):  # fmt: skip
    """Record EPISODES episodes of ENV into STORE with a seeded policy.

    On a terminal a progress bar runs; otherwise (a pipe, a CI log) one line is printed
    per finished episode. Ctrl-C or SIGTERM flushes what was recorded, prints what was
    saved and exits 130."""
    from .record import RecordingInterrupted, sigterm_as_interrupt
    from .record import record as do_record

    total = episodes * (max_steps + 1) if max_steps else None  # rows: actions + the reset
    args = dict(
        episodes=episodes,
        max_steps=max_steps,
        seed=seed,
        policy=policy,
        preset=preset,
        codec=codec,
        durability=durability,
        writer=writer,
        envs=envs,
        vector_mode=vector_mode,
        observations=observations,
    )
    started = time.time()
    bar = show_progress() and not as_json
    if not bar and not as_json:
        args["on_episode"] = lambda e: click.echo(_episode_line(e))
    try:
        with sigterm_as_interrupt():
            if bar:
                with click.progressbar(
                    length=total, label=f"recording {env_id}", file=sys.stderr
                ) as progress:
                    summary = do_record(store, env_id, on_step=progress.update, **args)
                    if progress.length is not None:  # episodes that ended early: 100%
                        progress.update(max(0, progress.length - progress.pos))
            else:
                summary = do_record(store, env_id, **args)
    except RecordingInterrupted as stop:
        _print_record_summary(stop.summary, as_json, episodes_listed=not bar)
        click.echo("framestore: interrupted", err=True)
        raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None
    except (FrameStoreError, OSError, sqlite3.Error):  # a full disk, a failed writer...
        if not as_json:
            _print_saved_before_failure(store, started)
        raise  # the error itself: one line on stderr (FramestoreGroup)
    _print_record_summary(summary, as_json, episodes_listed=not bar)


def _print_saved_before_failure(store: str, started: float) -> None:
    """What a recording that failed (a full disk: "database or disk is full") saved, and
    what to do next; best effort: a store that cannot be read says nothing more."""
    from framestore import FrameStore

    try:
        with FrameStore.open(store, readonly=True) as st:
            runs = [r for r in st.runs() if r.created is not None and r.created >= started]
            eps = [e for r in runs for e in st.episodes(run_id=r.id)]
    except (FrameStoreError, OSError, sqlite3.Error):
        return
    if not runs:
        return
    click.echo(
        f"saved before the error: run {runs[-1].id}: {len(eps)} episode(s), "
        f"{sum(e.steps for e in eps)} steps, {sum(e.frames for e in eps)} frames; "
        f"once the cause is fixed (space freed), run `framestore recover {store}` to "
        "close the episode that was being recorded"
    )


def _episode_line(e: dict) -> str:
    seed = "- (autoreset)" if e["seed"] is None else e["seed"]
    return (
        f"  episode {e['id']}: seed {seed}, {e['steps']} steps, "
        f"reward {format_number(e['total_reward'])}, {e['status']}"
    )


def _print_record_summary(summary: dict, as_json: bool, *, episodes_listed: bool) -> None:
    """The run in one line, its episodes (unless printed as they finished) and the count
    of warnings not printed."""
    tally = current_warnings()
    warnings = tally.take_summary() if tally is not None else None
    if as_json:
        emit_json(summary)
        return
    eps = summary["episodes"]
    done = sum(e["status"] == "complete" for e in eps)
    saved = f"{len(eps)} episode(s)" + (f" ({done} complete)" if done != len(eps) else "")
    click.echo(
        f"{'interrupted: saved ' if summary.get('interrupted') else ''}run {summary['run_id']}: "
        f"{saved}, {summary['steps']} steps, {summary['frames']} frames; "
        f"{human_bytes(summary['bytes_out'])} of frames ({summary['compression_ratio']}x), "
        f"store {human_bytes(summary['bytes_on_disk'])} on disk; {summary['seconds']} s"
    )
    for e in eps:
        if not episodes_listed or e["status"] != "complete":
            click.echo(_episode_line(e))
    seen = summary.get("seeds_recorded_before")
    if seen:
        shown = ", ".join(map(str, seen[:5])) + (", ..." if len(seen) > 5 else "")
        click.echo(
            f"  note: the store held episodes of this env with seed(s) {shown} already; the "
            "seeded random policy recorded them again step for step (use another --seed "
            "for new episodes)"
        )
    if warnings is not None:
        click.echo(f"  warnings: {warnings}")


@cli.command(name="ls")
@store_arg
@json_opt
def ls_cmd(store, as_json):
    """List runs and episodes (and the store's state: being recorded, needing recover)."""
    from framestore import FrameStore

    from .info import store_state

    with FrameStore.open(store, readonly=True) as st:
        runs = st.runs()
        rows = [_ls_row(e, st.episode_bytes(e.id)) for e in st.episodes()]
        state = store_state(st)
    if as_json:
        emit_json(
            {
                "runs": [
                    {
                        "id": r.id,
                        "env_id": r.env_id,
                        "created": r.created,
                        "preset": r.preset,
                        "durability": r.durability,
                    }
                    for r in runs
                ],
                "episodes": rows,
                "state": state,
            }
        )
        return
    if not rows:
        click.echo("no episodes")
    else:
        _print_ls(rows)
    if state["state"] not in ("idle", "published"):
        click.echo(f"state: {state['state']}: {state['detail']}")


def _ls_row(e, size: int) -> dict:
    return {
        "id": e.id,
        "run_id": e.run_id,
        "env_id": e.env_id,
        "seed": e.seed,
        "steps": e.steps,
        "frames": e.frames,
        "status": e.status,
        "total_reward": e.total_reward,
        "bytes": size,
        "sub_env": e.sub_env,
        "continues_episode": e.continues_episode,
        "streams": list(e.streams),
    }


def _print_ls(rows: list[dict]) -> None:
    """The table; vector episodes get two more columns: the sub-environment that played
    each and the episode it continues (an autoreset episode has no seed of its own)."""
    vector = any(r["sub_env"] is not None for r in rows)
    streams = any(len(r["streams"]) > 1 for r in rows)  # more than render: say which
    extra = f" {'sub':>4} {'after':>6}" if vector else ""
    extra += "  streams" if streams else ""
    click.echo(
        f"{'episode':>7} {'run':>4} {'env':<22} {'seed':>6} {'steps':>7} {'frames':>7} "
        f"{'status':<11} {'reward':>9} {'bytes':>10}{extra}"
    )
    for r in rows:
        seed = "-" if r["seed"] is None else r["seed"]
        tail = ""
        if vector:
            sub = "-" if r["sub_env"] is None else r["sub_env"]
            after = "-" if r["continues_episode"] is None else r["continues_episode"]
            tail = f" {sub:>4} {after:>6}"
        if streams:
            tail += "  " + ",".join(r["streams"])
        click.echo(
            f"{r['id']:>7} {r['run_id']:>4} {r['env_id']:<22} {seed:>6} {r['steps']:>7} "
            f"{r['frames']:>7} {r['status']:<11} {r['total_reward']:>9.1f} "
            f"{human_bytes(r['bytes']):>10}{tail}"
        )


# Verbs that live in their own modules (kept out of this file so each stays small),
# registered by name: a renamed module or command fails here, loudly.
for _command in (
    *cli_maintenance.COMMANDS,
    *cli_export.COMMANDS,
    *cli_perf.COMMANDS,
    *cli_merge.COMMANDS,
    *cli_publish.COMMANDS,
    gui_command,  # imports gui (and Qt) only when the verb runs
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        return cli.main(args=argv, prog_name="framestore", standalone_mode=True) or 0
    except KeyboardInterrupt:
        click.echo("framestore: interrupted", err=True)
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
