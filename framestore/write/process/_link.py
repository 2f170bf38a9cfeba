"""``StorageLink``: a started storage process and what connects the producer to it.

It owns the process (``_launch``), the ``Control`` counters, the command pipe's
write end and the reply pipe. A listener thread waits (off the GIL) for the rare
replies and for the process's death; an error or a death is noted at once, passed to
``on_error`` (from that thread) and raised by ``raise_if_failed`` at the producer's next
call, as the thread placement would raise it (``WriterFailed``, ``DiskFull``,
``SinkError``). Log records of the storage process are re-emitted through this process's
loggers of the same names.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from telemetry.errors import SinkError

from ...errors import QueueFull, StoreClosed, WriterFailed, writer_error
from ...settings import Settings
from ._launch import fd_connection, launch
from ._ring import Control, remove_dead_blocks
from ._wire import LOGGERS, decode_error

__all__ = ["START_TIMEOUT", "StorageLink"]

log = logging.getLogger("framestore")

#: Seconds a storage process may take to start (spawn imports numpy, zstd, SQLite).
START_TIMEOUT = 120.0
_PIPE_BYTES = 1 << 20


class StorageLink:
    """Starts the storage process for ``root`` and keeps the line to it open.

    Raises what the storage process raised while starting (``StoreLocked``,
    ``NotAStore``, ...) or ``WriterFailed`` if it could not start.
    """

    def __init__(
        self,
        root: Path,
        db_path: Path,
        s: Settings,
        on_error: Callable,
        store_id: str | None = None,
        first_segment_id: int = 0,
    ):
        self._on_error = on_error
        self.error: BaseException | None = None  # the first background error, or death
        self.source = ""  # where it came from: writer, sink, storage or death
        self.closing = False
        self.final_counts: list[int] | None = None  # the counters as close() left them
        self.closed = False
        self._cond = threading.Condition()
        self._results: dict[Any, tuple] = {}
        self._token = 0
        # blocks of recorders whose whole process group was killed (their resource
        # tracker with them): nobody else will ever remove them
        remove_dead_blocks()
        self.control = Control.create()
        try:
            self._start(root, db_path, s, (store_id, first_segment_id))
        except BaseException:
            self.control.close()
            self.control.unlink()
            raise
        self._listener = threading.Thread(
            target=self._listen, name="framestore-storage-listener", daemon=True
        )
        self._listener.start()
        _live.add(self)

    def _start(self, root: Path, db_path: Path, s: Settings, ids: tuple[str | None, int]) -> None:
        cmd_r, self.fd = os.pipe()
        reply_r, reply_w = os.pipe()
        self._replies = fd_connection(reply_r, readable=True)
        #: Bytes that may sit unread in the command pipe: half its capacity, so a write
        #: never blocks.
        self.pipe_room = _pipe_capacity(self.fd) // 2
        args = {
            "storage_args": (root, db_path, s, *ids),
            "control_name": self.control.name,
            "parent_pid": os.getpid(),
            "log_levels": {n: logging.getLogger(n).getEffectiveLevel() for n in LOGGERS},
        }
        try:
            self._child = launch(s.writer_start, args, cmd_r, reply_w, (self.fd, reply_r))
        except BaseException:
            os.close(self.fd)
            self._replies.close()
            raise
        finally:
            os.close(cmd_r)
            os.close(reply_w)
        child = self._child
        ready = wait([self._replies, child.sentinel], START_TIMEOUT)
        msg = None
        if self._replies in ready:
            try:
                msg = self._replies.recv()
            except (EOFError, OSError):
                msg = None
        if msg is not None and msg[0] == "ready":
            self.pid: int = msg[1]
            return
        if not ready:
            child.kill()
        child.join()
        os.close(self.fd)
        self._replies.close()
        if msg is not None:
            raise decode_error(msg[1])
        raise WriterFailed(f"the storage process did not start (exit code {child.exitcode})")

    # ----------------------------------------------------------------- errors
    @property
    def died(self) -> bool:
        return self.source == "death"

    def raise_if_failed(self) -> None:
        """Raise the storage process's error (or ``StoreClosed`` once closed)."""
        err = self.error
        if err is None:
            if self.closed:
                raise StoreClosed("recorder storage is closed")
            return
        source = self.source
        if source == "sink":
            raise SinkError(f"telemetry sink failed: {err!r}") from err
        if source == "writer":
            raise writer_error(err) from err
        if source == "death":
            raise WriterFailed(str(err)) from err
        raise WriterFailed(f"the storage process failed: {err}") from err

    def _fail(self, err: BaseException, source: str) -> None:
        """Note a background error (listener thread) and pass it to ``on_error``."""
        with self._cond:
            first = self.error is None
            if first:
                self.error = err
                self.source = source
            self._cond.notify_all()
        if first:
            log.error("storage process: %s", err)
            try:
                self._on_error(err)
            except Exception:  # a broken callback must not hide the real error
                log.exception("on_error callback raised")

    def _listen(self) -> None:
        """The listener thread: replies, background errors, logs and the death."""
        conns: list[Any] = [self._replies, self._child.sentinel]
        while True:
            ready = wait(conns)
            if self._replies in ready:
                try:
                    msg = self._replies.recv()
                except (EOFError, OSError):
                    conns = [self._child.sentinel]
                    continue
                except Exception as e:  # noqa: BLE001 - an unreadable reply: a failure
                    self._fail(
                        WriterFailed(f"unreadable reply from the storage process: {e}"), "death"
                    )
                    conns = [self._child.sentinel]
                    continue
                if msg[0] == "log":
                    _emit(msg[1])
                elif msg[0] == "error":
                    self._fail(decode_error(msg[2]), msg[1])
                else:
                    with self._cond:
                        tokened = msg[0] in ("flushed", "noted")
                        self._results[msg[1] if tokened else msg[0]] = msg
                        self._cond.notify_all()
                    if msg[0] == "closed":
                        if not self.closing:  # it stopped without being asked to
                            self._fail(
                                WriterFailed("the storage process stopped unexpectedly"), "death"
                            )
                        return
                continue
            self._child.join()
            code = self._child.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
            self._fail(WriterFailed(f"the storage process {self._child.pid} died ({how})"), "death")
            with self._cond:
                self._results["closed"] = ("closed", None)
                self._cond.notify_all()
            return

    # ----------------------------------------------------------------- commands
    def token(self) -> int:
        """A new token (a flush's or a note's: its reply carries it)."""
        with self._cond:
            self._token += 1
            return self._token

    def reply(self, key: Any, timeout: float | None) -> tuple:
        """Wait for the reply ``key`` (a flush's or a note's token, or ``"closed"``); an
        error (other than for ``"closed"``) is raised at once, a death ends every wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while key not in self._results:
                if self.error is not None and key != "closed":
                    self.raise_if_failed()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise QueueFull("storage process", timeout or 0.0, "no reply in time")
                self._cond.wait(remaining)
            return self._results.pop(key)

    def write(self, data: bytes) -> None:
        """Write ``data`` to the command pipe (room was checked: this never blocks)."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as e:  # EPIPE: it died; the listener says how
            deadline = time.monotonic() + 5.0
            while not self.died and time.monotonic() < deadline:
                time.sleep(0.01)
            if self.died:
                raise WriterFailed(str(self.error)) from e
            raise WriterFailed(f"the storage process is gone: {e}") from e

    # ----------------------------------------------------------------- lifecycle
    def finish(self) -> tuple:
        """After ``CLOSE`` was sent (or the process died): wait for its ``closed`` reply
        or its death, reap it, stop the listener, free the counters. Returns the reply."""
        reply = self.reply("closed", None)
        self.closed = True
        self._child.join()
        self._listener.join()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._replies.close()
        # the storage process's last word on its counters: metrics read after close
        self.final_counts = self.control.values.tolist()
        self.control.close()
        self.control.unlink()
        return reply

    def hang_up(self) -> None:
        """Close the command pipe: the storage process commits what it has and exits."""
        self.closing = True
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def abandon(self) -> None:
        """At interpreter exit without ``close``: close the command pipe, so the storage
        process commits what it has and exits (``multiprocessing`` joins ``fork``
        children at exit, which would otherwise wait forever)."""
        if not self.closed and not self.closing and self.fd >= 0:
            self.closing = True
            os.close(self.fd)
            self.fd = -1


_live: weakref.WeakSet[StorageLink] = weakref.WeakSet()


@atexit.register
def _abandon_at_exit() -> None:
    # Registered after multiprocessing's own exit handler (imported above), so it runs
    # before that handler joins the fork children.
    for link in list(_live):
        link.abandon()


def _emit(record: dict[str, Any]) -> None:
    """A storage process's log record, handled by this process's logger of that name."""
    rec = logging.makeLogRecord(record)
    logger = logging.getLogger(rec.name)
    if logger.isEnabledFor(rec.levelno):
        logger.handle(rec)


def _pipe_capacity(fd: int) -> int:
    """Grow the pipe to 1 MiB where allowed; its capacity in bytes."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    except OSError:
        pass
    try:
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except OSError:
        return 65536
