"""Telemetry: events, the async hub, the SQLite sink, schema access and encodings.

Frame pointers are opaque here; the ``framestore`` layer resolves them through the
sink's ``resolve_frames`` hook. See ``docs/ARCHITECTURE.md``.
"""

from ._batch import check_rewards, encode_actions
from ._fastactions import action_encoder
from .db import PROFILES, StorageProfile, open_db, open_scratch_db, schema_info
from .errors import (
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
from .events import (
    Barrier,
    EpisodeEnded,
    EpisodeStarted,
    Event,
    RunEnded,
    RunStarted,
    Step,
    StepBatch,
)
from .hub import TelemetryAsyncHub
from .sink import SinkMetrics, TelemetryDBSink
from .spaces import (
    check_reward,
    decode_action,
    decode_info,
    encode_action,
    encode_info,
    space_spec,
)

__all__ = [
    "PROFILES",
    "Barrier",
    "Closed",
    "EpisodeEnded",
    "EpisodeStarted",
    "Event",
    "FrameStoreError",
    "InfoTooLarge",
    "InvalidInput",
    "NotAStore",
    "QueueFull",
    "RunEnded",
    "RunStarted",
    "SchemaTooNew",
    "SinkError",
    "SinkMetrics",
    "StoreIOError",
    "Step",
    "StepBatch",
    "StorageProfile",
    "TelemetryAsyncHub",
    "TelemetryDBSink",
    "action_encoder",
    "check_reward",
    "check_rewards",
    "decode_action",
    "decode_info",
    "encode_action",
    "encode_actions",
    "encode_info",
    "open_db",
    "open_scratch_db",
    "schema_info",
    "space_spec",
]
