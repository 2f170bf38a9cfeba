"""What every CLI verb shares: error -> exit code mapping, JSON output, progress."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Iterable
from typing import Any

import click

from framestore.errors import (
    CorruptData,
    EpisodeNotFound,
    FrameStoreError,
    InvalidInput,
    NotAStore,
    PlayFailed,
    QueueFull,
    RunNotFound,
    SchemaTooNew,
    SinkError,
    StoreIOError,
    StoreLocked,
    UnsafeStore,
    WriterFailed,
)

from ._warnings import WarningTally
from ._warnings import install as install_warnings
from .exitcodes import ExitCode
from .text import one_line


def root_error(exc: BaseException) -> BaseException:
    """The error worth reporting: a ``SinkError`` that only relays another failure (the
    frame writer's ``DiskFull``, SQLite's "disk is full") is unwrapped to that failure,
    so the user reads the cause and gets its exit code."""
    seen = set()
    while isinstance(exc, SinkError) and id(exc) not in seen:
        seen.add(id(exc))
        cause = exc.__cause__
        if not isinstance(cause, (FrameStoreError, OSError, sqlite3.Error)):
            break
        exc = cause
    return exc


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, sqlite3.Error):
        return _sqlite_exit_code(exc)
    if isinstance(exc, StoreLocked):
        return ExitCode.LOCKED
    if isinstance(exc, PlayFailed):  # the policy or the environment, not the input
        return ExitCode.PROBLEMS
    if isinstance(exc, (CorruptData, UnsafeStore)):
        return ExitCode.CORRUPT
    if isinstance(exc, (WriterFailed, QueueFull, StoreIOError)):
        return ExitCode.IO
    if isinstance(exc, (InvalidInput, NotAStore, EpisodeNotFound, RunNotFound, SchemaTooNew)):
        return ExitCode.USAGE
    if isinstance(exc, FrameStoreError):
        return ExitCode.USAGE
    if isinstance(exc, OSError):
        return ExitCode.IO
    return ExitCode.PROBLEMS


def _sqlite_exit_code(exc: sqlite3.Error) -> int:
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN):
        return ExitCode.IO
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in str(exc):
        return ExitCode.CORRUPT
    if "disk is full" in str(exc) or "disk I/O" in str(exc):
        return ExitCode.IO
    return ExitCode.CORRUPT if isinstance(exc, sqlite3.DatabaseError) else ExitCode.IO


class LazyChoice(click.Choice):
    """A ``click.Choice`` whose values are a library constant imported when the option is
    first parsed or shown (``framestore VERB --help``), not when the CLI starts: the
    constants live in modules that import numpy, gymnasium or sqlite-utils, and
    ``framestore --help``/``--version`` must not pay for them."""

    def __init__(self, load: Callable[[], Iterable[str]], case_sensitive: bool = True):
        # click.Choice.__init__ would read the values now
        self._load = load
        self._choices: tuple[str, ...] | None = None
        self.case_sensitive = case_sensitive

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._choices is None:
            self._choices = tuple(self._load())
        return self._choices


def codec_choices() -> tuple[str, ...]:
    from framestore.settings import CODECS

    return CODECS


def durability_choices() -> tuple[str, ...]:
    from framestore.settings import DURABILITIES

    return DURABILITIES


def writer_choices() -> tuple[str, ...]:
    from framestore.settings import WRITERS

    return WRITERS


def vector_mode_choices() -> tuple[str, ...]:
    from framestore.envs import VECTOR_MODES

    return VECTOR_MODES


class Failure(click.ClickException):
    """One readable line on stderr and a chosen exit code, never a traceback."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"framestore: error: {self.message}", err=True)


class OneLineUsageError(click.UsageError):
    """A usage error as one line (click prints its usage block and a hint on three more);
    ``--help`` still shows the usage."""

    def show(self, file=None) -> None:
        where = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"framestore: error: {self.message}{where}", err=True)


def _one_line_usage(e: click.UsageError) -> click.UsageError:
    if isinstance(e, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):
        return e  # already one line, or the help a bare ``framestore`` asks for
    return OneLineUsageError(e.format_message().rstrip("."), e.ctx)


class FramestoreGroup(click.Group):
    """Turns library errors raised by any verb into ``Failure`` and usage errors into
    one line; ends a verb with the count of the warnings it did not print."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:  # options of the group itself
            raise _one_line_usage(e) from None

    def invoke(self, ctx: click.Context) -> Any:
        tally = install_warnings(bool(ctx.params.get("verbose")))
        try:
            result = self._invoke(ctx)
        except click.exceptions.Exit as e:
            if e.exit_code == 0:
                _print_warning_summary(tally)
            raise
        _print_warning_summary(tally)
        return result

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise _one_line_usage(e) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("framestore: interrupted", err=True)
            ctx.exit(ExitCode.INTERRUPTED)
        except (FrameStoreError, OSError, sqlite3.Error) as e:
            cause = root_error(e)
            text = one_line(cause)
            if isinstance(cause, sqlite3.Error):
                text = f"database error: {text}"
            raise Failure(text, exit_code_for(cause)) from e
        except Exception as e:
            failure = _gymnasium_failure(e)
            if failure is None:
                raise
            raise failure from e


def _gymnasium_failure(e: Exception) -> Failure | None:
    """Gymnasium's own errors as one line (None for any other). Gymnasium is looked up,
    not imported: a verb that never imported it cannot have raised its errors (and
    ``--help`` stays free of it)."""
    gym = sys.modules.get("gymnasium")
    if gym is None:
        return None
    if isinstance(e, gym.error.DependencyNotInstalled):
        # Gymnasium imports renderers (pygame, Box2D) lazily, at reset or render.
        return Failure(f"missing dependency: {one_line(e)}", ExitCode.USAGE)
    if isinstance(e, gym.error.Error):
        return Failure(f"environment error: {one_line(e)}", ExitCode.USAGE)
    return None


def _print_warning_summary(tally: WarningTally) -> None:
    """The count of repeated warnings, unless the verb already printed it."""
    line = None if tally.reported else tally.summary()
    if line is not None:
        click.echo(f"framestore: warning: in all, {line}", err=True)


def emit_json(data: Any) -> None:
    from telemetry.jsonsafe import dumps  # numpy: imported by the verbs that print JSON

    click.echo(dumps(data, compact=False))


def show_progress() -> bool:
    return sys.stderr.isatty()
