"""Named presets (``--preset``): what each changes on top of the host-scaled values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Named presets and what each does, as ``framestore presets`` and the GUI show them.
PRESETS: dict[str, str] = {
    "default": "changes nothing: the game's values scaled to this host",
    "low-latency": (
        "never stalls the producer (policy drop: frames are dropped and counted when the "
        "writer falls behind); chunks of <= 8 frames, zstd level 1 and commits of <= 32 "
        "steps so frames and rows are on disk sooner"
    ),
    "throughput": (
        "bulk agent recording: chunks of >= 128 frames, twice the batch size and checkpoint "
        "interval, one more compression thread (if cores allow), durability fast (fsync only "
        "when a segment is sealed or the store closed: a crash can lose the open segment)"
    ),
    "lite": (
        "human play with telemetry-lite: twice the lite ring (steps and bytes), zstd level 1 "
        "so compressing the ring keeps up at 60 Hz, half the writer queue (used only on save)"
    ),
}


def apply_preset(name: str, s: Mapping[str, Any], *, cores: int) -> dict[str, Any]:
    """The fields preset ``name`` changes, given the current values ``s`` and the host's
    usable ``cores``."""
    if name == "low-latency":
        return {
            "policy": "drop",
            "chunk_frames": min(s["chunk_frames"], 8),
            "level": 1,
            "batch_size": max(8, min(s["batch_size"], 32)),
        }
    if name == "throughput":
        return {
            "chunk_frames": max(s["chunk_frames"], 128),
            "batch_size": min(s["batch_size"] * 2, 1024),
            "checkpoint_interval": s["checkpoint_interval"] * 2,
            "compress_threads": max(
                s["compress_threads"], min(s["compress_threads"] + 1, cores - 2)
            ),
            "durability": "fast",
        }
    if name == "lite":
        return {
            "lite_steps": s["lite_steps"] * 2,
            "lite_bytes": s["lite_bytes"] * 2,
            "level": 1,
            "queue_frames": max(1, s["queue_frames"] // 2),
            "queue_bytes": max(1, s["queue_bytes"] // 2),
        }
    return {}
