"""Effective recording settings: the game preset scaled by the host profile, with
overrides. The tables live in ``telemetry.presets``; this module adapts them for the
frame store and checks override names."""

from __future__ import annotations

from typing import Any

from telemetry.presets import ResolvedSettings, effective_settings

__all__ = ["resolve", "ResolvedSettings"]


def resolve(
    env_id: str, *, preset: str | None = None, overrides: dict[str, Any] | None = None
) -> ResolvedSettings:
    """Settings for recording ``env_id`` on this host (see ``framestore presets``)."""
    return effective_settings(env_id, preset=preset, overrides=overrides)
