"""What every CLI verb shares: error -> exit code mapping, JSON output, progress."""

from __future__ import annotations

import logging
import sqlite3
import sys
from typing import Any

import click
import gymnasium as gym

from framestore.errors import (
    CorruptData,
    EpisodeNotFound,
    FrameStoreError,
    InvalidInput,
    NotAStore,
    QueueFull,
    RunNotFound,
    SchemaTooNew,
    SinkError,
    StoreIOError,
    StoreLocked,
    UnsafeStore,
    WriterFailed,
)
from framestore.jsonsafe import dumps

from .exitcodes import ExitCode
from .text import human_bytes, one_line  # noqa: F401 - re-exported for the verbs

# The verbs' short names for ``ExitCode`` members (defined once in ``tools.exitcodes``).
EXIT_OK = ExitCode.OK
EXIT_PROBLEMS = ExitCode.PROBLEMS
EXIT_USAGE = ExitCode.USAGE
EXIT_DATA_LOSS = ExitCode.DATA_LOSS
EXIT_LOCKED = ExitCode.LOCKED
EXIT_CORRUPT = ExitCode.CORRUPT
EXIT_IO = ExitCode.IO
EXIT_INTERRUPTED = ExitCode.INTERRUPTED


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
        return EXIT_LOCKED
    if isinstance(exc, (CorruptData, UnsafeStore)):
        return EXIT_CORRUPT
    if isinstance(exc, (WriterFailed, QueueFull, StoreIOError)):
        return EXIT_IO
    if isinstance(exc, (InvalidInput, NotAStore, EpisodeNotFound, RunNotFound, SchemaTooNew)):
        return EXIT_USAGE
    if isinstance(exc, FrameStoreError):
        return EXIT_USAGE
    if isinstance(exc, OSError):
        return EXIT_IO
    return EXIT_PROBLEMS


def _sqlite_exit_code(exc: sqlite3.Error) -> int:
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN):
        return EXIT_IO
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in str(exc):
        return EXIT_CORRUPT
    if "disk is full" in str(exc) or "disk I/O" in str(exc):
        return EXIT_IO
    return EXIT_CORRUPT if isinstance(exc, sqlite3.DatabaseError) else EXIT_IO


class _OneLineLog(logging.Handler):
    """Library warnings as one line each on the current stderr, never a traceback.

    ERROR records are left out: they come from a background thread's failure
    (``frame writer failed``, ``telemetry DB sink failed``), which is always raised to
    the caller too and then printed once as ``framestore: error: ...``."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            return
        try:
            click.echo(f"framestore: {record.levelname.lower()}: {record.getMessage()}", err=True)
        except Exception:  # logging must never break the command
            pass


def configure_logging() -> None:
    """Route the library loggers through ``_OneLineLog`` (once per process)."""
    for name in ("framestore", "telemetry"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _OneLineLog) for h in logger.handlers):
            handler = _OneLineLog(logging.WARNING)
            logger.addHandler(handler)


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
        configure_logging()
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("framestore: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (FrameStoreError, OSError, sqlite3.Error) as e:
            cause = root_error(e)
            text = one_line(cause)
            if isinstance(cause, sqlite3.Error):
                text = f"database error: {text}"
            raise Failure(text, exit_code_for(cause)) from e
        except gym.error.DependencyNotInstalled as e:
            # Gymnasium imports renderers (pygame, Box2D) lazily, at reset or render.
            raise Failure(f"missing dependency: {one_line(e)}", EXIT_USAGE) from e
        except gym.error.Error as e:
            raise Failure(f"environment error: {one_line(e)}", EXIT_USAGE) from e


def emit_json(data: Any) -> None:
    click.echo(dumps(data, compact=False))


def show_progress() -> bool:
    return sys.stderr.isatty()
