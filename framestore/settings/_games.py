"""Game families and per-game rows: the first two layers of the settings.

``family_of`` maps an env id to a family without importing the env: ``ALE/*`` ids and
the ids of ``GAME_PRESETS`` are known by name; others are looked up in
``gymnasium.registry`` by entry-point module; ids it does not know are ``"other"``
(a recording may use an env its own code registers). ``check_registered`` is the
stricter question a user-facing lookup (``framestore presets --env``) asks.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import gymnasium

from ..envs import register_optional_envs
from ..errors import InvalidInput
from ._schema import MiB

FAMILIES = ("atari", "box2d", "toy_text", "classic_control", "other")


# Shared by every family; sized for the ``minimum`` host (the host stage scales them).
_COMMON: dict[str, Any] = {
    "chunk_frames": 64,
    "part_frames": 0,
    "codec": "zstd",
    "level": 3,
    "policy": "block",
    "block_timeout": 10.0,
    "max_latency": 0.5,
    "durability": "balanced",
    "compress_threads": 2,
    "lite_steps": 36_000,  # 10 minutes at 60 Hz
    "lite_bytes": 256 * MiB,
    "segment_bytes": 256 * MiB,
    "writer": "thread",  # the host profile picks the placement (``_host.HOST_PROFILES``)
    "writer_start": "spawn",
}

#: Per-family values for a ``minimum`` host. ``frame_bytes_hint`` is the expected
#: ``env.render()`` size; it sizes ``queue_bytes`` (``queue_frames * frame_bytes_hint``).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    # 210x160x3 frames: small, so many fit; 60 Hz with frameskip makes long episodes.
    # chunk_frames 64 in parts of 32 (part_frames), zstd level 1: chosen by measurement
    # (docs/BENCHMARKS.md, "Level and part length by measurement"). `framestore bench
    # --reads --frames 12000 --chunk-frames 64 --chunk-frames 128 --part-frames 16
    # --part-frames 32 --zstd-level 1 --zstd-level 3 --repeat 5`, 12,000 Assault frames,
    # three runs of 5 interleaved rounds (load 0.3-2.6), ratios to plain zstd-3 over
    # 64-frame chunks in the same run; write CPU per frame, all threads:
    #   chunk  part  level  write CPU µs/f  B/frame        random p50   sequential
    #     64    32     1      45-49         306 (1.17x)    162-173 µs   0.69-0.72x
    #     64    16     3      48-53         306 (1.17x)    112-117 µs   0.70-0.76x
    #     64    16     1      44-51         320 (1.22x)    115-119 µs   0.65-0.68x
    #     64    32     3      48-52         290 (1.11x)    161-168 µs   0.69-0.77x
    #    128    32     1      41-46         303 (1.16x)    165-167 µs   0.64-0.65x
    # Every row keeps frame bytes within 1.25x plain zstd-3 and a random read under
    # 0.3 ms; none reaches 0.8x on the sequential pass. 64/32/1 wrote with 3-5 µs less
    # CPU a frame than the earlier 64/16/3 in every run (7%; a fourth run: 46 against
    # 51) for the same bytes and random reads ~50 µs slower, still well inside the
    # target; level 2 wrote 402 B a frame (1.54x plain zstd-3). 128-frame chunks save another few µs
    # but pass sequentially slower and hold twice the frames per open chunk. The level
    # is not needed to decode: stores written at level 3 in parts of 16 read as before.
    "atari": {
        **_COMMON,
        "chunk_frames": 64,
        "part_frames": 32,
        "level": 1,
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
# Classic control renders the same 400x600 frames as Box2D.
FAMILY_DEFAULTS["classic_control"] = dict(FAMILY_DEFAULTS["box2d"])

#: Per-game values that differ from the family. ``frame_bytes_hint`` values are
#: ``env.render().nbytes`` measured with gymnasium 1.4 / ale-py 0.12 (rgb_array, seed 0).
#: ``family`` is stored so ``family_of`` needs no registry lookup for these ids.
GAME_PRESETS: dict[str, dict[str, Any]] = {
    "ALE/Assault-v5": {"family": "atari", "frame_bytes_hint": 210 * 160 * 3},
    "ALE/Breakout-v5": {"family": "atari", "frame_bytes_hint": 210 * 160 * 3},
    "ALE/Pong-v5": {"family": "atari", "frame_bytes_hint": 210 * 160 * 3},
    "ALE/SpaceInvaders-v5": {"family": "atari", "frame_bytes_hint": 210 * 160 * 3},
    # CarRacing redraws the whole track every frame: less compressible, smaller chunks.
    # chunk_frames 8 by measurement (`framestore bench --reads --game carracing`, 600
    # frames, 5 interleaved rounds, ratios to plain zstd-3 over 64-frame chunks):
    # 8 frames at level 3: 1.08x bytes, random read p50 0.06x, write CPU 0.93x;
    # 16: 1.04x, 0.14x, 1.02x; 32: 1.02x, 0.21x, 0.92x. Level 1 costs 1.62x bytes here.
    # zstd parts do not pay here (one run, 600 frames, 5 rounds, with the prefix-decoding
    # reader): 8 frames whole 1.09x bytes, random read 657 µs; in parts of 4: 1.17x,
    # 353 µs; of 2: 1.37x, 296 µs; 16 frames in parts of 4: 1.17x, 432 µs.
    # Level checked again with the Atari change (issue 19; two runs, `--chunk-frames 8
    # --chunk-frames 16 --part-frames 0 --zstd-level 1 --zstd-level 3 --repeat 5`, 600
    # frames, load 1.8-4): level 1 writes 1.63x plain zstd-3's bytes (7,269 B against
    # 4,450) for 5-10% less write CPU; c8 l3 1.09x, random p50 293-296 µs, write CPU
    # 317-334 µs/f; c16 l3 1.05x but 473-510 µs. Level 3, 8-frame chunks stay.
    "CarRacing-v3": {"family": "box2d", "frame_bytes_hint": 400 * 600 * 3, "chunk_frames": 8},
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


def game_row(env_id: str) -> tuple[str, dict[str, Any]] | None:
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
    """The module ``env_id``'s registry entry point lives in, without importing it."""
    spec = gymnasium.registry.get(env_id)
    if spec is None:
        return None
    ep = spec.entry_point
    if isinstance(ep, str):
        return ep.split(":", 1)[0]
    # A creator callable: a function or class has __module__, an arbitrary callable may not.
    return getattr(ep, "__module__", None)


