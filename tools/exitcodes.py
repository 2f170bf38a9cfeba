"""The exit codes of the ``framestore`` command, defined once (README "Exit codes").

Every verb, the GUI's included, exits with one of these; library errors map to them in
``tools._common.exit_code_for``.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    """Process exit status of a ``framestore`` verb.

    Attributes:
        OK: success.
        PROBLEMS: ``verify`` found problems; also a failure with no code of its own
            (a GUI screenshot that timed out, an unexpected error).
        USAGE: bad input or usage, unknown ids, not a store (click uses 2 for usage
            errors too).
        DATA_LOSS: ``recover`` completed, but some data was lost.
        LOCKED: another writer holds the store.
        CORRUPT: corrupt data met while reading.
        IO: disk full, writer failed, other I/O errors.
        INTERRUPTED: Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
    """

    OK = 0
    PROBLEMS = 1
    USAGE = 2
    DATA_LOSS = 3
    LOCKED = 4
    CORRUPT = 5
    IO = 6
    INTERRUPTED = 130
