"""``framestore bench --writers``: where the frame writer and the SQLite sink run.

``thread`` (threads of the producer's process) against ``process`` (a storage process
fed through shared memory), with plain zstd (the limit) measured alongside, on the same
frames in ONE run. The modes are interleaved round by round (A B C, B C A, C A B, ...)
and the median of each column is reported, so a slow moment of a shared machine hits
every mode alike.

Per run: frames/s from the first step until everything is durable (the recorder's start
is its own column: a storage process started with ``spawn`` imports numpy, zstandard and
SQLite first), the producer's cost per ``record_step``
(p50, p99, max), the producer's peak RSS growth, the storage process's peak RSS (a whole
interpreter) and the peak of both processes' PSS growth (shared ring pages counted
once), the queue's high-water mark, and the CPU time per frame of both processes (all
threads; on a shared machine it says what the work costs when wall time does not).
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._baselines import PIPELINE_FUNCS
from ._frames import DEFAULT_FRAMES, FrameSet, capture, record_all
from ._measure import ProcessMemory, in_child, percentiles_us

__all__ = ["WRITERS_TABLE", "WriterResult", "run_writers"]

MODES = ("thread", "process", "zstd")


@dataclass
class WriterResult:
    """One mode of one game (medians over the rounds)."""

    game: str
    writer: str  # thread | process | zstd
    rounds: int
    frames: int
    fps: float = 0.0
    fps_vs_zstd: float | None = None
    cpu_us: float = 0.0  # CPU time per frame, both processes, all threads
    producer_p50_us: float = 0.0
    producer_p99_us: float = 0.0
    producer_max_us: float = 0.0
    start_s: float = 0.0  # opening the store and starting the recorder (not in fps)
    producer_mb: float = 0.0  # peak RSS growth of the producer
    storage_mb: float = 0.0  # peak RSS of the storage process (process mode)
    total_mb: float = 0.0  # peak PSS growth of both processes
    max_queue: int = 0
    verified: bool | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _record(fs: FrameSet, out: Path, writer: str) -> dict:
    """One framestore run (in a forked child): record every frame, close, measure."""
    from framestore import FrameStore

    costs = np.zeros(len(fs), dtype=np.int64)
    cpu0 = _cpu_seconds()
    with ProcessMemory() as mem:
        opened = time.perf_counter()
        with FrameStore.open(out / "bench.store") as store:
            rec = store.recorder(
                fs.env_id, action_space=fs.action_space, overrides={"writer": writer}
            )
            t0 = time.perf_counter()
            try:
                if rec.writer_pid is not None:
                    mem.watch(rec.writer_pid)
                    cpu0 += _started_cpu(rec.writer_pid)  # its start-up is not per frame
                record_all(rec, fs, costs)
                m = rec.metrics().frames
            finally:
                rec.close()
        seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    p50, p99, mx = percentiles_us(costs)
    return {
        "fps": len(fs) / seconds,
        "cpu_us": cpu / len(fs) * 1e6,
        "start_s": t0 - opened,
        "producer_p50_us": p50,
        "producer_p99_us": p99,
        "producer_max_us": mx,
        "producer_mb": mem.growth / 2**20,
        "storage_mb": mem.other_peak / 2**20,
        "total_mb": mem.pss_growth / 2**20,
        "max_queue": m.high_water_frames,
    }


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the storage process, once
    closed), user and system."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _started_cpu(pid: int) -> float:
    """CPU seconds a just-started storage process spent starting (imports, opening)."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _zstd(fs: FrameSet, out: Path) -> dict:
    cpu0 = _cpu_seconds()
    run = PIPELINE_FUNCS["zstd"](fs, out, None)
    cpu = _cpu_seconds() - cpu0
    p50, p99, mx = percentiles_us(run.costs_ns)
    return {
        "fps": run.frames / run.seconds,
        "cpu_us": cpu / run.frames * 1e6,
        "producer_p50_us": p50,
        "producer_p99_us": p99,
        "producer_max_us": mx,
    }


def _verify(store: Path, fs: FrameSet) -> bool:
    from ._throughput import verify_framestore

    return verify_framestore(store, fs)


def _one(mode: str, fs: FrameSet, workdir: str | os.PathLike | None, check: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"fsbench-writers-{mode}-", dir=workdir))
    try:
        if mode == "zstd":
            return in_child(_zstd, fs, out)
        d = in_child(_record, fs, out, mode)
        if check:
            d["verified"] = _verify(out / "bench.store", fs)
        return d
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _median_row(game: str, mode: str, frames: int, runs: list[dict]) -> WriterResult:
    row = WriterResult(game, mode, len(runs), frames)
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        row.error = errors[0]
        return row
    for key in ("fps", "cpu_us", "producer_p50_us", "producer_p99_us", "producer_max_us"):
        setattr(row, key, statistics.median(r[key] for r in runs))
    if mode != "zstd":
        for key in ("start_s", "producer_mb", "storage_mb", "total_mb", "max_queue"):
            setattr(row, key, statistics.median(r[key] for r in runs))
        checked = [r["verified"] for r in runs if "verified" in r]
        row.verified = all(checked) if checked else None
    return row


def run_writers(
    games: Sequence[str] = ("assault", "carracing", "noise"),
    *,
    frames: int | None = None,
    rounds: int = 5,
    workdir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[WriterResult]:
    """For each game: ``rounds`` rounds of thread, process and plain zstd, the order
    rotating each round; one row per mode with the medians and the ratio to zstd."""
    rows: list[WriterResult] = []
    for game in games:
        n = frames or DEFAULT_FRAMES[game]
        if progress:
            progress(f"capturing {n} {game} frames")
        fs = capture(game, n)
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        for r in range(rounds):
            order = MODES[r % 3 :] + MODES[: r % 3]
            for mode in order:
                if progress:
                    progress(f"{game}: round {r + 1}/{rounds}: {mode}")
                try:
                    runs[mode].append(_one(mode, fs, workdir, check=r == 0))
                except Exception as e:  # one broken run must not end the bench
                    runs[mode].append({"error": f"{type(e).__name__}: {e}"})
        game_rows = [_median_row(game, m, n, runs[m]) for m in MODES]
        limit = game_rows[-1].fps
        for row in game_rows:
            row.fps_vs_zstd = row.fps / limit if limit and not row.error else None
        rows += game_rows
    return rows


WRITERS_TABLE = (
    ("game", "game", "{}"),
    ("writer", "writer", "{}"),
    ("rounds", "rounds", "{}"),
    ("frames", "frames", "{}"),
    ("fps", "frames/s", "{:.0f}"),
    ("fps_vs_zstd", "fps/zstd", "{:.2f}"),
    ("cpu_us", "cpu us/f", "{:.0f}"),
    ("producer_p50_us", "p50 us", "{:.1f}"),
    ("producer_p99_us", "p99 us", "{:.1f}"),
    ("producer_max_us", "max us", "{:.0f}"),
    ("start_s", "start s", "{:.2f}"),
    ("producer_mb", "producer MB", "{:.1f}"),
    ("storage_mb", "storage MB", "{:.1f}"),
    ("total_mb", "both PSS MB", "{:.1f}"),
    ("max_queue", "max q", "{:.0f}"),
    ("verified", "verified", "{}"),
)
