"""``framestore gc | verify | recover``: thin click commands over ``tools.gc``,
``tools.verify`` and ``tools.recover`` (the GUI calls the same functions)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._common import emit_json, show_progress
from ._gcpolicy import DEFAULT_THRESHOLD
from ._progress import progress_bar
from .exitcodes import ExitCode
from .text import human_bytes

if TYPE_CHECKING:  # the verb imports tools.recover when it runs (start-up time)
    from .recover import RecoverReport

store_arg = click.argument("store", type=click.Path(file_okay=True, dir_okay=True))
json_opt = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.command()
@store_arg
@click.option("--dry-run", is_flag=True, help="Report what would be done; change nothing.")
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Rewrite sealed segments whose live fraction is below this (1: every sealed "
    "segment, also one without dead bytes: it rewrites old-format and merged segments too; "
    "`framestore info` shows what each reclaims).",
)
@json_opt
def gc(store, dry_run, threshold, as_json):
    """Compact segments and reclaim the space of deleted episodes (crash-safe)."""
    from .gc import collect

    with progress_bar("compacting", show_progress() and not as_json) as progress:
        r = collect(store, threshold=threshold, dry_run=dry_run, progress=progress)
    if as_json:
        emit_json(r.as_dict())
        return
    if dry_run:
        click.echo(
            f"gc (dry run): would rewrite {len(r.segments_rewritten)} segment(s) and delete "
            f"{len(r.segments_deleted)}, copying about {human_bytes(r.bytes_copied)}"
        )
    else:
        click.echo(
            f"gc: rewrote {len(r.segments_rewritten)} segment(s) into "
            f"{len(r.segments_written)} new, deleted {len(r.segments_deleted)}"
        )
    click.echo(
        f"  segments: {human_bytes(r.segment_bytes_before)} -> "
        f"{human_bytes(r.segment_bytes_after)} ({_change(r.segment_bytes_reclaimed)})"
    )
    if r.db_bytes_after is None:  # a dry run: VACUUM's result is known once it ran
        click.echo(
            f"  database: {human_bytes(r.db_bytes_before)} now; gc removes "
            f"{r.step_rows_removed} step row(s) of deleted episodes and compacts the file"
        )
    else:
        click.echo(
            f"  database: {human_bytes(r.db_bytes_before)} -> {human_bytes(r.db_bytes_after)} "
            f"({_change(r.db_bytes_reclaimed)})"
        )
    click.echo(
        f"  steps {'to repoint' if dry_run else 'repointed'}: {r.steps_repointed}, step rows "
        f"{'to remove' if dry_run else 'removed'}: {r.step_rows_removed}, {r.seconds} s"
    )
    if r.partials_removed:
        click.echo(f"  leftovers removed: {', '.join(r.partials_removed)}")
    if r.blocked:
        click.echo(f"  gc would not run now: {r.blocked}")


def _change(reclaimed: int) -> str:
    return (
        f"{human_bytes(reclaimed)} reclaimed"
        if reclaimed >= 0
        else f"grew {human_bytes(-reclaimed)}"
    )


@click.command()
@store_arg
@click.option(
    "--quick",
    is_flag=True,
    help="Check checksums and pointers; do not decompress (nor hash a published store's "
    "objects whole).",
)
@click.option(
    "--replay",
    is_flag=True,
    help="Play episodes again in their environment and compare every frame bit for bit.",
)
@click.option(
    "--episode",
    "episodes",
    type=int,
    multiple=True,
    help="With --replay: only this episode (repeatable).",
)
@json_opt
def verify(store, quick, replay, episodes, as_json):
    """Check every checksum, frame pointer and catalogue entry (read-only).

    STORE may be a published store (a directory or a URL such as s3://bucket/runs): each
    object is then also checked against its manifest's size and SHA-256.

    With --replay, instead re-create each episode's environment from its stored env
    spec, seed (or the earlier episodes it continues) and actions, and compare every
    stored frame with the environment's. Exit status 0 when the store is clean (every
    replayable episode matches), 1 when problems were found (an episode differs)."""
    if episodes and not replay:
        raise click.UsageError("--episode needs --replay")
    if replay:
        _verify_replay(store, episodes, quick, as_json)
        return
    from .verify import verify as do_verify

    with progress_bar("verifying", show_progress() and not as_json) as progress:
        r = do_verify(store, quick=quick, progress=progress)
    if as_json:
        emit_json(r.as_dict())
    else:
        for p in r.problems:
            click.echo(str(p))
        if r.writer_running:
            click.echo("in progress: a writer is recording; rows it commits later are not checked")
        for note in r.in_progress:
            click.echo(f"in progress: {note}")
        summary = (
            f"{r.segments_checked} segments, {r.records_checked} records, "
            f"{r.frames_checked} frames, {r.steps_checked} step pointers, "
            f"{human_bytes(r.bytes_checked)}{' (quick)' if quick else ''}, {r.seconds} s"
        )
        click.echo(f"ok: {summary}" if r.ok else f"{len(r.problems)} problem(s) in {summary}")
    if not r.ok:
        click.get_current_context().exit(ExitCode.PROBLEMS)


def _verify_replay(store, episodes, quick, as_json) -> None:
    from .replay import replay as do_replay

    if quick:
        raise click.UsageError("--quick and --replay do not go together")
    with progress_bar("replaying", show_progress() and not as_json) as progress:
        r = do_replay(store, episodes or None, progress=progress)
    if as_json:
        emit_json(r.as_dict())
    else:
        for e in r.episodes:
            click.echo(str(e))
        summary = (
            f"{r.count('match')} match, {r.count('differs')} differ, "
            f"{r.count('not replayable')} not replayable, {r.seconds} s"
        )
        click.echo(f"ok: {summary}" if r.ok else f"problems: {summary}")
    if not r.ok:
        click.get_current_context().exit(ExitCode.PROBLEMS)


@click.command()
@store_arg
@click.option(
    "--drop-missing",
    is_flag=True,
    help="Forget the frames of segments that are missing or unreadable (default: keep "
    "their pointers and report them, so a restored file is used again).",
)
@json_opt
def recover(store, drop_missing, as_json):
    """Repair a store after a crash: cut torn tails, seal, rebuild lost rows.

    Exit status 0 when nothing was lost, 3 when the store was repaired with data loss,
    1 when rows still point into segments that cannot be read (kept, see --drop-missing)."""
    from .recover import recover as do_recover

    with progress_bar("recovering", show_progress() and not as_json) as progress:
        r = do_recover(store, progress=progress, drop_missing=drop_missing)
    if as_json:
        emit_json(r.as_dict())
    else:
        for line in (*_segment_lines(r), *_row_lines(r)):
            click.echo(line)
        click.echo(_recover_summary(r))
    if r.data_lost:
        click.get_current_context().exit(ExitCode.DATA_LOSS)
    if r.missing:
        click.get_current_context().exit(ExitCode.PROBLEMS)


def _segment_lines(r: RecoverReport) -> Iterator[str]:
    """What ``recover`` did to segment files and leftovers, one line each."""
    for t in r.segments_truncated:
        yield (
            f"segment {t['segment']}: cut {t['bytes_removed']} unreadable bytes "
            f"at offset {t['offset']} ({t['error'] or 'after the seal'})"
        )
    for c in r.segments_corrupt:
        yield (
            f"segment {c['segment']}: corrupt bytes {c['offset']}-{c['end']} removed ({c['error']})"
        )
    if r.segments_sealed:
        yield f"sealed segments: {', '.join(map(str, r.segments_sealed))}"
    if r.segments_rewritten:
        yield f"rewrote segments: {', '.join(map(str, r.segments_rewritten))}"
    if r.segments_removed or r.partials_removed:
        names = [str(s) for s in r.segments_removed] + r.partials_removed
        yield f"removed leftovers: {', '.join(names)}"
    if r.staging_removed:
        names = ", ".join(Path(p).name for p in r.staging_removed)
        yield (
            f"removed {len(r.staging_removed)} staging directory(ies) killed publishes "
            f"left beside the store: {names}"
        )


def _row_lines(r: RecoverReport) -> Iterator[str]:
    """What ``recover`` lost, rebuilt or re-linked in the catalogue, one line each."""
    for ep, n in r.frames_lost.items():
        yield f"LOST: episode {ep}: {n} frame(s) unreadable; their steps are kept"
    for why, n in r.frames_not_rebuilt.items():
        yield f"NOT REBUILT: {n} frame(s) {why}"
    if r.catalogue_rebuilt:
        yield "framestore.db was missing: the catalogue was rebuilt from the segments"
    for ep, n in r.steps_recovered.items():
        yield f"episode {ep}: {n} step row(s) rebuilt from segments"
    for ep, n in r.steps_without_metadata.items():
        yield (
            f"LOST: episode {ep}: {n} step row(s) rebuilt with their frame only (segments "
            "older than format 3 hold no action, reward or info)"
        )
    if r.episodes_ended:
        yield (
            f"episodes whose end was restored from segments: "
            f"{', '.join(map(str, r.episodes_ended))}"
        )
    if r.episodes_deleted:
        yield (
            "episodes deleted as their rm's tombstone says: "
            f"{', '.join(map(str, r.episodes_deleted))}"
        )
    for ep, n in r.steps_relinked.items():
        yield f"episode {ep}: {n} step row(s) re-linked to another copy of their frame"
    for new, old in r.episodes_split.items():
        yield (
            f"episode {new}: frames of an earlier recording that had used episode id {old} "
            "(kept apart, not merged)"
        )
    for sid, eps in r.segments_unavailable.items():
        which = ", ".join(f"episode {ep}: {n}" for ep, n in eps.items())
        yield f"MISSING: segment {sid} cannot be read; frame pointers kept ({which})"
    if r.episodes_created:
        yield f"episodes re-created: {', '.join(map(str, r.episodes_created))}"
    if r.episodes_interrupted:
        yield f"episodes marked interrupted: {', '.join(map(str, r.episodes_interrupted))}"
    for note in r.notes:
        yield f"note: {note}"


def _recover_summary(r: RecoverReport) -> str:
    """The last line of ``recover``: lost, missing, repaired or nothing to do."""
    if r.data_lost and not (r.frames_lost or r.bytes_discarded):
        what = "frames not rebuilt" if r.frames_not_rebuilt else "step metadata"
        return f"recovered with data loss ({what}), {r.seconds} s"
    if r.data_lost:
        return (
            f"recovered with data loss ({human_bytes(r.bytes_discarded)} of segment data "
            f"unreadable), {r.seconds} s"
        )
    if r.missing:
        return (
            "recovered what could be read; restore the missing segment(s) and run "
            f"recover again, or `framestore recover --drop-missing`, {r.seconds} s"
        )
    if r.changed:
        return f"recovered, nothing lost, {r.seconds} s"
    return f"nothing to recover, {r.seconds} s"


COMMANDS = [gc, verify, recover]
