"""Small file-system helpers every layer above shares: durable renames and writes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ._format import PARTIAL_SUFFIX

__all__ = ["atomic_write_bytes", "fsync_dir", "fsync_file", "why_not_writable"]


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new file in ``path`` durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data``: write ``name.partial``, fsync, ``os.replace``,
    fsync the directory. On error the partial file is removed and ``path`` is unchanged."""
    target = Path(path)
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    try:
        with open(partial, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a closed file's data to disk; errors (a full disk, EIO) are raised."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def why_not_writable(path: str | os.PathLike, exc: OSError) -> str:
    """Why ``path`` (a file or directory the user named) could not be created, in words
    about the user's path: ``"/dev/null is not a directory"`` rather than ``[Errno 20]``
    and the name of a temporary file."""
    target = Path(path)
    parent = next((p for p in target.parents if os.path.lexists(p)), None)
    if parent is not None and exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.ENOENT):
        if not parent.is_dir():
            return f"{parent} is not a directory"
        if parent != target.parent:
            return f"{target.parent} does not exist"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {target.parent}"
    if exc.errno == errno.EROFS:
        return f"{target.parent} is on a read-only file system"
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.ENOENT:
        return f"{target.parent} does not accept new files"
    return (exc.strerror or str(exc)).lower()
