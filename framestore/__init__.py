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
from .lite import LiteRecorder
from .reader import SegmentReader
from .recorder import Recorder, RecorderMetrics
from .service import FrameRef, FrameStorageService, ServiceMetrics
from .store import FrameStore
from .types import (
    DiskUsage,
    EpisodeInfo,
    FrameLocation,
    FrameSummary,
    RunInfo,
    StepInfo,
    StepTrack,
)
from .vector import RecordVectorFrames
from .wrappers import RecordFrames

__all__ = [
    "FrameStore",
    "Recorder",
    "RecordFrames",
    "RecordVectorFrames",
    "LiteRecorder",
    "EpisodeInfo",
    "RunInfo",
    "StepInfo",
    "FrameSummary",
    "FrameLocation",
    "DiskUsage",
    "StepTrack",
    "RecorderMetrics",
    "ServiceMetrics",
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
