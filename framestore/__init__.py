"""framestore: record Gymnasium sessions without stalling the screen.

Frames go to compressed append-only segment files; step metadata and frame pointers go
to SQLite. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from telemetry.lazy import lazy_exports

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
    StreamNotFound,
    WriterFailed,
)

if TYPE_CHECKING:
    from .lite import LiteRecorder
    from .reader import SegmentReader
    from .recorder import Recorder, RecorderMetrics, prepare_recording
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
        StreamInfo,
    )
    from .vector import RecordVectorFrames
    from .wrappers import RecordFrames

#: Public names imported on first use (PEP 562): importing the package stays cheap (the
#: CLI's ``--help`` needs no numpy, gymnasium or sqlite-utils).
_LAZY = {
    "LiteRecorder": ".lite",
    "SegmentReader": ".reader",
    "Recorder": ".recorder",
    "RecorderMetrics": ".recorder",
    "prepare_recording": ".recorder",
    "FrameRef": ".service",
    "FrameStorageService": ".service",
    "ServiceMetrics": ".service",
    "FrameStore": ".store",
    "DiskUsage": ".types",
    "EpisodeInfo": ".types",
    "FrameLocation": ".types",
    "FrameSummary": ".types",
    "RunInfo": ".types",
    "StepInfo": ".types",
    "StepTrack": ".types",
    "StreamInfo": ".types",
    "RecordVectorFrames": ".vector",
    "RecordFrames": ".wrappers",
}

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
    "StreamInfo",
    "RecorderMetrics",
    "prepare_recording",
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
    "StreamNotFound",
    "StoreLocked",
    "WriterFailed",
    "DiskFull",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
