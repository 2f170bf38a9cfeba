"""Segment files on disk: naming, listing, the append-only writer and sealing.

The segment primitives that the frame writer, ``gc``, ``recover``, ``verify`` and
``merge`` share. Only the store objects and this module turn segment ids into paths;
paths stored in SQLite are never followed. ``VERSION`` is the segment format version
this framestore writes (named once, in ``_format``).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from .._format import (
    FILE_HEADER_SIZE,
    FOREIGN_SEGMENT,
    MAX_RECORD_BYTES,
    NOTE_RECORDS,
    PARTIAL_SUFFIX,
    RECORD_HEADER,
    SEAL_MIN_RECORD_SIZE,
    SEAL_RECORD_SIZE,
    SEGMENT_DIR,
    SEGMENT_OVERHEAD,
    VERSION,
    ChunkHeader,
    RecordType,
    Seal,
    find_seal,
    pack_file_header,
    pack_record,
    parse_segment_name,
    read_file_header,
    read_raw_record,
    reframe_chunk,
    segment_name,
    store_tag,
)
from .._format.tags import store_id_with_tag
from ..errors import (
    CorruptData,
    CorruptRecord,
    DiskFull,
    SegmentMissing,
    UnsafeStore,
    WriterFailed,
)
from ..files import fsync_dir

__all__ = [
    "FILE_HEADER_SIZE",
    "FOREIGN_SEGMENT",
    "SEAL_RECORD_SIZE",
    "SEGMENT_OVERHEAD",
    "VERSION",
    "SegmentFiles",
    "SegmentWriter",
    "checked_segment_dir",
    "cut_segment",
    "is_note_segment",
    "is_sealed",
    "list_partials",
    "list_segment_ids",
    "next_segment_id",
    "open_segment",
    "open_segment_fd",
    "partial_path",
    "read_chunk_record",
    "same_chunk_data",
    "relative_segment_path",
    "remove_partials",
    "remove_segment_file",
    "seal_segment",
    "segment_dir",
    "segment_files",
    "segment_path",
    "segment_seal",
    "segment_version",
    "store_id_with_tag",
    "store_tag",
    "write_note_segment",
]


def segment_dir(root: str | os.PathLike) -> Path:
    """The directory holding a store's segment files."""
    return Path(root) / SEGMENT_DIR


def segment_path(root: str | os.PathLike, segment_id: int) -> Path:
    """The one place a segment id becomes a path. Paths stored in SQLite are never
    followed, so a hostile database cannot point a reader outside the store."""
    if not isinstance(segment_id, int) or isinstance(segment_id, bool) or segment_id < 0:
        raise ValueError(f"invalid segment id {segment_id!r}")
    return segment_dir(root) / segment_name(segment_id)


def relative_segment_path(segment_id: int) -> str:
    """A segment's path relative to the store directory (as the catalogue records it)."""
    return f"{SEGMENT_DIR}/{segment_name(segment_id)}"


# Segment files are opened without following a link (a link planted under a segment's
# name must not lead a reader or a writer out of the store) and without blocking (a FIFO
# under a segment's name would otherwise hang every command that opens it).
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def checked_segment_dir(root: str | os.PathLike, *, create: bool = False) -> Path:
    """The segment directory, checked to be a real directory of the store (``lstat``:
    not a symlink, not a file) before anything in it is created, changed or deleted.

    With ``create`` a missing directory is made. Raises ``UnsafeStore`` otherwise."""
    d = segment_dir(root)
    if create:
        try:
            os.mkdir(d)
        except FileExistsError:
            pass
    _check_real_dir(d)
    return d


