"""Small file-system helpers every layer above shares: durable renames and writes."""

from __future__ import annotations

import os
from pathlib import Path

from ._format import PARTIAL_SUFFIX

__all__ = ["atomic_write_bytes", "fsync_dir", "fsync_file"]


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
