"""What every CLI verb shares: error -> exit code mapping, JSON output, progress."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from framestore.errors import (
    CorruptData,
    EpisodeNotFound,
    FrameStoreError,
    InvalidInput,
    NotAStore,
    QueueFull,
    RunNotFound,
    SchemaTooNew,
    StoreLocked,
    WriterFailed,
)

# Exit codes (documented in README "CLI"):
EXIT_OK = 0
EXIT_PROBLEMS = 1  # verify found problems
EXIT_USAGE = 2  # bad input, unknown ids, not a store (click uses 2 for usage errors too)
EXIT_DATA_LOSS = 3  # recover completed, but some data was lost
EXIT_LOCKED = 4  # another writer holds the store
EXIT_CORRUPT = 5  # corrupt data met while reading
EXIT_IO = 6  # disk full, writer failed, other I/O errors
EXIT_INTERRUPTED = 130


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, StoreLocked):
        return EXIT_LOCKED
    if isinstance(exc, CorruptData):
        return EXIT_CORRUPT
    if isinstance(exc, (WriterFailed, QueueFull)):
        return EXIT_IO
    if isinstance(exc, (InvalidInput, NotAStore, EpisodeNotFound, RunNotFound, SchemaTooNew)):
        return EXIT_USAGE
    if isinstance(exc, FrameStoreError):
        return EXIT_USAGE
    if isinstance(exc, OSError):
        return EXIT_IO
    return 1


class Failure(click.ClickException):
    """One readable line on stderr and a chosen exit code, never a traceback."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"framestore: error: {self.message}", err=True)


class FramestoreGroup(click.Group):
    """Turns library errors raised by any verb into ``Failure``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("framestore: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (FrameStoreError, OSError) as e:
            raise Failure(_one_line(e), exit_code_for(e)) from e


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=_json_default))


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(o)
    return str(o)


def show_progress() -> bool:
    return sys.stderr.isatty()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