def _check_real_dir(d: Path) -> None:
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        return  # nothing in it to change; creating files in it fails on its own
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeStore(str(d), "the segment directory is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStore(str(d), "the segment directory is not a directory")


def open_segment_fd(path: str | os.PathLike, segment: int | str, *, write: bool = False) -> int:
    """A descriptor of a segment file, opened without following a link and without
    blocking; anything but a regular file is refused (``CorruptRecord``), and so is, for
    writing, a file with other hard links (changing it would change a file elsewhere).

    Raises ``SegmentMissing`` (a ``FileNotFoundError``) when there is no such file."""
    _check_real_dir(Path(path).parent)  # O_NOFOLLOW covers the last component only
    try:
        fd = os.open(path, (os.O_RDWR if write else os.O_RDONLY) | _OPEN_FLAGS)
    except FileNotFoundError:
        raise SegmentMissing(segment, str(path)) from None
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise CorruptRecord(segment, 0, "segment file is a symlink; not followed") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptRecord(segment, 0, "segment file is not a regular file; not opened")
        if write and st.st_nlink != 1:
            raise CorruptRecord(
                segment, 0, f"segment file has {st.st_nlink} hard links; not changed"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_segment(path: str | os.PathLike, segment: int | str, *, write: bool = False) -> BinaryIO:
    """``open_segment_fd`` as a binary file object (unbuffered for writing)."""
    fd = open_segment_fd(path, segment, write=write)
    if write:
        return os.fdopen(fd, "r+b", buffering=0)
    return os.fdopen(fd, "rb")


def remove_segment_file(root: str | os.PathLike, segment_id: int) -> None:
    """Delete one segment file (a link under its name is removed, never followed) and
    make the removal durable. Call with the writer lock held."""
    d = checked_segment_dir(root)
    segment_path(root, segment_id).unlink(missing_ok=True)
    fsync_dir(d)


def cut_segment(path: str | os.PathLike, end: int, segment: int | str) -> None:
    """Drop the bytes of a segment file from ``end`` on (unreadable garbage after its
    seal), fsynced. Only ``recover`` changes an existing segment, and only like this or
    through ``seal_segment``."""
    with open_segment(path, segment, write=True) as fp:
        fp.truncate(end)
        os.fsync(fp.fileno())


def partial_path(final: Path) -> Path:
    """Where a new segment is written before it is renamed to ``final``."""
    return final.with_name(final.name + PARTIAL_SUFFIX)


def list_segment_ids(root: str | os.PathLike) -> list[int]:
    """Ids of the complete segment files in the store (not .partial leftovers); none when
    the segment directory is a link (nothing in it is the store's)."""
    d = segment_dir(root)
    if d.is_symlink() or not d.is_dir():
        return []
    ids = (parse_segment_name(p.name) for p in d.iterdir())
    return sorted(i for i in ids if i is not None)


@dataclass(frozen=True)
class SegmentFiles:
    """What the segment directory holds, looked at without following links."""

    directory_is_link: bool  # segments/ is a symlink: nothing in it is used
    regular: dict[int, Path]  # segment id -> a regular file under its canonical name
    irregular: dict[int, Path]  # canonical names that are links, FIFOs, directories...


def segment_files(root: str | os.PathLike) -> SegmentFiles:
    """The segment files of a store, links and other non-regular files kept apart."""
    d = segment_dir(root)
    if d.is_symlink():
        return SegmentFiles(True, {}, {})
    regular: dict[int, Path] = {}
    irregular: dict[int, Path] = {}
    if d.is_dir():
        for p in sorted(d.iterdir()):
            sid = parse_segment_name(p.name)
            if sid is None:
                continue
            if stat.S_ISREG(os.lstat(p).st_mode):
                regular[sid] = p
            else:
                irregular[sid] = p
    return SegmentFiles(False, regular, irregular)


def list_partials(root: str | os.PathLike) -> list[Path]:
    """``.partial`` files in the segment directory (left by an interrupted compaction)."""
    d = segment_dir(root)
    if d.is_symlink() or not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.name.endswith(PARTIAL_SUFFIX))


def next_segment_id(root: str | os.PathLike) -> int:
    """One above every segment id in use, ``.partial`` files included."""
    ids = list_segment_ids(root)
    for p in list_partials(root):
        sid = parse_segment_name(p.name.removesuffix(PARTIAL_SUFFIX))
        if sid is not None:
            ids.append(sid)
    return max(ids, default=0) + 1


def remove_partials(root: str | os.PathLike) -> list[str]:
    """Delete ``.partial`` files (only compaction writes them; call with the writer lock
    held). Returns their names."""
    removed = []
    checked_segment_dir(root)
    for p in list_partials(root):
        p.unlink(missing_ok=True)
        removed.append(p.name)
    if removed:
        fsync_dir(segment_dir(root))
    return removed


def is_sealed(path: str | os.PathLike) -> bool:
    """True when the file ends with a well-formed SEAL record (a cheap tail check)."""
    try:
        with open_segment(path, "?") as fp:
            size = os.fstat(fp.fileno()).st_size
            if size < FILE_HEADER_SIZE + SEAL_MIN_RECORD_SIZE:
                return False
            return find_seal(fp, size) is not None
    except (FileNotFoundError, CorruptData, UnsafeStore):
        return False


def is_note_segment(path: str | os.PathLike, segment: int | str = "?") -> bool:
    """True when the file's first record is a note (``DELETED``/``MERGED``: a note
    segment holds nothing else; docs/FORMAT.md, "Note segments"). Reads two headers."""
    try:
        with open_segment(path, segment) as fp:
            read_file_header(fp, segment)
            head = fp.read(RECORD_HEADER.size)
    except (FileNotFoundError, CorruptData, UnsafeStore):
        return False
    return len(head) == RECORD_HEADER.size and RECORD_HEADER.unpack(head)[0] in NOTE_RECORDS


def segment_version(fp: IO[bytes], segment: int | str = "?") -> int:
    """The format version in a segment file's header (checked)."""
    return read_file_header(fp, segment).version


def read_chunk_record(
    fp: IO[bytes],
    segment: int,
    offset: int,
    *,
    version: int,
    max_length: int = MAX_RECORD_BYTES,
) -> tuple[bytes, ChunkHeader]:
    """The CHUNK record at ``offset`` of a segment of format ``version``, CRC checked,
    framed for a segment of the current version: byte for byte when the versions agree,
    else the same frame table and codec data under the current head (compaction and
    merge copy records with this). Returns the record and its parsed header."""
    raw, rec = read_raw_record(fp, offset, segment=segment, max_length=max_length)
    if rec.type != RecordType.CHUNK:
        raise CorruptRecord(segment, offset, "frame pointer does not point at a chunk record")
    header = ChunkHeader.unpack(rec.payload, version=version, segment=segment, offset=offset)
    if version != VERSION:
        raw = pack_record(RecordType.CHUNK, reframe_chunk(rec.payload, header))
    return raw, header


def same_chunk_data(
    root: str | os.PathLike, first: tuple[int, int], second: tuple[int, int]
) -> bool:
    """Whether the CHUNK records at ``(segment, offset)`` ``first`` and ``second`` hold the
    same frames: same frame table and byte-identical codec data (a compaction's copy of a
    chunk is; two recordings' chunks are not). Both CRC-checked; False if either fails."""
    parts = []
    try:
        for sid, off in (first, second):
            with open_segment(segment_path(root, sid), sid) as fp:
                version = segment_version(fp, sid)
                _raw, header = read_chunk_record(fp, sid, off, version=version)
                rec = read_raw_record(fp, off, segment=sid)[1]
            data = rec.payload[header.data_offset :]
            parts.append((header.frame_keys, header.lengths, header.shape, header.codec, data))
    except (OSError, CorruptData):
        return False
    return parts[0] == parts[1]


def segment_seal(path: str | os.PathLike) -> Seal | None:
    """The SEAL record that ends a segment file, or None (not sealed, unreadable)."""
    try:
        with open_segment(path, "?") as fp:
            size = os.fstat(fp.fileno()).st_size
            if size < FILE_HEADER_SIZE + SEAL_MIN_RECORD_SIZE:
                return None
            return find_seal(fp, size)
    except (FileNotFoundError, CorruptData, UnsafeStore):
        return None


def seal_segment(
    path: str | os.PathLike,
    good_end: int,
    chunks: int,
    frames: int,
    segment: int | str = "?",
    meta_bytes: int = 0,
) -> Seal:
    """Cut an existing segment file at ``good_end`` and append a SEAL record, fsynced.

    ``SegmentWriter`` only creates new files; this is the one place an existing segment
    is changed, and only to drop bytes that cannot be read and to seal it.
    """
    seal = Seal.now(chunks, frames, good_end, meta_bytes)
    with open_segment(path, segment, write=True) as fp:
        fp.truncate(good_end)
        fp.seek(good_end)
        fp.write(seal.record())
        os.fsync(fp.fileno())
    return seal


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

    def __init__(
        self,
        path: str | os.PathLike,
        segment_id: int,
        *,
        final_path: Path | None = None,
        store_tag: int = 0,
    ):
        self.path = Path(path)
        self.segment_id = segment_id
        self.final_path = final_path  # set when writing a .partial to be renamed later
        self.chunks = 0
        self.frames = 0
        self.meta_bytes = 0  # records without frames (they describe episodes): the seal's
        self.sealed = False
        # A new file only (O_EXCL), never through a link, in a real segment directory.
        _check_real_dir(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o644)
        self._fp = os.fdopen(fd, "wb", buffering=0)
        self.size = 0
        try:
            self._write(pack_file_header(segment_id, store_tag=store_tag))
        except BaseException:
            self._fp.close()
            self.path.unlink(missing_ok=True)
            raise

    @classmethod
    def partial(cls, root: str | os.PathLike, segment_id: int, store_tag: int = 0) -> SegmentWriter:
        """A writer of ``seg-N.fseg.partial``, to be renamed with ``publish``."""
        final = segment_path(root, segment_id)
        return cls(partial_path(final), segment_id, final_path=final, store_tag=store_tag)

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
        """Append one packed record; returns its offset (``frames``: a CHUNK record
        holding that many frames, counted in the seal)."""
        offset = self._write(record)
        if frames:
            self.chunks += 1
            self.frames += frames
        else:
            self.meta_bytes += len(record)
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
        seal = Seal.now(self.chunks, self.frames, self.size, self.meta_bytes)
        self._write(seal.record())
        self.fsync()
        self.sealed = True

    def publish(self) -> Path:
        """Rename a sealed ``.partial`` file to its final name (the directory is not
        fsynced here: callers rename several, then fsync once)."""
        if self.final_path is None:
            raise ValueError("publish() is for writers made with SegmentWriter.partial")
        _check_real_dir(self.final_path.parent)
        os.replace(self.path, self.final_path)
        self.path = self.final_path
        return self.final_path

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


def write_note_segment(
    root: str | os.PathLike, segment_id: int, records: list[bytes], store_tag: int
) -> int:
    """A new sealed segment holding only ``records`` (``DELETED``/``MERGED`` notes:
    docs/FORMAT.md, "Note segments"), written as ``.partial``, fsynced, renamed and the
    directory fsynced (call with the writer lock held). Returns its size in bytes."""
    seg = SegmentWriter.partial(root, segment_id, store_tag=store_tag)
    try:
        for record in records:
            seg.append(record)
        seg.seal()
        seg.close()
        seg.publish()
    except BaseException:
        seg.discard()
        raise
    fsync_dir(segment_dir(root))
    return seg.size
