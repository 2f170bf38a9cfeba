"""One writer per store: an advisory OS lock on ``<store>/LOCK``."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import StoreLocked

LOCK_NAME = "LOCK"


class StoreLock:
    """An exclusive, non-blocking ``flock`` held for the writer's lifetime.

    The kernel drops it when the process dies, so a crashed writer never leaves a store
    locked. Readers never take it.
    """

    def __init__(self, root: str | os.PathLike):
        self.path = Path(root) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                holder = os.read(fd, 64).decode(errors="replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            raise StoreLocked(str(self.path.parent), f"pid {holder}" if holder else "") from None
        # Plain lseek/write, not pwrite: pyfakefs (used by the disk-full tests) has no
        # pwrite and would pass a fake descriptor to the real call.
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
