"""Stress: replays at 1x, 10x and maximum rate with tiny buffers must always finish."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._frames import FrameSet
from ._measure import sleep_until_ns

__all__ = ["STRESS_TABLE", "TINY_BUFFERS", "StressResult", "stress"]


@dataclass
class StressResult:
    """One replay with tiny buffers. ``finished`` False means it hit the timeout."""

    rate: str  # "1x", "10x" or "max"
    policy: str
    frames_put: int
    frames_written: int
    frames_dropped: int
    accounted: bool  # written + dropped == put
    seconds: float
    finished: bool
    error: str | None = None


STRESS_TABLE = (
    ("rate", "rate", "{}"),
    ("policy", "policy", "{}"),
    ("frames_put", "put", "{}"),
    ("frames_written", "written", "{}"),
    ("frames_dropped", "dropped", "{}"),
    ("accounted", "accounted", "{}"),
    ("seconds", "seconds", "{:.2f}"),
    ("finished", "finished", "{}"),
    ("error", "error", "{}"),
)

TINY_BUFFERS = {"queue_frames": 2, "chunk_frames": 4, "sink_queue": 4, "batch_size": 2}


def _replay(fs: FrameSet, path: Path, hz: float | None, overrides: dict, box: dict) -> None:
    from framestore import FrameStore

    clock = time.perf_counter_ns
    try:
        with FrameStore.open(path) as store:
            rec = store.recorder(fs.env_id, action_space=fs.action_space, overrides=overrides)
            try:
                period = int(1e9 / hz) if hz else 0
                start = clock()
                tick = 0
                for e, (a, b) in enumerate(fs.episodes):
                    rec.begin_episode(seed=e)
                    for i in range(a, b):
                        if period:
                            sleep_until_ns(start + tick * period)
                        tick += 1
                        rec.record_step(
                            fs.frames[i],
                            fs.actions[i],
                            fs.rewards[i],
                            fs.terminated[i],
                            fs.truncated[i],
                            fs.infos[i],
                        )
                        box["put"] += 1
                    rec.end_episode()
            finally:
                rec.close()
            eps = store.episodes()
            box["written"] = sum(e.frames for e in eps)
            box["dropped"] = sum(e.frames_dropped for e in eps)
    except BaseException as e:  # noqa: BLE001 - reported in the result row
        box["error"] = f"{type(e).__name__}: {e}"


def stress(
    fs: FrameSet,
    rates: Sequence[float | None] = (1, 10, None),
    *,
    policies: Sequence[str] = ("block", "drop"),
    buffers: dict[str, Any] | None = None,
    timeout: float = 120.0,
    workdir: str | os.PathLike | None = None,
) -> list[StressResult]:
    """Replay ``fs``'s episodes at each rate (a multiple of ``fs.render_fps``; ``None``
    is as fast as possible) with tiny buffers under each queue policy.

    Each replay runs on its own thread and is given ``timeout`` seconds: a replay that
    does not finish is reported (``finished=False``), never waited on forever.
    """
    overrides = dict(TINY_BUFFERS)
    overrides["queue_bytes"] = 3 * fs.frame_bytes
    overrides["block_timeout"] = timeout / 2
    overrides.update(buffers or {})
    rows = []
    base = Path(tempfile.mkdtemp(prefix="fsbench-stress-", dir=workdir))
    try:
        for rate in rates:
            for policy in policies:
                box: dict[str, Any] = {"put": 0, "written": 0, "dropped": 0, "error": None}
                label = "max" if rate is None else f"{rate:g}x"
                path = base / f"{label}-{policy}.store"
                hz = None if rate is None else rate * fs.render_fps
                t0 = time.perf_counter()
                th = threading.Thread(
                    target=_replay,
                    args=(fs, path, hz, {**overrides, "policy": policy}, box),
                    name=f"bench-stress-{label}-{policy}",
                    daemon=True,
                )
                th.start()
                th.join(timeout)
                finished = not th.is_alive()
                rows.append(
                    StressResult(
                        label,
                        policy,
                        box["put"],
                        box["written"],
                        box["dropped"],
                        box["written"] + box["dropped"] == box["put"],
                        time.perf_counter() - t0,
                        finished,
                        box["error"] if finished else f"did not finish within {timeout:g}s",
                    )
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return rows
