"""One writer per store: an advisory OS lock on ``<store>/LOCK``."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from .._format import LOCK_NAME
from ..errors import StoreLocked, UnsafeStore

# Never through a link (O_CREAT alone would create or truncate the link's target), never
# blocking on a FIFO planted under the name.
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _open_lock_file(path: Path) -> int:
    """The lock file's descriptor; ``UnsafeStore`` for a link, a non-regular file or a
    file with other hard links (writing the pid into it would change a file elsewhere)."""
    try:
        fd = os.open(path, _LOCK_FLAGS, 0o644)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise UnsafeStore(str(path), "the lock file is a symbolic link") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "is not a regular file" if not stat.S_ISREG(st.st_mode) else "has other hard links"
        raise UnsafeStore(str(path), f"the lock file {what}")
    return fd


class StoreLock:
    """An exclusive, non-blocking ``flock`` held for the writer's lifetime.

    The kernel drops it when the process dies, so a crashed writer never leaves a store
    locked. Readers never take it.
    """

    def __init__(self, root: str | os.PathLike):
        self.path = Path(root) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        fd = _open_lock_file(self.path)
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


def writer_running(root: str | os.PathLike) -> bool | None:
    """Whether some process holds the store's writer lock, found without taking it
    (Linux ``/proc/locks``). None when it cannot be told."""
    try:
        st = os.lstat(Path(root) / LOCK_NAME)
    except FileNotFoundError:
        return False
    try:
        with open("/proc/locks") as fp:
            text = fp.read()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        parts = line.split()
        if "FLOCK" in parts and "->" not in parts:
            dev = next((p for p in parts if p.count(":") == 2), None)
            if dev == want or (dev is not None and dev.rsplit(":", 1)[1] == str(st.st_ino)):
                return True
    return False
