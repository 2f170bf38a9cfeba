"""Errors raised by the frame store. All share the root ``FrameStoreError``."""

from __future__ import annotations

from telemetry.errors import (
    Closed,
    FrameStoreError,
    InfoTooLarge,
    InvalidInput,
    NotAStore,
    QueueFull,
    SchemaTooNew,
    SinkError,
    StoreIOError,
)

__all__ = [
    "FrameStoreError",
    "InvalidInput",
    "StreamNotFound",
    "InfoTooLarge",
    "NotAStore",
    "QueueFull",
    "SchemaTooNew",
    "SinkError",
    "StoreIOError",
    "UnsafeStore",
    "CorruptCatalog",
    "InvalidFrame",
    "CorruptData",
    "ChecksumMismatch",
    "CorruptRecord",
    "RecordTooLarge",
    "TruncatedRecord",
    "FrameNotFound",
    "EpisodeNotFound",
    "RunNotFound",
    "SegmentMissing",
    "StoreLocked",
    "WriterFailed",
    "DiskFull",
    "SharedMemoryFull",
    "writer_error",
    "StoreClosed",
    "MissingExtra",
    "PublishedObjectError",
]


class InvalidFrame(InvalidInput, TypeError):
    """A frame that cannot be stored losslessly (dtype, ndim, shape, object array)."""


class CorruptData(FrameStoreError):
    """Stored data failed a check. Never returned as pixels."""

    def __init__(self, segment: int | str, offset: int, detail: str):
        self.segment = segment
        self.offset = offset
        self.detail = detail
        super().__init__(f"segment {segment} at offset {offset}: {detail}")


class UnsafeStore(FrameStoreError):
    """A store whose own files are links, FIFOs or other non-regular files where a
    regular file or directory belongs: refused rather than followed out of the store."""

    def __init__(self, path: str, detail: str):
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {detail}; refusing to use it (not followed)")


class ChecksumMismatch(CorruptData):
    """A record's CRC-32 does not match its bytes."""

    def __init__(self, segment: int | str, offset: int, expected: int, actual: int):
        self.expected = expected
        self.actual = actual
        super().__init__(
            segment, offset, f"checksum mismatch (stored {expected:#010x}, computed {actual:#010x})"
        )


class CorruptRecord(CorruptData):
    """A record or header whose structure is invalid (bad magic, type, sizes, codec data)."""


class CorruptCatalog(CorruptRecord):
    """A value in ``framestore.db`` that cannot be what its column means (a pointer
    stored as text, a shape that does not parse, config that is not a JSON object).
    Raised by the catalogue's readers before the value is used."""

    def __init__(self, table: str, row: str, column: str, detail: str):
        self.table = table
        self.row = row
        self.column = column
        self.segment = None
        self.offset = None
        self.detail = detail
        FrameStoreError.__init__(
            self, f"framestore.db: table {table}, {row}, column {column}: {detail}"
        )


class RecordTooLarge(CorruptRecord):
    """A record length above the reader's limit (never allocated)."""

    def __init__(self, segment: int | str, offset: int, length: int, limit: int):
        self.length = length
        self.limit = limit
        super().__init__(segment, offset, f"record length {length} exceeds the limit of {limit}")


class TruncatedRecord(CorruptRecord):
    """A record that runs past the end of the file (a torn tail)."""

    def __init__(self, segment: int | str, offset: int, needed: int, available: int):
        self.needed = needed
        self.available = available
        super().__init__(
            segment, offset, f"truncated record: needs {needed} bytes, {available} available"
        )


