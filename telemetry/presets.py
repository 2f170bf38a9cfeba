"""Recording presets: per-family and per-game defaults scaled to the host, with a user file.

``effective_settings(env_id)`` builds the ``Settings`` a recording uses, one layer at a
time, and remembers which layer set each field (``explain`` prints that table for
``framestore presets --env ID``):

1. ``family:<name>``: ``FAMILY_DEFAULTS`` for the env's family (atari, box2d, toy_text,
   classic_control, other). Family and game values are sized for the ``minimum`` host.
2. ``game:<env id>``: the env's row in ``GAME_PRESETS`` (mainly ``frame_bytes_hint``, the
   measured ``env.render()`` size in bytes).
3. ``host:<profile>``: ``HOST_PROFILES`` scaling (buffers, batch size, checkpoint interval,
   compression threads, telemetry-lite ring). ``queue_bytes`` is derived here as
   ``queue_frames * frame_bytes_hint``, capped per profile.
4. ``preset:<name>``: a named preset (``PRESETS``; ``--preset``), ``default`` changes nothing.
5. ``config:<path>``: the user's TOML file, its ``[default]`` table then the env's own
   table (``["ALE/Assault-v5"]``). A table may also name a ``preset``.
6. ``override``: explicit overrides (CLI flags, ``Recorder(overrides=...)``).
7. ``memory-budget``: ``queue_bytes + lite_bytes`` is clamped to ``MEMORY_BUDGET_FRACTION``
   (25%) of the RAM available when settings are resolved, so a big preset on a busy machine
   cannot push it into swap.

``queue_frames`` and ``queue_bytes`` are independent bounds (the writer stops accepting at
whichever is reached first): raising one in the TOML file does not raise the other.

``suggest_tuning`` turns observed queue high-water marks into per-game overrides and
``save_tuning`` merges them into the TOML file (``framestore tune``).

Pure Python: no Qt, no SQLite, and nothing heavy is imported (``gymnasium.registry`` is
consulted only for ids the tables do not know).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import InvalidInput

__all__ = [
    "Settings",
    "ResolvedSettings",
    "HostInfo",
    "HostProfile",
    "FAMILIES",
    "FAMILY_DEFAULTS",
    "GAME_PRESETS",
    "HOST_PROFILES",
    "PRESETS",
    "MEMORY_BUDGET_FRACTION",
    "family_of",
    "detect_host",
    "host_profile",
    "default_config_path",
    "load_config",
    "effective_settings",
    "explain",
    "suggest_tuning",
    "save_tuning",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

CODECS = ("zstd", "png", "raw")
POLICIES = ("block", "drop")
DURABILITIES = ("durable", "balanced", "fast")
FAMILIES = ("atari", "box2d", "toy_text", "classic_control", "other")

#: Share of the RAM available at resolve time that ``queue_bytes + lite_bytes`` may use.
#: A quarter leaves room for the env, the GUI, the page cache that makes segment writes
#: cheap, and whatever else the user runs.
MEMORY_BUDGET_FRACTION = 0.25
#: However small the budget, the writer queue and the lite ring keep room for this many
#: frames: a queue smaller than one frame rejects every frame. This floor is the only case
#: in which the clamped total can exceed the budget.
MIN_BUFFERED_FRAMES = 4
#: Largest frame a segment can hold (``framestore._format.MAX_FRAME_BYTES``).
MAX_FRAME_BYTES = 64 * MiB


# --------------------------------------------------------------------------- settings


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
        codec: ``"zstd"``, ``"png"`` or ``"raw"`` (all lossless).
        level: zstd level (-7..22).
        policy: ``"block"`` (wait up to ``block_timeout`` on a full queue) or ``"drop"``.
        block_timeout: seconds the ``block`` policy waits before ``QueueFull``.
        durability: ``"durable"``, ``"balanced"`` or ``"fast"`` (see ``FrameStorageService``).
        compress_threads: size of the compression pool.
        lite_steps: telemetry-lite ring bound, in steps.
        lite_bytes: telemetry-lite ring bound, in bytes.
        segment_bytes: a segment file is sealed and a new one started beyond this size.
    """

    hub_buffer: int = 2048
    queue_frames: int = 1024
    queue_bytes: int = 256 * MiB
    sink_queue: int = 2048
    batch_size: int = 64
    checkpoint_interval: int = 1024
    chunk_frames: int = 64
    codec: str = "zstd"
    level: int = 3
    policy: str = "block"
    block_timeout: float = 10.0
    durability: str = "balanced"
    compress_threads: int = 2
    lite_steps: int = 36_000
    lite_bytes: int = 256 * MiB
    segment_bytes: int = 256 * MiB


