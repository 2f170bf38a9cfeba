"""The recording settings: the ``Settings`` dataclass and the checks every value passes.

Every layer (family and game tables, presets, the user's TOML file, overrides) goes
through ``check_table``, so a bad key or value is rejected with the same message,
naming where it came from, before anything is recorded. The allowed codecs, queue
policies, durabilities, zstd levels and the largest frame come from the modules that
use them (``framestore.disk.codecs``, ``framestore._format``); the queue policies and
durabilities are named here and taken by the writer.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from telemetry import PROFILES

from .._format import MAX_FRAME_BYTES
from ..disk.codecs import CODEC_NAMES, ZSTD_LEVELS
from ..errors import InvalidInput
from ._presets import PRESETS

#: The frame writer's queue policies and durability profiles: named here, where every
#: setting is checked, and taken by the writer (``framestore.write``), which sits above
#: the settings. One durability name picks both the segment fsync policy and the SQLite
#: profile of the sink (``telemetry.PROFILES``), so the names are the sink's.
POLICIES = ("block", "drop")
DURABILITIES = tuple(PROFILES)

#: Where the frame writer and the SQLite sink run: threads of the producer's process, or
#: a storage process fed through shared memory (``docs/ARCHITECTURE.md``, "Placement").
WRITERS: tuple[str, ...] = ("thread", "process")
#: How the storage process starts (``multiprocessing`` start methods).
WRITER_STARTS: tuple[str, ...] = ("spawn", "fork")

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Codec names a recording may use, the default first.
CODECS: tuple[str, ...] = tuple(CODEC_NAMES)


@dataclass(frozen=True)
class Settings:
    """Everything that sizes and configures one recording.

    Attributes:
        hub_buffer: steps buffered per display subscriber (drop-oldest).
        queue_frames: writer queue bound, in frames.
        queue_bytes: writer queue bound, in bytes of raw frames.
        sink_queue: DB sink queue bound, in steps.
        batch_size: steps per SQLite commit.
        checkpoint_interval: steps between WAL checkpoints.
        chunk_frames: frames compressed together in one chunk.
        part_frames: zstd: a chunk of more frames is compressed as independently
            decodable parts of this many frames (a random read decodes one part, not the
            chunk; docs/FORMAT.md, "zstd parts"); 0: one zstd frame per chunk.
        codec: ``"zstd"``, ``"png"`` or ``"raw"`` (all lossless).
        level: zstd level (-7..22).
        policy: ``"block"`` (wait up to ``block_timeout`` on a full queue) or ``"drop"``.
        block_timeout: seconds the ``block`` policy waits before ``QueueFull``.
        max_latency: seconds a chunk stays open at most once it holds a step: with
            the sink's commit interval, it bounds how long a recorded step may wait to
            become durable (docs/RELIABILITY.md).
        durability: ``"durable"``, ``"balanced"`` or ``"fast"`` (see ``FrameStorageService``).
        compress_threads: size of the compression pool.
        lite_steps: telemetry-lite ring bound, in steps.
        lite_bytes: telemetry-lite ring bound, in bytes.
        segment_bytes: a segment file is sealed and a new one started beyond this size.
        writer: ``"thread"`` (writer and sink are threads of the producer's process) or
            ``"process"`` (they run in a storage process; the producer only copies frames
            into shared memory and sends small descriptors).
        writer_start: how the storage process starts: ``"spawn"`` (a fresh interpreter:
            safe with any threads, ~1 s to start) or ``"fork"`` (fast, but the producer's
            other threads must not hold locks at the fork, and the storage process
            inherits the producer's open files, SQLite connections included: prefer
            ``"spawn"`` unless the start-up time matters).
    """

    hub_buffer: int = 2048
    queue_frames: int = 1024
    queue_bytes: int = 256 * MiB
    sink_queue: int = 2048
    batch_size: int = 64
    checkpoint_interval: int = 1024
    chunk_frames: int = 64
    part_frames: int = 0
    codec: str = "zstd"
    level: int = 3
    policy: str = "block"
    block_timeout: float = 10.0
    max_latency: float = 0.5
    durability: str = "balanced"
    compress_threads: int = 2
    lite_steps: int = 36_000
    lite_bytes: int = 256 * MiB
    segment_bytes: int = 256 * MiB
    writer: str = "thread"
    writer_start: str = "spawn"


SETTING_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Settings))
#: Keys overrides, table rows and the TOML file may set besides the ``Settings`` fields.
OVERRIDE_KEYS: tuple[str, ...] = (*SETTING_FIELDS, "frame_bytes_hint")
#: Keys a table of the TOML file may hold: the above, and a named ``preset``.
CONFIG_KEYS: tuple[str, ...] = (*OVERRIDE_KEYS, "preset")

# (minimum, maximum) for integer settings.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "hub_buffer": (1, 10_000_000),
    "queue_frames": (1, 10_000_000),
    "queue_bytes": (1, 1 << 50),
    "sink_queue": (1, 10_000_000),
    "batch_size": (1, 1_000_000),
    "checkpoint_interval": (1, 1 << 40),
    "chunk_frames": (1, 65_535),
    "part_frames": (0, 65_535),
    "level": (ZSTD_LEVELS.start, ZSTD_LEVELS.stop - 1),
    "compress_threads": (1, 256),
    "lite_steps": (1, 1 << 40),
    "lite_bytes": (1, 1 << 50),
    "segment_bytes": (1 * MiB, 1 << 50),
    "frame_bytes_hint": (1, MAX_FRAME_BYTES),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "codec": CODECS,
    "policy": POLICIES,
    "durability": DURABILITIES,
    "writer": WRITERS,
    "writer_start": WRITER_STARTS,
}
_MAX_BLOCK_TIMEOUT = 86_400.0


def check_value(key: str, value: Any, where: str) -> Any:
    """Return ``value`` if it is valid for ``key`` (``block_timeout`` as a float).

    Raises:
        InvalidInput: naming ``where``, the key, the valid range or choices and the value.
    """
    if key in _CHOICES:
        choices = _CHOICES[key]
        if not isinstance(value, str) or value not in choices:
            raise InvalidInput(f"{where}: {key} must be one of {', '.join(choices)}; got {value!r}")
        return value
    if key == "preset":
        if not isinstance(value, str) or value not in PRESETS:
            raise InvalidInput(
                f"{where}: unknown preset {value!r}; choose one of {', '.join(PRESETS)}"
            )
        return value
    if key in ("block_timeout", "max_latency"):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 < value <= _MAX_BLOCK_TIMEOUT
        ):
            raise InvalidInput(
                f"{where}: {key} must be a number of seconds in (0, 86400]; got {value!r}"
            )
        return float(value)
    lo, hi = _INT_RANGES[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(f"{where}: {key} must be an integer from {lo} to {hi}; got {value!r}")
    return value


def check_key(key: Any, where: str, allowed: tuple[str, ...]) -> None:
    """Raise ``InvalidInput`` unless ``key`` is in ``allowed`` (suggesting the closest)."""
    if key in allowed:
        return
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise InvalidInput(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(allowed)}")


def check_table(table: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Check every key and value of ``table``; return the checked values."""
    out = {}
    for key, value in table.items():
        check_key(key, where, allowed)
        out[key] = check_value(key, value, where)
    return out
