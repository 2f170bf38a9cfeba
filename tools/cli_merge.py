"""``framestore merge``: a thin click command over ``tools.merge``."""

from __future__ import annotations

import click

from ._common import emit_json, show_progress
from ._progress import progress_bar
from .text import human_bytes


@click.command()
@click.argument("dest", type=click.Path(file_okay=True, dir_okay=True))
@click.argument("sources", nargs=-1, required=True, type=click.Path(file_okay=True, dir_okay=True))
@click.option(
    "--move",
    is_flag=True,
    help="Hard-link segments instead of copying them (same file system) and delete each "
    "source store once merged.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def merge(dest, sources, move, as_json):
    """Merge the stores SOURCES into DEST (created when missing), crash-safely.

    Runs, episodes and steps are re-keyed; sealed segments are copied (or with --move
    hard-linked) under new segment ids, never rewritten; each source commits in one
    transaction. Running the same command again after a crash finishes the job without
    duplicates."""
    from .merge import merge as do_merge

    with progress_bar("merging", show_progress() and not as_json) as progress:
        r = do_merge(dest, sources, move=move, progress=progress)
    if as_json:
        emit_json(r.as_dict())
        return
    if r.interrupted_undone:
        click.echo(f"undid an interrupted merge (removed segments {r.interrupted_undone})")
    for s in r.sources:
        if s.status != "merged":
            click.echo(f"{s.path}: {s.status}")
            continue
        how = "linked" if s.segments_linked == s.segments and s.segments else "copied"
        click.echo(
            f"{s.path}: {s.runs} run(s), {s.episodes} episode(s), {s.steps} steps, "
            f"{s.segments} segment(s) {how} ({human_bytes(s.bytes)})"
            + (", source removed" if move else "")
        )
    click.echo(f"merged into {r.dest}, {r.seconds} s")


COMMANDS = [merge]
