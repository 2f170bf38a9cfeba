"""The project-wide error root and the telemetry layer's errors.

``FrameStoreError`` lives here, in the lowest layer that raises, so that every error the
project raises (telemetry, frame store, tools) shares one root. ``framestore.errors``
re-exports it; users import it from ``framestore``.
"""

from __future__ import annotations


class FrameStoreError(Exception):
    """Root of every error raised by framestore, telemetry and tools."""


class SchemaTooNew(FrameStoreError):
    """The store's database was written by a newer framestore."""

    def __init__(self, path: str, unknown: list[str]):
        self.path = path
        self.unknown = list(unknown)
        super().__init__(
            f"{path}: database schema is newer than this framestore "
            f"(unknown migrations: {', '.join(self.unknown)}); upgrade framestore to open it"
        )


class NotAStore(FrameStoreError, FileNotFoundError):
    """A path that is not a framestore store (or does not exist)."""

    def __init__(self, path: str, reason: str = "not a framestore store"):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class StoreIOError(FrameStoreError, OSError):
    """The store's files could not be read or written (no space left, an I/O error):
    the store itself may be fine."""

    def __init__(self, path: str, detail: str):
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {detail}")


class InvalidInput(FrameStoreError, ValueError):
    """Bad input rejected before anything was queued or written."""


class InfoTooLarge(InvalidInput):
    """A step's ``info`` does not fit in the documented limit once encoded."""

    def __init__(self, size: int, limit: int):
        self.size = size
        self.limit = limit
        super().__init__(
            f"step info is {size} bytes as JSON, over the {limit}-byte limit; "
            "record large data as frames or in your own files"
        )


class SinkError(FrameStoreError):
    """The SQLite sink thread failed; recording cannot continue."""


class QueueFull(FrameStoreError, TimeoutError):
    """A bounded queue stayed full for longer than the block timeout."""

    def __init__(self, what: str, timeout: float, detail: str = "", *, message: str = ""):
        self.what = what
        self.timeout = timeout
        extra = f" ({detail})" if detail else ""
        super().__init__(
            message
            or f"{what} stayed full for {timeout:g}s{extra}; the writer cannot keep up "
            "(use a larger preset, the 'drop' policy, or a faster disk)"
        )


class Closed(FrameStoreError, RuntimeError):
    """An operation on a writer, sink or hub that has already been closed."""

    def __init__(self, what: str):
        self.what = what
        super().__init__(f"{what} is closed")
