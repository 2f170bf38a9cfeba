"""Starting the storage process: ``spawn`` (a fresh interpreter) or ``fork``.

``spawn`` runs ``python -c BOOTSTRAP`` with ``subprocess`` rather than
``multiprocessing``'s spawn: that one runs the user's main module again in the child
(scripts without an ``if __name__ == "__main__"`` guard would record twice, and heavy
imports of the main module would slow every start). The child gets the producer's
``sys.path`` first, then its arguments, as two pickles on stdin, and the two pipe ends
by descriptor (``pass_fds``); nothing else is inherited.

``fork`` uses ``multiprocessing``'s fork context: instant, but the child is a copy of a
process whose other threads may hold locks; use it from single-threaded producers.

Either way the producer gets a ``StorageChild``: its pid, a ``sentinel`` that becomes
readable when it exits (``multiprocessing.connection.wait``), ``join`` and ``kill``.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

from ...errors import InvalidInput

__all__ = ["BOOTSTRAP", "StorageChild", "launch"]

# The storage process never needs pandas, which sqlite_utils imports when it is installed
# (half a second or more of every start): a None entry makes that import fail fast.
BOOTSTRAP = (
    "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "sys.modules.setdefault('pandas', None); "
    "from framestore.write.process._main import main; main()"
)


class StorageChild:
    """A started storage process (``spawn``: a ``Popen``; ``fork``: a ``Process``)."""

    def __init__(self, popen: subprocess.Popen | None, process: Any | None):
        self._popen = popen
        self._process = process
        if popen is not None:
            self.pid = popen.pid
            self._pidfd: int | None = os.pidfd_open(popen.pid)
            self.sentinel = self._pidfd
        else:
            self.pid = process.pid
            self._pidfd = None
            self.sentinel = process.sentinel

    @property
    def exitcode(self) -> int | None:
        if self._popen is not None:
            return self._popen.poll()
        return self._process.exitcode

    def join(self, timeout: float | None = None) -> None:
        if self._popen is not None:
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        else:
            self._process.join(timeout)

    def kill(self) -> None:
        if self._popen is not None:
            if self._popen.poll() is None:
                self._popen.send_signal(signal.SIGKILL)
        else:
            self._process.kill()


def launch(
    start: str, target_args: dict[str, Any], commands: int, replies: int, parent: tuple[int, ...]
) -> StorageChild:
    """Start ``_main.serve`` with ``target_args`` and the pipe ends ``commands``
    (read) and ``replies`` (write). ``parent`` are the producer's own ends, which a fork
    child closes. The caller closes its copies of ``commands`` and ``replies``."""
    if start == "fork":
        if multiprocessing.current_process().daemon:
            raise InvalidInput(
                "writer_start='fork' cannot start from a daemonic multiprocessing process; "
                "use writer_start='spawn'"
            )
        from ._main import serve

        ctx = multiprocessing.get_context("fork")
        kwargs = dict(target_args, commands=commands, replies=replies, inherited=parent)
        kwargs["shared_tracker"] = True
        proc = ctx.Process(target=serve, kwargs=kwargs, name="framestore-storage")
        proc.start()
        return StorageChild(None, proc)
    popen = subprocess.Popen(
        [sys.executable, "-c", BOOTSTRAP],
        stdin=subprocess.PIPE,
        pass_fds=(commands, replies),
    )
    try:
        assert popen.stdin is not None
        pickle.dump(list(sys.path), popen.stdin)
        pickle.dump(dict(target_args, commands=commands, replies=replies), popen.stdin)
        popen.stdin.close()
    except BaseException:
        popen.kill()
        popen.wait()
        raise
    return StorageChild(popen, None)


def fd_connection(fd: int, *, readable: bool) -> Connection:
    """A ``multiprocessing`` Connection over a pipe end (takes ownership of ``fd``)."""
    return Connection(fd, readable=readable, writable=not readable)