class FrameNotFound(FrameStoreError, KeyError):
    """No frame at that pointer or step."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the sentence readable
        return str(self.args[0]) if self.args else "frame not found"


class StreamNotFound(FrameStoreError, KeyError):
    """The episode records no stream of that name."""

    def __init__(self, episode_id: object, name: object, streams: tuple[str, ...] = ()):
        self.episode_id = episode_id
        self.name = name
        self.streams = streams
        have = f" (its streams: {', '.join(streams)})" if streams else ""
        super().__init__(f"episode {episode_id} has no stream {name!r}{have}")

    def __str__(self) -> str:
        return str(self.args[0])


class EpisodeNotFound(FrameStoreError, KeyError):
    """No (live) episode with that id."""

    def __init__(self, episode_id: object):
        self.episode_id = episode_id
        super().__init__(f"no episode {episode_id} in this store")

    def __str__(self) -> str:
        return str(self.args[0])


class RunNotFound(FrameStoreError, KeyError):
    """No run with that id."""

    def __init__(self, run_id: object):
        self.run_id = run_id
        super().__init__(f"no run {run_id} in this store")

    def __str__(self) -> str:
        return str(self.args[0])


class SegmentMissing(CorruptData, FileNotFoundError):
    """A segment file that the store refers to is not there."""

    def __init__(self, segment: int | str, path: str):
        self.path = path
        CorruptData.__init__(self, segment, 0, f"segment file missing: {path}")


class StoreLocked(FrameStoreError, BlockingIOError):
    """Another writer holds the store's lock."""

    def __init__(self, path: str, holder: str = ""):
        self.path = path
        who = f" (held by {holder})" if holder else ""
        super().__init__(f"{path}: store is locked by another writer{who}")


class WriterFailed(FrameStoreError):
    """The writer thread failed; what it had not written is lost, what it wrote stays."""


class DiskFull(WriterFailed, OSError):
    """No space left on the device holding the store."""

    def __init__(self, path: str, detail: str = ""):
        self.path = path
        super().__init__(f"{path}: no space left on device{': ' + detail if detail else ''}")


class SharedMemoryFull(WriterFailed):
    """The shared memory file system has no room for a block of ``size`` bytes."""

    def __init__(self, size: int, free: int, where: str = "/dev/shm"):
        self.size = size
        self.free = free
        self.where = where
        super().__init__(
            f"{where} has no room for {size} bytes of shared memory ({free} bytes free); "
            "the storage process keeps its queue there: make it larger (docker run "
            "--shm-size) or record with writer='thread'"
        )


class StoreClosed(Closed):
    """The service, reader or store was used after close()."""


class PlayFailed(FrameStoreError):
    """Playing an environment with a policy failed: the policy's own code raised
    (``where`` = "policy"), or the environment refused the action it chose or failed in
    its step (``where`` = "environment"). The error it raised is the cause; what was
    recorded before it stays in the store (the open episode ends interrupted)."""

    def __init__(self, where: str, name: str, error: BaseException):
        self.where = where
        self.name = name
        self.error = error
        what = f"policy {name!r}" if where == "policy" else f"the environment, on the {name}"
        text = " ".join(str(error).split()) or "(no message)"
        super().__init__(f"{what} failed: {type(error).__name__}: {text}")


class MissingExtra(InvalidInput, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, what: str, module: str, extra: str):
        self.module = module
        self.extra = extra
        super().__init__(f"{what} needs {module}: pip install 'framestore[{extra}]'")


class PublishedObjectError(CorruptData):
    """An object of a published store (``framestore publish``) that is missing, or
    whose size or SHA-256 does not match its manifest, or a manifest that is invalid."""

    def __init__(self, location: str, name: str, detail: str):
        self.location = location
        self.name = name
        self.segment = name
        self.offset = 0
        self.detail = detail
        FrameStoreError.__init__(self, f"{location}/{name}: {detail}")


def writer_error(err: BaseException) -> WriterFailed:
    """What the producer gets once the frame writer failed with ``err``."""
    if isinstance(err, DiskFull):  # keep the specific type: callers catch DiskFull
        return DiskFull(err.path, "the frame writer stopped")
    return WriterFailed(f"frame writer failed: {err}")
