"""CLI verb ``publish`` (registered by ``tools.cli``): an immutable copy of a store for
object storage, read back by ``FrameStore.open(URL, readonly=True)`` and
``framestore.ray.read_store``."""

from __future__ import annotations

import json

import click

from ._common import emit_json, show_progress
from ._progress import progress_bar
from .text import human_bytes


def _storage_options(pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs as fsspec storage options (VALUE parsed as JSON when it is)."""
    from framestore.errors import InvalidInput

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--storage-option {pair!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


@click.command()
@click.argument("store", type=click.Path(file_okay=True, dir_okay=True))
@click.argument("dest")
@click.option(
    "--storage-option",
    "storage_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An fsspec option for DEST (repeatable), e.g. endpoint_url=http://127.0.0.1:9000.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def publish(store, dest, storage_options, as_json):
    """Publish STORE to DEST (a new directory, or a URL such as s3://bucket/runs): its
    sealed segments as they are, the catalogue as Parquet and a manifest with checksums.

    Readers open DEST directly (FrameStore.open(DEST, readonly=True), read_store) with
    ranged reads. A store being recorded publishes its finished episodes whose frames are
    in sealed segments; the others are listed as skipped.
    """
    from framestore import FrameStore
    from framestore.maintenance.publish import publish as do_publish

    options = _storage_options(storage_options)
    with (
        FrameStore.open(store, create=False, readonly=True) as st,
        progress_bar("publishing", show_progress() and not as_json) as progress,
    ):
        report = do_publish(st, dest, storage_options=options, progress=progress)
    if as_json:
        emit_json(report)
        return
    click.echo(
        f"published {report.episodes} episode(s), {report.steps} steps, {report.frames} frames, "
        f"{report.segments} segment(s) -> {report.dest} ({human_bytes(report.bytes)})"
    )
    for episode, why in report.skipped.items():
        click.echo(f"  skipped episode {episode}: {why}")


COMMANDS = [publish]
