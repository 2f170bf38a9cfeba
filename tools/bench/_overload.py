"""Overload: a producer far faster than the writer; memory must stay bounded."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._frames import FrameSet, capture
from ._measure import ProcessMemory, in_child

__all__ = ["MEMORY_SLACK", "OVERLOAD_TABLE", "OverloadResult", "overload"]

MEMORY_SLACK = 64 * 1024 * 1024  # the overload target: peak RSS <= queue_bytes + this


@dataclass
class OverloadResult:
    """A producer far faster than the writer: memory must stay bounded. With a storage
    process, ``peak_mem_mb`` is both processes' PSS growth (the shared ring counted
    once; the storage process's interpreter at rest is in ``storage_base_mb``)."""

    policy: str
    level: int
    seconds: float
    frames_put: int
    frames_written: int
    frames_dropped: int
    producer_fps: float  # record_step calls per second (attempts, incl. dropped)
    writer_fps: float  # frames written per second of the run
    speed_ratio: float  # producer_fps / writer_fps (block: the producer is held back)
    blocked_s: float
    queue_bytes: int  # the byte budget
    high_water_bytes: int
    peak_mem_mb: float
    bound_mb: float  # queue_bytes + 64 MB
    within_bound: bool
    compressor_mb: float  # zstd context size per compression thread (zstd's estimate)
    close_s: float
    writer: str = "thread"
    storage_base_mb: float = 0.0
    error: str | None = None


OVERLOAD_TABLE = (
    ("policy", "policy", "{}"),
    ("writer", "writer", "{}"),
    ("level", "level", "{}"),
    ("frames_put", "put", "{}"),
    ("frames_written", "written", "{}"),
    ("frames_dropped", "dropped", "{}"),
    ("producer_fps", "producer/s", "{:.0f}"),
    ("writer_fps", "writer/s", "{:.0f}"),
    ("speed_ratio", "ratio", "{:.1f}"),
    ("blocked_s", "blocked s", "{:.1f}"),
    ("high_water_bytes", "hw bytes", "{}"),
    ("queue_bytes", "budget", "{}"),
    ("peak_mem_mb", "peak MB", "{:.1f}"),
    ("bound_mb", "bound MB", "{:.1f}"),
    ("within_bound", "ok", "{}"),
    ("compressor_mb", "zstd ctx MB", "{:.1f}"),
    ("storage_base_mb", "storage at rest MB", "{:.1f}"),
    ("close_s", "close s", "{:.2f}"),
)


def _overload_one(
    fs: FrameSet,
    policy: str,
    level: int,
    queue_bytes: int,
    seconds: float,
    out: Path,
    writer: str = "thread",
) -> dict:
    import zstandard

    from framestore import FrameStore

    overrides = {
        "level": level,
        "policy": policy,
        "queue_bytes": queue_bytes,
        "block_timeout": max(60.0, seconds * 10),
        "writer": writer,
    }
    # The writer caps a chunk at a quarter of the queue's byte bound (service.py).
    chunk = min(64 * fs.frame_bytes, max(fs.frame_bytes, queue_bytes // 4))
    ctx = zstandard.ZstdCompressionParameters.from_level(level, source_size=chunk)
    put = 0
    error = None
    with ProcessMemory() as mem:
        with FrameStore.open(out / "overload.store") as store:
            rec = store.recorder(fs.env_id, action_space=fs.action_space, overrides=overrides)
            if rec.writer_pid is not None:
                mem.watch(rec.writer_pid)
            t0 = time.perf_counter()
            try:
                rec.begin_episode(seed=0)
                deadline = time.perf_counter() + seconds
                n = len(fs)
                while time.perf_counter() < deadline:
                    i = put % n
                    rec.record_step(fs.frames[i], fs.actions[i], 0.0, False, False, fs.infos[i])
                    put += 1
                loop_s = time.perf_counter() - t0
                m = rec.metrics().frames
                written_in_loop = m.frames_written
                t1 = time.perf_counter()
            except Exception as e:  # reported, not raised: the row shows what happened
                error = f"{type(e).__name__}: {e}"
                loop_s = time.perf_counter() - t0
                written_in_loop = 0
                t1 = time.perf_counter()
                m = rec.metrics().frames
            finally:
                rec.close()
            close_s = time.perf_counter() - t1
            eps = store.episodes()
    bound = queue_bytes + MEMORY_SLACK
    growth = mem.pss_growth if writer == "process" else mem.growth
    return {
        "writer": writer,
        "storage_base_mb": mem.other_base / 2**20,
        "policy": policy,
        "level": level,
        "seconds": loop_s,
        "frames_put": put,
        "frames_written": sum(e.frames for e in eps),
        "frames_dropped": sum(e.frames_dropped for e in eps),
        "producer_fps": put / loop_s if loop_s else 0.0,
        "writer_fps": written_in_loop / loop_s if loop_s else 0.0,
        "speed_ratio": (put / written_in_loop) if written_in_loop else float("inf"),
        "blocked_s": m.blocked_seconds,
        "queue_bytes": queue_bytes,
        "high_water_bytes": m.high_water_bytes,
        "peak_mem_mb": growth / 2**20,
        "bound_mb": bound / 2**20,
        "within_bound": growth <= bound and m.high_water_bytes <= queue_bytes,
        "compressor_mb": ctx.estimated_compression_context_size() / 2**20,
        "close_s": close_s,
        "error": error,
    }


def overload(
    fs: FrameSet | None = None,
    *,
    policies: Sequence[str] = ("block", "drop"),
    level: int = 19,
    queue_bytes: int = 8 * 1024 * 1024,
    seconds: float = 5.0,
    workdir: str | os.PathLike | None = None,
    isolate: bool = True,
    writers: Sequence[str] = ("thread",),
) -> list[OverloadResult]:
    """Feed noisy frames as fast as the producer can while the writer compresses at a
    slow zstd ``level`` with a small ``queue_bytes``; one row per writer and policy."""
    fs = fs or capture("noise", 256)
    rows = []
    for writer in writers:
        for policy in policies:
            out = Path(tempfile.mkdtemp(prefix=f"fsbench-overload-{policy}-", dir=workdir))
            try:
                d = in_child(
                    _overload_one,
                    fs,
                    policy,
                    level,
                    queue_bytes,
                    seconds,
                    out,
                    writer,
                    isolate=isolate,
                )
            finally:
                shutil.rmtree(out, ignore_errors=True)
            rows.append(OverloadResult(**d))
    return rows
