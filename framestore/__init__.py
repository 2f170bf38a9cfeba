"""framestore: record Gymnasium sessions without stalling the screen.

Frames go to compressed append-only segment files; step metadata and frame pointers go
to SQLite. See docs/ARCHITECTURE.md.

``__all__`` is what a user needs: the store, the recorders and wrappers, the settings,
the records reading returns and every error a user catches. Maintenance (``gc``,
``recover``, ``merge``, ``publish``) and the writer's parts are functions and classes of
their modules (``framestore.state.bookkeeping``, ``framestore.write.service``, ``framestore.disk.reader``,
...), imported from there by the tools.
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
    InfoTooLarge,
    InvalidFrame,
    InvalidInput,
    MissingExtra,
    NotAStore,
    PlayFailed,
    PublishedObjectError,
    QueueFull,
    RunNotFound,
    SchemaTooNew,
    SegmentMissing,
    SharedMemoryFull,
    SinkError,
    StoreClosed,
    StoreIOError,
    StoreLocked,
    StreamNotFound,
    UnsafeStore,
    WriterFailed,
)

if TYPE_CHECKING:
    from .gym.vector import RecordVectorFrames
    from .gym.wrappers import RecordFrames
    from .settings import ResolvedSettings, Settings
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
    from .write.lite import LiteRecorder
    from .write.recorder import Recorder, RecorderMetrics, prepare_recording

#: Public names imported on first use (PEP 562): importing the package stays cheap (the
#: CLI's ``--help`` needs no numpy, gymnasium or sqlite-utils).
_LAZY = {
    "LiteRecorder": ".write.lite",
    "Recorder": ".write.recorder",
    "RecorderMetrics": ".write.recorder",
    "prepare_recording": ".write.recorder",
    "ResolvedSettings": ".settings",
    "Settings": ".settings",
    "FrameStore": ".store",
    "DiskUsage": ".types",
    "EpisodeInfo": ".types",
    "FrameLocation": ".types",
    "FrameSummary": ".types",
    "RunInfo": ".types",
    "StepInfo": ".types",
    "StepTrack": ".types",
    "StreamInfo": ".types",
    "RecordVectorFrames": ".gym.vector",
    "RecordFrames": ".gym.wrappers",
}

__all__ = [
    # the store, recording into it
    "FrameStore",
    "Recorder",
    "RecordFrames",
    "RecordVectorFrames",
    "LiteRecorder",
    "RecorderMetrics",
    # the settings of a recording
    "Settings",
    "ResolvedSettings",
    "prepare_recording",
    # what reading returns
    "RunInfo",
    "EpisodeInfo",
    "StepInfo",
    "StepTrack",
    "FrameSummary",
    "FrameLocation",
    "DiskUsage",
    "StreamInfo",
    # errors: all are FrameStoreError
    "FrameStoreError",
    "InvalidInput",
    "InvalidFrame",
    "InfoTooLarge",
    "MissingExtra",
    "NotAStore",
    "SchemaTooNew",
    "UnsafeStore",
    "StoreLocked",
    "StoreClosed",
    "StoreIOError",
    "CorruptData",
    "ChecksumMismatch",
    "SegmentMissing",
    "PublishedObjectError",
    "FrameNotFound",
    "EpisodeNotFound",
    "RunNotFound",
    "StreamNotFound",
    "QueueFull",
    "SinkError",
    "WriterFailed",
    "DiskFull",
    "SharedMemoryFull",
    "PlayFailed",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
