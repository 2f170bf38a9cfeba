"""``framestore gui``: the composition root of the desktop app. It builds ``GuiOptions``
from the command line and calls ``gui.app.run``.

This is the one import from ``tools`` up into ``gui`` (allowed by name in the layers
contract in pyproject.toml). It happens inside the command, so Qt is imported only when
this verb runs and the rest of the CLI never needs PySide6.
"""

from __future__ import annotations

from pathlib import Path

import click

from .exitcodes import ExitCode


@click.command(name="gui")
@click.argument("store", required=False)
@click.option("--replay", type=int, metavar="EPISODE_ID", help="Open this episode in the viewer.")
@click.option("--frame", type=int, default=0, show_default=True, help="Step to show (--replay).")
@click.option("--play", "play_env", metavar="ENV_ID", help="Start this environment.")
@click.option(
    "--steps",
    type=int,
    default=300,
    show_default=True,
    help="Actions of the scripted policy (--play --screenshot); recorded, an episode of "
    "N+1 steps (step 0 is the reset).",
)
@click.option(
    "--record",
    is_flag=True,
    help="Record --play into STORE (without it, a screenshot writes nothing to the store).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --play.")
@click.option("--preset", default=None, help="Recording preset (--play).")
@click.option("--fast", is_flag=True, help="With --screenshot: play as fast as possible.")
@click.option("--screenshot", type=click.Path(dir_okay=False), help="Save a screenshot, exit.")
@click.pass_context
def gui_command(
    ctx: click.Context,
    store: str | None,
    replay: int | None,
    frame: int,
    play_env: str | None,
    steps: int,
    record: bool,
    seed: int,
    preset: str | None,
    fast: bool,
    screenshot: str | None,
) -> None:
    """Play with recording, live HUD, replay viewer.

    STORE is a store directory (default: the user's data dir) or a published store (a
    directory or URL written by ``framestore publish``), which opens read-only."""
    try:
        from gui.app import GuiOptions, run
    except ImportError as e:  # PySide6 (or a library Qt needs) is missing
        click.echo(
            f"framestore: error: the GUI needs PySide6 ({e}): pip install 'framestore[gui]'",
            err=True,
        )
        ctx.exit(ExitCode.USAGE)
    try:
        options = GuiOptions(
            replay=replay,
            frame=frame,
            play=play_env,
            steps=steps,
            record=record,
            seed=seed,
            preset=preset,
            fast=fast,
            screenshot=Path(screenshot) if screenshot else None,
        )
    except ValueError as e:
        raise click.UsageError(str(e), ctx) from None
    if replay is not None:
        _check_replay_id(store, replay)
    ctx.exit(run(store, options))  # a URL stays a URL: never through Path()


def _check_replay_id(store: str | None, replay: int) -> None:
    """An id SQLite cannot hold, or (in a given store) no such episode: one line, exit 2,
    before Qt starts (its signals carry 32-bit ints)."""
    from framestore import FrameStore
    from framestore.catalog import check_id

    check_id(replay, "--replay episode id")
    if store is not None and "://" not in store and Path(store, "framestore.db").exists():
        with FrameStore.open(store, readonly=True) as st:
            st.episode(replay)


COMMANDS = [gui_command]
