"""Tuning from experience: observed queue statistics become per-game overrides
(``suggest_tuning``) that ``save_tuning`` merges into the user's presets file
(``framestore tune STORE --apply``)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from telemetry.logcodes import SLOW_FLUSH_MS

from ..errors import InvalidInput
from ._resolve import resolve
from ._schema import CONFIG_KEYS, MiB, check_table
from ._userconfig import default_config_path, load_config, write_config

#: ``suggest_tuning`` thresholds: grow at or above ``GROW_AT`` of a bound, shrink below
#: ``SHRINK_BELOW``; a flush slower than the sink's ``SLOW_FLUSH_MS`` (the one it logs as
#: slow) lowers the batch size.
GROW_AT = 0.80
SHRINK_BELOW = 0.25
MIN_TUNED_FRAMES = 64
MIN_TUNED_BYTES = 16 * MiB
MIN_TUNED_BATCH = 8

#: What each observed run must report (``Recorder.close`` stores these with the run).
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


def _check_run(i: int, run: Any) -> None:
    where = f"observed run {i}"
    if not isinstance(run, Mapping):
        raise InvalidInput(f"{where}: expected a mapping, got {type(run).__name__}")
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


def _queue_change(runs: list[Mapping[str, Any]]) -> dict[str, int]:
    """Grow both queue bounds under pressure, shrink them when every run used little."""
    q_frames = int(max(r["queue_frames"] for r in runs))
    q_bytes = int(max(r["queue_bytes"] for r in runs))
    used = max(
        max(
            r["queue_high_water_frames"] / r["queue_frames"],
            r["queue_high_water_bytes"] / r["queue_bytes"],
        )
        for r in runs
    )
    pressure = any(r["dropped"] > 0 or r["blocked_s"] > 0 for r in runs)
    if pressure or used >= GROW_AT:
        return {"queue_frames": q_frames * 2, "queue_bytes": q_bytes * 2}
    change: dict[str, int] = {}
    if used < SHRINK_BELOW:
        frames = max(2 * int(max(r["queue_high_water_frames"] for r in runs)), MIN_TUNED_FRAMES)
        nbytes = max(2 * int(max(r["queue_high_water_bytes"] for r in runs)), MIN_TUNED_BYTES)
        if frames < q_frames:
            change["queue_frames"] = frames
        if nbytes < q_bytes:
            change["queue_bytes"] = nbytes
    return change


def _batch_change(env_id: str, runs: list[Mapping[str, Any]]) -> dict[str, int]:
    """Lower the batch size in proportion to the slowest commit, at least halved."""
    max_flush = max(r["max_flush_ms"] for r in runs)
    if max_flush <= SLOW_FLUSH_MS:
        return {}
    batches = [r["batch_size"] for r in runs if "batch_size" in r]
    batch = int(max(batches)) if batches else resolve(env_id).settings.batch_size
    lowered = max(MIN_TUNED_BATCH, min(batch // 2, int(batch * SLOW_FLUSH_MS / max_flush)))
    return {"batch_size": lowered} if lowered < batch else {}


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

    Raises:
        InvalidInput: a run that is not a mapping, lacks a key or holds a bad number.
    """
    by_env: dict[str, list[Mapping[str, Any]]] = {}
    for i, run in enumerate(observed):
        _check_run(i, run)
        by_env.setdefault(run["env_id"], []).append(run)
    suggestions: dict[str, dict[str, int]] = {}
    for env_id, runs in by_env.items():
        change = {**_queue_change(runs), **_batch_change(env_id, runs)}
        if change:
            suggestions[env_id] = change
    return suggestions


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
        checked[env_id] = check_table(table, f"tuning [{env_id}]", CONFIG_KEYS)
    tables = load_config(path) if path.exists() else {}
    for env_id, table in checked.items():
        tables.setdefault(env_id, {}).update(table)
    write_config(path, tables)
    return path