def _check_id(env_id: str) -> None:
    if not isinstance(env_id, str) or not env_id.strip():
        raise InvalidInput(f"environment id must be a non-empty string, got {env_id!r}")


def family_of(env_id: str) -> str:
    """The preset family of ``env_id``: one of ``FAMILIES``.

    ``ALE/*`` ids are Atari and known games use their ``GAME_PRESETS`` row, without
    importing anything. Other ids are looked up in ``gymnasium.registry`` (by entry-point
    module, never importing the env itself); ids it does not know are ``"other"``.
    """
    _check_id(env_id)
    if env_id.startswith("ALE/"):
        return "atari"
    row = game_row(env_id)
    if row is not None:
        return row[1]["family"]
    module = _registry_entry_point(env_id)
    if module:
        for prefix, family in _ENTRY_POINT_FAMILIES:
            if module == prefix or module.startswith(prefix + "."):
                return family
    return "other"


def check_registered(env_id: str, *, hint: str = "") -> None:
    """Raise ``InvalidInput`` unless Gymnasium's registry knows ``env_id``.

    ale-py's ids are registered first (``framestore.envs.register_optional_envs``), as
    recording does. Recording itself never calls this: settings for an id nobody
    registered fall back to the ``other`` family.

    Args:
        env_id: the id to look up.
        hint: appended to the message, e.g. how the caller accepts an unregistered id.

    Raises:
        InvalidInput: ``env_id`` is not registered (naming the closest registered id), or
            it is an ``ALE/`` id and ale-py is missing.
    """
    _check_id(env_id)
    register_optional_envs(env_id)
    if env_id in gymnasium.registry:
        return
    # A high cutoff: the registry holds hundreds of ids, and a far-fetched guess misleads.
    close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=1, cutoff=0.8)
    text = f"{env_id!r} is not registered in Gymnasium"
    if close:
        text += f" (did you mean {close[0]!r}?)"
    raise InvalidInput(f"{text}; {hint}" if hint else text)
