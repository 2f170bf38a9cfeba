"""framestore: record Gymnasium sessions without stalling the screen.

Frames go to compressed append-only segment files; step metadata and frame pointers go
to SQLite. See docs/ARCHITECTURE.md.
"""

from .errors import (
    ChecksumMismatch,
    CorruptData,
    DiskFull,
    EpisodeNotFound,
    FrameNotFound,
    FrameStoreError,
    InvalidFrame,
    InvalidInput,
    StoreLocked,
    WriterFailed,
)
from .reader import SegmentReader
from .service import FrameRef, FrameStorageService

__all__ = [
    "FrameStorageService",
    "FrameRef",
    "SegmentReader",
    "FrameStoreError",
    "InvalidInput",
    "InvalidFrame",
    "CorruptData",
    "ChecksumMismatch",
    "FrameNotFound",
    "EpisodeNotFound",
    "StoreLocked",
    "WriterFailed",
    "DiskFull",
]
