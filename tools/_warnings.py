"""Library warnings as the CLI shows them: in words, once per kind, the rest counted.

framestore and telemetry log structured lines (``LOG932 queue=frames queue_depth=...``,
see ``telemetry.logcodes``): right for log files and for ``framestore -v``, cryptic on a
terminal. Without ``-v`` the first warning of each kind is said in words with what to do
about it, and the repeats are only counted; ``WarningTally.summary()`` is the line a verb
ends with ("warnings: 5 slow database writes (LOG934; ...)").
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter

import click

from .text import human_bytes

__all__ = ["WarningTally", "describe", "install", "current"]

_CODE = re.compile(r"^(LOG\d{3})\b")
_FIELD = re.compile(r"(\w+)=(\S+)")
LOGGERS = ("framestore", "telemetry")


#: How a count of each kind reads in the summary line.
_COUNTED = {
    "LOG932 frames": "the frame writer fell behind {n} time{s}",
    "LOG932 db": "the database writer fell behind {n} time{s}",
    "LOG934 frames": "{n} slow frame write{s}",
    "LOG934 db": "{n} slow database write{s}",
}


def _num(fields: dict[str, str], key: str) -> float:
    try:
        return float(fields.get(key, "0"))
    except ValueError:
        return 0.0


def _frames_behind(f: dict[str, str]) -> str:
    depth, bound = _num(f, "queue_depth"), _num(f, "bound")
    qbytes, bbytes = _num(f, "queue_bytes"), _num(f, "bound_bytes")
    pct = 100 * max(depth / bound if bound else 0, qbytes / bbytes if bbytes else 0)
    size = f" of {human_bytes(bbytes)}" if bbytes else ""
    return (
        f"the frame writer fell behind: its queue reached {pct:.0f}%{size} "
        f"({depth:.0f} of {bound:.0f} frames); consider --preset throughput"
    )


def _db_behind(f: dict[str, str]) -> str:
    return (
        f"the database writer fell behind: {_num(f, 'queue_depth'):.0f} of "
        f"{_num(f, 'bound'):.0f} steps queued; consider --durability fast"
    )


def _frames_slow(f: dict[str, str]) -> str:
    return (
        f"writing frames to disk took {_num(f, 'ms'):.0f} ms (over "
        f"{_num(f, 'threshold_ms'):.0f} ms): the disk or the machine is busy"
    )


def _db_slow(f: dict[str, str]) -> str:
    return (
        f"saving {_num(f, 'steps'):.0f} steps to the database took {_num(f, 'ms'):.0f} ms "
        f"(over {_num(f, 'threshold_ms'):.0f} ms): the disk or the machine is busy; "
        "consider --durability fast"
    )


_WORDS = {
    "LOG932 frames": _frames_behind,
    "LOG932 db": _db_behind,
    "LOG934 frames": _frames_slow,
    "LOG934 db": _db_slow,
}


def describe(message: str) -> tuple[str, str] | None:
    """``(kind, words)`` for a coded log line this module knows, else ``None``. The kind
    is the code and its queue (``"LOG934 db"``)."""
    m = _CODE.match(message)
    if m is None:
        return None
    fields = dict(_FIELD.findall(message))
    key = f"{m.group(1)} {'frames' if fields.get('queue') == 'frames' else 'db'}"
    words = _WORDS.get(key)
    return None if words is None else (key, words(fields))


class WarningTally(logging.Handler):
    """A logging handler for the library loggers, one per CLI invocation.

    ERROR records are left out: they come from a background thread's failure, which is
    always raised to the caller too and printed once as ``framestore: error: ...``.
    With ``verbose`` every warning is printed as logged (LOG code and fields)."""

    def __init__(self, verbose: bool = False):
        super().__init__(logging.WARNING)
        self.verbose = verbose
        self.counts: Counter[str] = Counter()
        self.reported = False  # the verb printed ``summary()`` itself
        self._count_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            return
        try:
            message = record.getMessage()
            said = None if self.verbose else describe(message)
            if said is None:
                self._say(f"{record.levelname.lower()}: {message}")
                return
            key, words = said
            with self._count_lock:
                self.counts[key] += 1
                first = self.counts[key] == 1
            if first:
                self._say(f"warning: {words}")
        except Exception:  # logging must never break the command
            pass

    @staticmethod
    def _say(text: str) -> None:
        click.echo(f"framestore: {text}", err=True)

    def summary(self) -> str | None:
        """The warnings counted, when some were not printed (``"5 slow database writes
        (LOG934; `framestore -v` prints each)"``), else ``None``."""
        with self._count_lock:
            items = sorted(self.counts.items())
        if not items or all(n == 1 for _, n in items):
            return None
        parts = [_COUNTED[key].format(n=n, s="" if n == 1 else "s") for key, n in items]
        codes = ", ".join(sorted({k.split()[0] for k, _ in items}))
        return f"{', '.join(parts)} ({codes}; `framestore -v` prints each)"

    def take_summary(self) -> str | None:
        """``summary()`` for a verb that prints it in its own report (the group then
        does not print it again)."""
        self.reported = True
        return self.summary()


_current: WarningTally | None = None


def install(verbose: bool = False) -> WarningTally:
    """Route the library loggers' warnings through a fresh ``WarningTally`` (replacing the
    one of an earlier invocation in this process) and return it."""
    global _current
    tally = WarningTally(verbose)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if isinstance(h, WarningTally)]:
            logger.removeHandler(h)
        logger.addHandler(tally)
    _current = tally
    return tally


def current() -> WarningTally | None:
    """The tally of the running invocation (``None`` outside the CLI)."""
    return _current