SETTING_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Settings))
#: Keys a preset row, the TOML file or overrides may set besides the ``Settings`` fields.
_EXTRA_KEYS = ("frame_bytes_hint",)

# (minimum, maximum) for integer settings.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "hub_buffer": (1, 10_000_000),
    "queue_frames": (1, 10_000_000),
    "queue_bytes": (1, 1 << 50),
    "sink_queue": (1, 10_000_000),
    "batch_size": (1, 1_000_000),
    "checkpoint_interval": (1, 1 << 40),
    "chunk_frames": (1, 65_535),
    "level": (-7, 22),
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
}


def _check_value(key: str, value: Any, where: str) -> Any:
    """Return ``value`` if it is valid for ``key``; otherwise raise ``InvalidInput``."""
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
    if key == "block_timeout":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 < value <= 86_400
        ):
            raise InvalidInput(
                f"{where}: block_timeout must be a number of seconds in (0, 86400]; got {value!r}"
            )
        return float(value)
    lo, hi = _INT_RANGES[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(f"{where}: {key} must be an integer from {lo} to {hi}; got {value!r}")
    return value


def _check_key(key: Any, where: str, allowed: tuple[str, ...]) -> None:
    if key in allowed:
        return
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise InvalidInput(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(allowed)}")


def _check_table(table: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        _check_key(key, where, allowed)
        out[key] = _check_value(key, value, where)
    return out


# --------------------------------------------------------------------------- families, games

# Shared by every family; sized for the ``minimum`` host (the host stage scales them).
_COMMON: dict[str, Any] = {
    "chunk_frames": 64,
    "codec": "zstd",
    "level": 3,
    "policy": "block",
    "block_timeout": 10.0,
    "durability": "balanced",
    "compress_threads": 2,
    "lite_steps": 36_000,  # 10 minutes at 60 Hz
    "lite_bytes": 256 * MiB,
    "segment_bytes": 256 * MiB,
}

#: Per-family values for a ``minimum`` host. ``frame_bytes_hint`` is the expected
#: ``env.render()`` size; it sizes ``queue_bytes`` (``queue_frames * frame_bytes_hint``).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    # 210x160x3 frames: small, so many fit; 60 Hz with frameskip makes long episodes.
    "atari": {
        **_COMMON,
        "frame_bytes_hint": 210 * 160 * 3,
        "hub_buffer": 2048,
        "queue_frames": 2048,
        "sink_queue": 2048,
        "batch_size": 64,
        "checkpoint_interval": 1024,
    },
    # 400x600x3 frames (7x an Atari frame): fewer frames per queue, smaller chunks.
    "box2d": {
        **_COMMON,
        "frame_bytes_hint": 400 * 600 * 3,
        "hub_buffer": 2048,
        "queue_frames": 256,
        "sink_queue": 2048,
        "batch_size": 64,
        "checkpoint_interval": 1024,
        "chunk_frames": 32,
    },
    "classic_control": {
        **_COMMON,
        "frame_bytes_hint": 400 * 600 * 3,
        "hub_buffer": 2048,
        "queue_frames": 256,
        "sink_queue": 2048,
        "batch_size": 64,
        "checkpoint_interval": 1024,
        "chunk_frames": 32,
    },
    # Turn-based grids rendered at 4 fps for humans: few steps, frames that barely change.
    "toy_text": {
        **_COMMON,
        "frame_bytes_hint": 256 * 256 * 3,
        "hub_buffer": 1024,
        "queue_frames": 512,
        "sink_queue": 1024,
        "batch_size": 32,
        "checkpoint_interval": 1024,
    },
    # Unknown envs (MuJoCo, third-party): assume Gymnasium's common 400x600 render.
    "other": {
        **_COMMON,
        "frame_bytes_hint": 400 * 600 * 3,
        "hub_buffer": 1024,
        "queue_frames": 256,
        "sink_queue": 1024,
        "batch_size": 64,
        "checkpoint_interval": 1024,
        "chunk_frames": 32,
    },
}

#: Per-game values that differ from the family. ``frame_bytes_hint`` values are
#: ``env.render().nbytes`` measured with gymnasium 1.4 / ale-py 0.12 (rgb_array, seed 0).
#: ``family`` is stored so ``family_of`` needs no registry lookup for these ids.
GAME_PRESETS: dict[str, dict[str, Any]] = {
    "ALE/Assault-v5": {"family": "atari", "frame_bytes_hint": 210 * 160 * 3},
    "ALE/Breakout-v5": {"family": "atari", "frame_bytes_hint": 210 * 160 * 3},
    "ALE/Pong-v5": {"family": "atari", "frame_bytes_hint": 210 * 160 * 3},
    "ALE/SpaceInvaders-v5": {"family": "atari", "frame_bytes_hint": 210 * 160 * 3},
    # CarRacing redraws the whole track every frame: less compressible, smaller chunks.
    "CarRacing-v3": {"family": "box2d", "frame_bytes_hint": 400 * 600 * 3, "chunk_frames": 16},
    "LunarLander-v3": {"family": "box2d", "frame_bytes_hint": 400 * 600 * 3},
    "BipedalWalker-v3": {"family": "box2d", "frame_bytes_hint": 400 * 600 * 3},
    "CartPole-v1": {"family": "classic_control", "frame_bytes_hint": 400 * 600 * 3},
    "MountainCar-v0": {"family": "classic_control", "frame_bytes_hint": 400 * 600 * 3},
    "MountainCarContinuous-v0": {"family": "classic_control", "frame_bytes_hint": 400 * 600 * 3},
    "Acrobot-v1": {"family": "classic_control", "frame_bytes_hint": 500 * 500 * 3},
    "Pendulum-v1": {"family": "classic_control", "frame_bytes_hint": 500 * 500 * 3},
    "FrozenLake-v1": {"family": "toy_text", "frame_bytes_hint": 256 * 256 * 3},
    "FrozenLake8x8-v1": {"family": "toy_text", "frame_bytes_hint": 512 * 512 * 3},
    # gymnasium 1.4 registers Taxi-v4 (Taxi-v3 resolves to this row by name).
    "Taxi-v4": {"family": "toy_text", "frame_bytes_hint": 456 * 536 * 3},
    # gymnasium 1.x registers CliffWalking-v1 (v0 lives under tabular/).
    "CliffWalking-v1": {"family": "toy_text", "frame_bytes_hint": 256 * 768 * 3},
    "Blackjack-v1": {"family": "toy_text", "frame_bytes_hint": 376 * 384 * 3},
}

# Registry entry-point modules -> family (checked as prefixes).
_ENTRY_POINT_FAMILIES = (
    ("ale_py", "atari"),
    ("gymnasium.envs.box2d", "box2d"),
    ("gymnasium.envs.toy_text", "toy_text"),
    ("gymnasium.envs.tabular", "toy_text"),
    ("gymnasium.envs.classic_control", "classic_control"),
    ("gymnasium.envs.phys2d", "classic_control"),
)

_VERSION_RE = re.compile(r"-v\d+$")


def _base_name(env_id: str) -> str:
    """``"ns/Name-v3"`` -> ``"ns/Name"``: the id without its version."""
    return _VERSION_RE.sub("", env_id)


def _game_row(env_id: str) -> tuple[str, dict[str, Any]] | None:
    """The ``GAME_PRESETS`` row for ``env_id``: exact id first, else another version of
    the same env (``Taxi-v3`` -> ``Taxi-v4``), so a version bump keeps its measured hint."""
    if env_id in GAME_PRESETS:
        return env_id, GAME_PRESETS[env_id]
    base = _base_name(env_id)
    for key, row in GAME_PRESETS.items():
        if _base_name(key) == base:
            return key, row
    return None


def _registry_entry_point(env_id: str) -> str | None:
    try:
        import gymnasium  # a core dependency; its registry import is light
    except ImportError:
        return None
    spec = gymnasium.registry.get(env_id)
    if spec is None:
        return None
    ep = spec.entry_point
    if isinstance(ep, str):
        return ep.split(":", 1)[0]
    return getattr(ep, "__module__", None)


def family_of(env_id: str) -> str:
    """The preset family of ``env_id``: one of ``FAMILIES``.

    ``ALE/*`` ids are Atari and known games use their ``GAME_PRESETS`` row, without
    importing anything. Other ids are looked up in ``gymnasium.registry`` (by entry-point
    module, never importing the env itself); ids it does not know are ``"other"``.
    """
    if not isinstance(env_id, str) or not env_id.strip():
        raise InvalidInput(f"environment id must be a non-empty string, got {env_id!r}")
    if env_id.startswith("ALE/"):
        return "atari"
    row = _game_row(env_id)
    if row is not None:
        return row[1]["family"]
    module = _registry_entry_point(env_id)
    if module:
        for prefix, family in _ENTRY_POINT_FAMILIES:
            if module == prefix or module.startswith(prefix + "."):
                return family
    return "other"


# --------------------------------------------------------------------------- hosts


@dataclass(frozen=True)
class HostInfo:
    """What the host offers a recording.

    Attributes:
        cores: CPU cores this process may use.
        ram_bytes: total RAM.
        free_ram_bytes: RAM available now (``psutil.virtual_memory().available``).
        disk_kind: ``"nvme"``, ``"ssd"``, ``"hdd"`` or ``"unknown"``.
    """

    cores: int
    ram_bytes: int
    free_ram_bytes: int
    disk_kind: str = "unknown"


DISK_KINDS = ("nvme", "ssd", "hdd", "unknown")
_VIRTUAL_BLOCK_PREFIXES = ("loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd")


def _kind_of_block(dev_dir: Path) -> str | None:
    try:
        rotational = (dev_dir / "queue" / "rotational").read_text().strip()
    except OSError:
        return None
    if dev_dir.name.startswith("nvme"):
        return "nvme"
    return "hdd" if rotational == "1" else "ssd"


def _disk_kind(path: str | os.PathLike[str] | None) -> str:
    """Disk kind for ``path`` (its block device, or its parent if it is a partition);
    without a usable path, the kind shared by all physical disks, else ``"unknown"``."""
    if not sys.platform.startswith("linux"):
        return "unknown"
    if path is not None:
        try:
            st = os.stat(path)
            dev = Path(
                os.path.realpath(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
            )
            for candidate in (dev, dev.parent):
                slaves = sorted((candidate / "slaves").glob("*"))
                if candidate.name.startswith("dm-") and slaves:  # LVM / dm-crypt
                    candidate = Path(os.path.realpath(slaves[0]))
                    if not (candidate / "queue").exists():
                        candidate = candidate.parent
                kind = _kind_of_block(candidate)
                if kind:
                    return kind
        except (OSError, ValueError):
            pass
    kinds = set()
    for dev_dir in Path("/sys/block").glob("*"):
        if dev_dir.name.startswith(_VIRTUAL_BLOCK_PREFIXES):
            continue
        kind = _kind_of_block(dev_dir)
        if kind:
            kinds.add(kind)
    return kinds.pop() if len(kinds) == 1 else "unknown"


def detect_host(path: str | os.PathLike[str] | None = None) -> HostInfo:
    """Detect this host: usable cores, total and available RAM, and the kind of the disk
    holding ``path`` (by default, of all physical disks if they agree).

    Disk kind comes from ``/sys/block/*/queue/rotational`` on Linux; note that many virtual
    disks (virtio) report rotational even on SSD-backed hosts.
    """
    import psutil

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    vm = psutil.virtual_memory()
    return HostInfo(
        cores=max(1, cores),
        ram_bytes=int(vm.total),
        free_ram_bytes=int(vm.available),
        disk_kind=_disk_kind(path),
    )


@dataclass(frozen=True)
class HostProfile:
    """How a class of host scales the family/game values (which are sized for ``minimum``).

    Attributes:
        name: profile name.
        min_cores, min_ram_bytes: what a host needs for this profile. RAM thresholds sit
            below the nominal size (16 GB machines report ~15.5 GiB).
        scale: multiplier applied to the buffer sizes and batch size.
        buffers: ``(low, high)`` range for ``hub_buffer`` and ``sink_queue``;
            ``queue_frames`` is only capped at ``high`` (large frames keep it lower).
        batch: ``(low, high)`` range for ``batch_size``.
        checkpoint_min: smallest ``checkpoint_interval``.
        queue_bytes_cap: largest derived ``queue_bytes``.
        compress_threads: compression pool size.
        lite_steps, lite_bytes: telemetry-lite ring bounds.
        lite_suggested: telemetry-lite is the better choice for human play on this host.
    """

    name: str
    min_cores: int
    min_ram_bytes: int
    scale: int
    buffers: tuple[int, int]
    batch: tuple[int, int]
    checkpoint_min: int
    queue_bytes_cap: int
    compress_threads: int
    lite_steps: int
    lite_bytes: int
    lite_suggested: bool
    summary: str = ""


HOST_PROFILES: dict[str, HostProfile] = {
    "minimum": HostProfile(
        name="minimum",
        min_cores=4,
        min_ram_bytes=7 * GiB,
        scale=1,
        buffers=(256, 2048),
        batch=(64, 64),
        checkpoint_min=1024,
        queue_bytes_cap=256 * MiB,
        compress_threads=2,
        lite_steps=36_000,
        lite_bytes=256 * MiB,
        lite_suggested=True,
        summary="4 cores, 8 GB: buffers <= 2048, batch 64; telemetry-lite suggested for human play",
    ),
    "good": HostProfile(
        name="good",
        min_cores=6,
        min_ram_bytes=14 * GiB,
        scale=4,
        buffers=(4096, 8192),
        batch=(128, 256),
        checkpoint_min=2048,
        queue_bytes_cap=1 * GiB,
        compress_threads=3,
        lite_steps=108_000,
        lite_bytes=512 * MiB,
        lite_suggested=False,
        summary="6 cores, 16 GB, SSD/NVMe: buffers 4096-8192, batch 128-256, checkpoint >= 2048",
    ),
    "more-than-enough": HostProfile(
        name="more-than-enough",
        min_cores=8,
        min_ram_bytes=28 * GiB,
        scale=8,
        buffers=(8192, 16384),
        batch=(256, 512),
        checkpoint_min=4096,
        queue_bytes_cap=2 * GiB,
        compress_threads=4,
        lite_steps=216_000,
        lite_bytes=1 * GiB,
        lite_suggested=False,
        summary=">= 8 cores, >= 32 GB: buffers 8192-16384, batch 256-512, checkpoint >= 4096",
    ),
}
_PROFILE_ORDER = ("minimum", "good", "more-than-enough")


def host_profile(host: HostInfo) -> str:
    """The name of the largest ``HOST_PROFILES`` entry ``host`` meets.

    A host below ``minimum`` still gets ``minimum`` (its settings are the smallest we
    offer; the memory budget then protects a small machine). A spinning disk (``"hdd"``)
    lowers the profile by one step: it drains big queues slowly, so big buffers would only
    hold more unwritten frames. ``"unknown"`` disks are not penalised.
    """
    level = 0
    for i, name in enumerate(_PROFILE_ORDER):
        p = HOST_PROFILES[name]
        if host.cores >= p.min_cores and host.ram_bytes >= p.min_ram_bytes:
            level = i
    if host.disk_kind == "hdd" and level > 0:
        level -= 1
    return _PROFILE_ORDER[level]


# --------------------------------------------------------------------------- named presets

#: Named presets for ``--preset``: what each changes on top of the host-scaled values.
PRESETS: dict[str, str] = {
    "default": "changes nothing: the game's values scaled to this host",
    "low-latency": (
        "never stalls the producer (policy drop: frames are dropped and counted when the "
        "writer falls behind); chunks of <= 16 frames, zstd level 1 and commits of <= 32 "
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


def _apply_preset(name: str, s: dict[str, Any], host: HostInfo) -> dict[str, Any]:
    """The fields preset ``name`` changes, given the current values ``s``."""
    if name == "low-latency":
        return {
            "policy": "drop",
            "chunk_frames": min(s["chunk_frames"], 16),
            "level": 1,
            "batch_size": max(8, min(s["batch_size"], 32)),
        }
    if name == "throughput":
        return {
            "chunk_frames": max(s["chunk_frames"], 128),
            "batch_size": min(s["batch_size"] * 2, 1024),
            "checkpoint_interval": s["checkpoint_interval"] * 2,
            "compress_threads": max(
                s["compress_threads"], min(s["compress_threads"] + 1, host.cores - 2)
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


# --------------------------------------------------------------------------- user TOML file


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/framestore/presets.toml``, else ``~/.config/framestore/presets.toml``.

    A relative ``XDG_CONFIG_HOME`` is ignored, as the XDG base directory spec requires.
    """
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "framestore" / "presets.toml"


_TOML_KEYS = (*SETTING_FIELDS, *_EXTRA_KEYS, "preset")


def load_config(config_file: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Read and validate a presets TOML file: ``{table name: {key: value}}``.

    Every top-level entry must be a table (``[default]`` or an env id such as
    ``["ALE/Assault-v5"]``) holding only setting names, ``frame_bytes_hint`` and
    ``preset``. A missing default file is empty; a missing explicit file, a syntax error,
    an unknown key or a bad value raise ``InvalidInput`` naming the file and the key.
    """
    path = Path(config_file) if config_file is not None else default_config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if config_file is None:
            return {}
        raise InvalidInput(f"{path}: presets file not found") from None
    except OSError as e:
        raise InvalidInput(f"{path}: cannot read presets file: {e.strerror or e}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: not valid TOML: {e}") from None
    tables: dict[str, dict[str, Any]] = {}
    for name, table in doc.items():
        if not isinstance(table, dict):
            raise InvalidInput(
                f"{path}: top-level key {name!r} must be a table: [default] or an env id "
                f'such as ["ALE/Assault-v5"]'
            )
        tables[name] = _check_table(table, f"{path} [{name}]", _TOML_KEYS)
    return tables


# --------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class ResolvedSettings:
    """The settings for one recording and where each value came from.

    Attributes:
        settings: the effective ``Settings``.
        sources: for each ``Settings`` field, the layer that set it: ``"family:atari"``,
            ``"game:ALE/Assault-v5"``, ``"host:good"``, ``"preset:throughput"``,
            ``"config:/path/presets.toml"``, ``"override"`` or ``"memory-budget"``.
        host_profile: the ``HOST_PROFILES`` name used.
        preset: the named preset applied (``"default"`` when none was asked for).
        memory_budget_bytes: the cap on ``queue_bytes + lite_bytes``.
        env_id, family: the env and its family.
        frame_bytes_hint: expected bytes per frame used to size ``queue_bytes``.
        host: the host the settings were resolved for.
        config_file: the presets file read, if it existed.
        lite_suggested: telemetry-lite is advised for human play (small host or ``lite``).
    """

    settings: Settings
    sources: dict[str, str]
    host_profile: str
    preset: str
    memory_budget_bytes: int
    env_id: str = ""
    family: str = "other"
    frame_bytes_hint: int = 0
    host: HostInfo | None = None
    config_file: Path | None = None
    lite_suggested: bool = False


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(value, hi))


def effective_settings(
    env_id: str,
    *,
    host: HostInfo | None = None,
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    preset: str | None = None,
) -> ResolvedSettings:
    """Resolve the settings for recording ``env_id`` (layers in the module docstring).

    Args:
        env_id: Gymnasium id, e.g. ``"ALE/Assault-v5"``.
        host: the host to size for; detected with ``detect_host()`` when omitted.
        profile: force a ``HOST_PROFILES`` name instead of ``host_profile(host)``.
        overrides: settings that beat everything but the memory budget; ``None`` values
            are ignored (unset CLI flags).
        config_file: presets TOML file; default ``default_config_path()`` (may be absent).
        preset: a ``PRESETS`` name; default: the file's ``preset`` key, else ``"default"``.

    Raises:
        InvalidInput: unknown preset, profile or key, or a bad value, naming the key and
            the valid choices.
    """
    family = family_of(env_id)
    if profile is not None and profile not in HOST_PROFILES:
        raise InvalidInput(
            f"unknown host profile {profile!r}; choose one of {', '.join(HOST_PROFILES)}"
        )
    if preset is not None:
        _check_value("preset", preset, "--preset")
    override_values = _check_table(
        {k: v for k, v in (overrides or {}).items() if v is not None},
        "overrides",
        (*SETTING_FIELDS, *_EXTRA_KEYS),
    )
    tables = load_config(config_file)
    path = Path(config_file) if config_file is not None else default_config_path()
    config_source = f"config:{path}"
    # [default] first, then the env's own table: later keys win.
    config_values: dict[str, Any] = {}
    for name in ("default", env_id):
        config_values.update(tables.get(name, {}))
    preset_name = preset or config_values.pop("preset", None) or "default"
    config_values.pop("preset", None)

    host = host if host is not None else detect_host()
    profile_name = profile or host_profile(host)
    prof = HOST_PROFILES[profile_name]

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def put(updates: Mapping[str, Any], source: str) -> None:
        for key, value in updates.items():
            values[key] = value
            sources[key] = source

    # 1-2. family, then the game's row.
    put(FAMILY_DEFAULTS[family], f"family:{family}")
    row = _game_row(env_id)
    if row is not None:
        put({k: v for k, v in row[1].items() if k != "family"}, f"game:{row[0]}")
    # The frame size hint can come from any layer; queue_bytes is derived from it below.
    hint = override_values.get(
        "frame_bytes_hint", config_values.get("frame_bytes_hint", values["frame_bytes_hint"])
    )

    # 3. host scaling.
    lo, hi = prof.buffers
    queue_frames = min(values["queue_frames"] * prof.scale, hi)
    put(
        {
            "hub_buffer": _clamp(values["hub_buffer"] * prof.scale, lo, hi),
            "sink_queue": _clamp(values["sink_queue"] * prof.scale, lo, hi),
            "queue_frames": queue_frames,
            "queue_bytes": values.get("queue_bytes")
            or min(queue_frames * hint, prof.queue_bytes_cap),
            "batch_size": _clamp(values["batch_size"] * prof.scale, *prof.batch),
            "checkpoint_interval": max(values["checkpoint_interval"], prof.checkpoint_min),
            "compress_threads": prof.compress_threads,
            "lite_steps": max(values["lite_steps"], prof.lite_steps),
            "lite_bytes": max(values["lite_bytes"], prof.lite_bytes),
        },
        f"host:{profile_name}",
    )
    # 4-6. named preset, user file, explicit overrides.
    put(_apply_preset(preset_name, values, host), f"preset:{preset_name}")
    put(config_values, config_source)
    put(override_values, "override")

    # 7. memory budget.
    budget = int(host.free_ram_bytes * MEMORY_BUDGET_FRACTION)
    floor = MIN_BUFFERED_FRAMES * values["frame_bytes_hint"]
    total = values["queue_bytes"] + values["lite_bytes"]
    if total > budget:
        share = budget / total
        for key in ("queue_bytes", "lite_bytes"):
            clamped = max(int(values[key] * share), min(floor, values[key]))
            if clamped < values[key]:
                put({key: clamped}, "memory-budget")

    settings = Settings(**{name: values[name] for name in SETTING_FIELDS})
    return ResolvedSettings(
        settings=settings,
        sources={name: sources[name] for name in SETTING_FIELDS},
        host_profile=profile_name,
        preset=preset_name,
        memory_budget_bytes=budget,
        env_id=env_id,
        family=family,
        frame_bytes_hint=values["frame_bytes_hint"],
        host=host,
        config_file=path if path.exists() else None,
        lite_suggested=prof.lite_suggested or preset_name == "lite",
    )


def explain(resolved: ResolvedSettings) -> list[tuple[str, Any, str]]:
    """``(field, value, source)`` for every setting, in ``Settings`` order."""
    return [
        (name, getattr(resolved.settings, name), resolved.sources[name]) for name in SETTING_FIELDS
    ]


# --------------------------------------------------------------------------- tuning

#: ``suggest_tuning`` thresholds: grow at or above ``GROW_AT`` of a bound, shrink below
#: ``SHRINK_BELOW``; a flush slower than ``SLOW_FLUSH_MS`` lowers the batch size.
GROW_AT = 0.80
SHRINK_BELOW = 0.25
SLOW_FLUSH_MS = 250.0
MIN_TUNED_FRAMES = 64
MIN_TUNED_BYTES = 16 * MiB
MIN_TUNED_BATCH = 8

OBSERVED_KEYS = (
    "env_id",
    "queue_high_water_frames",
    "queue_high_water_bytes",
    "queue_frames",
    "queue_bytes",
    "max_flush_ms",
    "dropped",
    "blocked_s",
)


def _check_run(i: int, run: Mapping[str, Any]) -> None:
    where = f"observed run {i}"
    for key in OBSERVED_KEYS:
        if key not in run:
            raise InvalidInput(
                f"{where}: missing {key!r}; each run needs {', '.join(OBSERVED_KEYS)}"
            )
    if not isinstance(run["env_id"], str) or not run["env_id"]:
        raise InvalidInput(f"{where}: env_id must be a non-empty string, got {run['env_id']!r}")
    for key in OBSERVED_KEYS[1:]:
        v = run[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise InvalidInput(f"{where}: {key} must be a non-negative number, got {v!r}")
    for key in ("queue_frames", "queue_bytes"):
        if run[key] <= 0:
            raise InvalidInput(f"{where}: {key} must be positive, got {run[key]!r}")


def suggest_tuning(observed: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per-game overrides from the queue statistics of past runs (``framestore tune``).

    Each run is a mapping with ``env_id``, ``queue_high_water_frames``,
    ``queue_high_water_bytes``, ``queue_frames``, ``queue_bytes`` (the bounds it ran with),
    ``max_flush_ms``, ``dropped`` and ``blocked_s``; an optional ``batch_size`` is the batch
    size it ran with (else today's effective one). For each env:

    - frames dropped, time spent blocked, or a high-water mark at >= 80% of either bound:
      both queue bounds double (from the largest bound seen);
    - otherwise, every run below 25% of both bounds: each bound shrinks to twice the
      highest high-water mark (at least 64 frames / 16 MiB);
    - a commit slower than 250 ms: the batch size drops in proportion, at least halved.

    Returns ``{env_id: {setting: value}}``, only for envs with something to change; the
    tables ``save_tuning`` writes.
    """
    runs = list(observed)
    by_env: dict[str, list[Mapping[str, Any]]] = {}
    for i, run in enumerate(runs):
        if not isinstance(run, Mapping):
            raise InvalidInput(f"observed run {i}: expected a mapping, got {type(run).__name__}")
        _check_run(i, run)
        by_env.setdefault(run["env_id"], []).append(run)

    suggestions: dict[str, dict[str, int]] = {}
    for env_id, env_runs in by_env.items():
        change: dict[str, int] = {}
        q_frames = int(max(r["queue_frames"] for r in env_runs))
        q_bytes = int(max(r["queue_bytes"] for r in env_runs))
        hw_frames = int(max(r["queue_high_water_frames"] for r in env_runs))
        hw_bytes = int(max(r["queue_high_water_bytes"] for r in env_runs))
        ratios = [
            max(
                r["queue_high_water_frames"] / r["queue_frames"],
                r["queue_high_water_bytes"] / r["queue_bytes"],
            )
            for r in env_runs
        ]
        pressure = any(r["dropped"] > 0 or r["blocked_s"] > 0 for r in env_runs)
        if pressure or max(ratios) >= GROW_AT:
            change["queue_frames"] = q_frames * 2
            change["queue_bytes"] = q_bytes * 2
        elif max(ratios) < SHRINK_BELOW:
            frames = max(2 * hw_frames, MIN_TUNED_FRAMES)
            nbytes = max(2 * hw_bytes, MIN_TUNED_BYTES)
            if frames < q_frames:
                change["queue_frames"] = frames
            if nbytes < q_bytes:
                change["queue_bytes"] = nbytes
        max_flush = max(r["max_flush_ms"] for r in env_runs)
        if max_flush > SLOW_FLUSH_MS:
            batches = [r["batch_size"] for r in env_runs if "batch_size" in r]
            batch = int(max(batches)) if batches else effective_settings(env_id).settings.batch_size
            lowered = max(MIN_TUNED_BATCH, min(batch // 2, int(batch * SLOW_FLUSH_MS / max_flush)))
            if lowered < batch:
                change["batch_size"] = lowered
        if change:
            suggestions[env_id] = change
    return suggestions


# --------------------------------------------------------------------------- TOML writing

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    # fullmatch: with match, "$" would accept a key ending in a newline
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        # repr gives "1e+16" / "5e-324"; TOML wants a fraction or exponent, which these have.
        return text if any(c in text for c in ".eE") else text + ".0"
    if isinstance(value, str):
        return _toml_string(value)
    raise InvalidInput(f"cannot write {type(value).__name__} to a presets file: {value!r}")


def _toml_dumps(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text for ``{table: {key: scalar}}`` (ints, floats, strings, bools only)."""
    lines = [
        '# framestore presets: [default] applies to every env, ["<env id>"] to one env.',
        "# See `framestore presets --env ID`; `framestore tune --save` updates this file.",
    ]
    for name, table in tables.items():
        lines.append("")
        lines.append(f"[{_toml_key(name)}]")
        for key, value in table.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``name.partial``, fsync, ``os.replace``; the partial file goes on error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_tuning(
    suggestions: Mapping[str, Mapping[str, Any]],
    config_file: str | os.PathLike[str] | None = None,
) -> Path:
    """Merge ``suggestions`` (``{env_id: {setting: value}}``) into the presets file.

    Keys in the file that the suggestions do not mention, and other tables, are kept;
    comments and formatting are not (the file is rewritten). The file is replaced
    atomically. Returns its path.

    Raises:
        InvalidInput: a bad key or value in ``suggestions``, or an invalid existing file
            (it is left untouched rather than overwritten).
    """
    path = Path(config_file) if config_file is not None else default_config_path()
    checked = {}
    for env_id, table in suggestions.items():
        if not isinstance(env_id, str) or not env_id:
            raise InvalidInput(f"tuning: env id must be a non-empty string, got {env_id!r}")
        if not isinstance(table, Mapping):
            raise InvalidInput(f"tuning [{env_id}]: expected a table of settings")
        checked[env_id] = _check_table(table, f"tuning [{env_id}]", _TOML_KEYS)
    tables = load_config(path) if path.exists() else {}
    for env_id, table in checked.items():
        tables.setdefault(env_id, {}).update(table)
    _atomic_write_text(path, _toml_dumps(tables))
    return path
