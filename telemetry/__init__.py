"""Telemetry: events, the async hub, the SQLite sink, schema access and encodings.

Frame pointers are opaque here; the ``framestore`` layer resolves them through the
sink's ``resolve_frames`` hook. See ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
from .lazy import lazy_exports

if TYPE_CHECKING:
    from ._batch import check_rewards, encode_actions
    from ._fastactions import action_encoder
    from .db import PROFILES, StorageProfile, open_db, open_scratch_db, schema_info
    from .events import (
        Barrier,
        EpisodeEnded,
        EpisodeStarted,
        Event,
        RunEnded,
        RunStarted,
        Step,
        StepBatch,
        StreamFrame,
        StreamFrames,
        StreamStarted,
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

#: Public names imported on first use (PEP 562): importing the package stays cheap (the
#: CLI's ``--help`` needs no numpy, gymnasium or sqlite-utils).
_LAZY = {
    "check_rewards": "._batch",
    "encode_actions": "._batch",
    "action_encoder": "._fastactions",
    "PROFILES": ".db",
    "StorageProfile": ".db",
    "open_db": ".db",
    "open_scratch_db": ".db",
    "schema_info": ".db",
    "Barrier": ".events",
    "EpisodeEnded": ".events",
    "EpisodeStarted": ".events",
    "Event": ".events",
    "RunEnded": ".events",
    "RunStarted": ".events",
    "Step": ".events",
    "StepBatch": ".events",
    "StreamFrame": ".events",
    "StreamFrames": ".events",
    "StreamStarted": ".events",
    "TelemetryAsyncHub": ".hub",
    "SinkMetrics": ".sink",
    "TelemetryDBSink": ".sink",
    "check_reward": ".spaces",
    "decode_action": ".spaces",
    "decode_info": ".spaces",
    "encode_action": ".spaces",
    "encode_info": ".spaces",
    "space_spec": ".spaces",
}

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
    "StreamFrame",
    "StreamFrames",
    "StreamStarted",
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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
