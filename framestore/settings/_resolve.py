"""Resolving the settings of one recording, one layer at a time.

``resolve(env_id)`` builds the ``Settings`` a recording uses and remembers which layer
set each field (``explain`` prints that table for ``framestore presets --env ID``):

1. ``family:<name>``: ``FAMILY_DEFAULTS`` for the env's family (atari, box2d, toy_text,
   classic_control, other). Family and game values are sized for the ``minimum`` host.
2. ``game:<env id>``: the env's row in ``GAME_PRESETS`` (mainly ``frame_bytes_hint``, the
   measured ``env.render()`` size in bytes).
3. ``host:<profile>``: ``HOST_PROFILES`` scaling (buffers, batch size, checkpoint interval,
   compression threads, telemetry-lite ring) and the writer placement. ``queue_bytes`` is derived here as
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

No Qt, no SQLite, and no env is imported (``gymnasium.registry`` is consulted only for
ids the tables do not know).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ._games import FAMILY_DEFAULTS, family_of, game_row
from ._host import HOST_PROFILES, HostInfo, HostProfile, detect_host, host_profile
from ._presets import apply_preset
from ._schema import OVERRIDE_KEYS, SETTING_FIELDS, Settings, check_table, check_value
from ._userconfig import default_config_path, load_config

#: Share of the RAM available at resolve time that ``queue_bytes + lite_bytes`` may use.
#: A quarter leaves room for the env, the GUI, the page cache that makes segment writes
#: cheap, and whatever else the user runs.
MEMORY_BUDGET_FRACTION = 0.25
#: However small the budget, the writer queue and the lite ring keep room for this many
#: frames: a queue smaller than one frame rejects every frame. This floor is the only case
#: in which the clamped total can exceed the budget.
MIN_BUFFERED_FRAMES = 4


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


class _Layers:
    """The values resolved so far and, for each key, the layer that set it last."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}

    def put(self, updates: Mapping[str, Any], source: str) -> None:
        for key, value in updates.items():
            self.values[key] = value
            self.sources[key] = source


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(value, hi))


def _host_scaled(v: Mapping[str, Any], prof: HostProfile, hint: int) -> dict[str, Any]:
    """Layer 3: the family/game values ``v`` (sized for ``minimum``) scaled to ``prof``."""
    lo, hi = prof.buffers
    queue_frames = min(v["queue_frames"] * prof.scale, hi)
    return {
        "hub_buffer": _clamp(v["hub_buffer"] * prof.scale, lo, hi),
        "sink_queue": _clamp(v["sink_queue"] * prof.scale, lo, hi),
        "queue_frames": queue_frames,
        "queue_bytes": v.get("queue_bytes") or min(queue_frames * hint, prof.queue_bytes_cap),
        "batch_size": _clamp(v["batch_size"] * prof.scale, *prof.batch),
        "checkpoint_interval": max(v["checkpoint_interval"], prof.checkpoint_min),
        "compress_threads": prof.compress_threads,
        "lite_steps": max(v["lite_steps"], prof.lite_steps),
        "lite_bytes": max(v["lite_bytes"], prof.lite_bytes),
        "writer": prof.writer,
    }


def _clamp_to_budget(layers: _Layers, budget: int) -> None:
    """Layer 7: shrink ``queue_bytes`` and ``lite_bytes`` in proportion to fit ``budget``,
    keeping room for ``MIN_BUFFERED_FRAMES`` frames each."""
    v = layers.values
    floor = MIN_BUFFERED_FRAMES * v["frame_bytes_hint"]
    total = v["queue_bytes"] + v["lite_bytes"]
    if total <= budget:
        return
    share = budget / total
    for key in ("queue_bytes", "lite_bytes"):
        clamped = max(int(v[key] * share), min(floor, v[key]))
        if clamped < v[key]:
            layers.put({key: clamped}, "memory-budget")


def _config_values(env_id: str, config_file: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Layer 5: the file's ``[default]`` table, then the env's own table (later keys win)."""
    tables = load_config(config_file)
    values: dict[str, Any] = {}
    for name in ("default", env_id):
        values.update(tables.get(name, {}))
    return values


def resolve(
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
        env_id: Gymnasium id, e.g. ``"ALE/Assault-v5"``; an id no registry knows gets
            the ``other`` family.
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
        check_value("preset", preset, "--preset")
    override_values = check_table(
        {k: v for k, v in (overrides or {}).items() if v is not None}, "overrides", OVERRIDE_KEYS
    )
    path = Path(config_file) if config_file is not None else default_config_path()
    config_values = _config_values(env_id, config_file)
    preset_name = preset or config_values.pop("preset", None) or "default"
    config_values.pop("preset", None)
    host = host if host is not None else detect_host()
    profile_name = profile or host_profile(host)
    prof = HOST_PROFILES[profile_name]

    layers = _Layers()
    layers.put(FAMILY_DEFAULTS[family], f"family:{family}")
    row = game_row(env_id)
    if row is not None:
        layers.put({k: v for k, v in row[1].items() if k != "family"}, f"game:{row[0]}")
    # The frame size hint can come from any layer; queue_bytes is derived from it.
    hint = override_values.get(
        "frame_bytes_hint", config_values.get("frame_bytes_hint", layers.values["frame_bytes_hint"])
    )
    layers.put(_host_scaled(layers.values, prof, hint), f"host:{profile_name}")
    layers.put(apply_preset(preset_name, layers.values, cores=host.cores), f"preset:{preset_name}")
    layers.put(config_values, f"config:{path}")
    layers.put(override_values, "override")
    budget = int(host.free_ram_bytes * MEMORY_BUDGET_FRACTION)
    _clamp_to_budget(layers, budget)

    values = layers.values
    return ResolvedSettings(
        settings=Settings(**{name: values[name] for name in SETTING_FIELDS}),
        sources={name: layers.sources[name] for name in SETTING_FIELDS},
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
