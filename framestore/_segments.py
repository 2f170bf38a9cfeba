"""Segment files on disk: naming, the append-only writer, and listing.

Only this module and the store objects know about directories.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from ._format import FILE_HEADER_SIZE, RecordType, Seal, pack_file_header, pack_record
from .errors import DiskFull, WriterFailed
from .files import fsync_dir as fsync_dir  # re-exported for tools.gc / tools.recover

SEGMENT_DIR = "segments"
_NAME = re.compile(r"^seg-(\d{6,})\.fseg$")
PARTIAL_SUFFIX = ".partial"


def segment_name(segment_id: int) -> str:
    return f"seg-{segment_id:06d}.fseg"


def segment_path(root: str | os.PathLike, segment_id: int) -> Path:
    """The one place a segment id becomes a path. Paths stored in SQLite are never
    followed, so a hostile database cannot point a reader outside the store."""
    if not isinstance(segment_id, int) or segment_id < 0:
        raise ValueError(f"invalid segment id {segment_id!r}")
    return Path(root) / SEGMENT_DIR / segment_name(segment_id)


def relative_segment_path(segment_id: int) -> str:
    return f"{SEGMENT_DIR}/{segment_name(segment_id)}"


def parse_segment_name(name: str) -> int | None:
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


def list_segment_ids(root: str | os.PathLike) -> list[int]:
    """Ids of the complete segment files in the store (not .partial leftovers)."""
    d = Path(root) / SEGMENT_DIR
    if not d.is_dir():
        return []
    ids = (parse_segment_name(p.name) for p in d.iterdir())
    return sorted(i for i in ids if i is not None)


def list_partials(root: str | os.PathLike) -> list[Path]:
    d = Path(root) / SEGMENT_DIR
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.name.endswith(PARTIAL_SUFFIX))


def _write_error(path: Path, exc: OSError) -> WriterFailed:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        err: WriterFailed = DiskFull(str(path), exc.strerror or "")
    else:
        err = WriterFailed(f"{path}: write failed: {exc}")
    err.__cause__ = exc
    return err


class SegmentWriter:
    """Appends records to one new segment file. Never reopens an existing file.

    If a write fails, the file is cut back to the end of the last complete record, so
    the segment stays readable up to there (a partial record would otherwise only be
    detected as a torn tail).
    """

    def __init__(self, path: str | os.PathLike, segment_id: int, *, final_path: Path | None = None):
        self.path = Path(path)
        self.segment_id = segment_id
        self.final_path = final_path  # set when writing a .partial to be renamed later
        self.chunks = 0
        self.frames = 0
        self.sealed = False
        self._fp = open(self.path, "xb", buffering=0)  # noqa: SIM115 - closed in close()
        self.size = 0
        try:
            self._write(pack_file_header(segment_id))
        except BaseException:
            self._fp.close()
            self.path.unlink(missing_ok=True)
            raise

    def _write(self, data: bytes) -> int:
        offset = self.size
        view = memoryview(data)
        try:
            while view:
                n = self._fp.write(view)
                if n is None or n == 0:
                    raise OSError(errno.EIO, "short write")
                view = view[n:]
        except OSError as e:
            try:
                self._fp.truncate(offset)
            except OSError:
                pass
            raise _write_error(self.path, e) from e
        self.size = offset + len(data)
        return offset

    def append(self, record: bytes, *, frames: int = 0) -> int:
        """Append one packed record; returns its offset."""
        offset = self._write(record)
        if frames:
            self.chunks += 1
            self.frames += frames
        return offset

    def fsync(self) -> None:
        try:
            os.fsync(self._fp.fileno())
            linked = os.fstat(self._fp.fileno()).st_nlink > 0
        except OSError as e:
            raise _write_error(self.path, e) from e
        if not linked:
            # Deleted (or its directory removed) while open: writes still succeed into an
            # unlinked file that vanishes on close. Fail instead of losing frames silently.
            raise WriterFailed(f"{self.path}: segment file was deleted while being written")

    def seal(self) -> None:
        """Append the SEAL record and fsync: from now on the file never changes."""
        if self.sealed:
            return
        self.append(
            pack_record(RecordType.SEAL, Seal.now(self.chunks, self.frames, self.size).pack())
        )
        self.fsync()
        self.sealed = True

    @property
    def empty(self) -> bool:
        return self.size <= FILE_HEADER_SIZE

    def close(self) -> None:
        if not self._fp.closed:
            self._fp.close()

    def discard(self) -> None:
        """Close and delete (used for an empty segment or a failed compaction output)."""
        self.close()
        self.path.unlink(missing_ok=True)
