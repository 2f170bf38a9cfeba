"""``framestore gui``: starts the PySide6 GUI. Qt is imported only when this verb runs
(through ``importlib``), so the rest of the CLI never needs it."""

from __future__ import annotations

import importlib
import sys

import click

from ._common import EXIT_USAGE


@click.command(name="gui")
@click.argument("store", required=False, type=click.Path(file_okay=True, dir_okay=True))
@click.option("--replay", type=int, metavar="EPISODE_ID", help="Open this episode in the viewer.")
@click.option("--frame", type=int, default=0, show_default=True, help="Step to show (--replay).")
@click.option("--play", "play_env", metavar="ENV_ID", help="Start this environment.")
@click.option("--steps", type=int, default=300, show_default=True, help="Scripted steps (--play).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --play.")
@click.option("--preset", default=None, help="Recording preset (--play).")
@click.option("--fast", is_flag=True, help="With --screenshot: play as fast as possible.")
@click.option("--screenshot", type=click.Path(dir_okay=False), help="Save a screenshot, exit.")
def gui_command(store, replay, frame, play_env, steps, seed, preset, fast, screenshot):
    """Play with recording, live HUD, replay viewer (default store: the user's data dir)."""
    try:
        app = importlib.import_module("gui.app")
    except ImportError as e:
        click.echo(
            f"framestore: error: the GUI needs PySide6 ({e}): pip install 'framestore[gui]'",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    argv = [store] if store else []
    if replay is not None:
        argv += ["--replay", str(replay), "--frame", str(frame)]
    if play_env:
        argv += ["--play", play_env, "--steps", str(steps), "--seed", str(seed)]
    if preset:
        argv += ["--preset", preset]
    if fast:
        argv.append("--fast")
    if screenshot:
        argv += ["--screenshot", screenshot]
    sys.exit(app.main(argv))


COMMANDS = [gui_command]
