"""``framestore bench --writers``: where the frame writer and the SQLite sink run.

``thread`` (threads of the producer's process) against ``process`` (a storage process
fed through shared memory), with plain zstd (the limit) measured alongside, on the same
frames in ONE run. The modes are interleaved round by round (A B C, B C A, C A B, ...)
and the median of each column is reported, so a slow moment of a shared machine hits
every mode alike.

Per run: frames/s from the first step until everything is durable (the recorder's start
is its own column: a storage process started with ``spawn`` imports numpy, zstandard and
SQLite first), the producer's cost per ``record_step``
(p50, p99, max), how many calls waited for room in the queue (``waited``: the bench
steps no environment, so the producer outruns the writer and sits at the queue bound;
those calls' time is back-pressure under the ``block`` policy, not producer cost) and
the p50/p99 of the calls that did not wait (``Recorder.queue_waits``, one counter read
outside the timed call, tells them apart), the producer's peak RSS growth, the storage process's peak RSS (a whole
interpreter) and the peak of both processes' PSS growth (shared ring pages counted
once), the queue's high-water mark, and the CPU time per frame of both processes (all
threads; on a shared machine it says what the work costs when wall time does not), and
its ratio to plain zstd's. Every mode, plain zstd included, pays the same harness
(``measure_write``): gc and a heap trim before, the memory sampler thread during, its
output opened before the clock starts.
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

from ._baselines import ZstdFile
from ._frames import DEFAULT_FRAMES, FrameSet, capture, record_all
from ._measure import ProcessMemory, dir_bytes, in_child, percentiles_us

__all__ = ["WRITERS_FRAMES", "WRITERS_TABLE", "WriterResult", "measure_write", "run_writers"]

MODES = ("thread", "process", "zstd")
#: Frames per game by default: 12,000 Assault frames (issue 19: enough chunks that a
#: run is seconds, not a warm-up), the others as ``framestore bench``.
WRITERS_FRAMES = {**DEFAULT_FRAMES, "assault": 12_000}


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
    waits: float = 0  # record_step calls that waited for room in the queue (block policy)
    free_p50_us: float = 0.0  # the producer's cost over the calls that did not wait
    free_p99_us: float = 0.0
    start_s: float = 0.0  # opening the store and starting the recorder (not in fps)
    producer_mb: float = 0.0  # peak RSS growth of the producer
    storage_mb: float = 0.0  # peak RSS of the storage process (process mode)
    total_mb: float = 0.0  # peak PSS growth of both processes
    max_queue: int = 0
    frame_bytes: float = 0.0  # bytes holding frames, per frame
    cpu_vs_zstd: float | None = None
    verified: bool | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _FrameStoreOut:
    """framestore with the game's preset (``writer`` and any ``overrides``)."""

    def __init__(self, fs: FrameSet, out: Path, overrides: dict[str, Any]):
        from framestore import FrameStore

        self.store = FrameStore.open(out / "bench.store")
        try:
            self.rec = self.store.recorder(
                fs.env_id, action_space=fs.action_space, overrides=overrides
            )
        except BaseException:
            self.store.close()
            raise
        self.max_queue = 0
        self.waited: np.ndarray | None = None

    def started(self, mem: ProcessMemory) -> float:
        """Watch the storage process (if any); CPU seconds it spent starting."""
        pid = self.rec.writer_pid
        if pid is None:
            return 0.0
        mem.watch(pid)
        return _started_cpu(pid)

    def record(self, fs: FrameSet, costs: np.ndarray) -> None:
        self.waited = record_all(self.rec, fs, costs, waits=lambda: self.rec.queue_waits)
        self.max_queue = self.rec.metrics().frames.high_water_frames

    def close(self) -> None:
        try:
            self.rec.close()
        finally:
            self.store.close()


class _ZstdOut:
    """Plain zstd over 64-frame chunks, level 3 (``ZstdFile``)."""

    max_queue = 0
    waited = None

    def __init__(self, fs: FrameSet, out: Path, overrides: dict[str, Any]):
        self.file = ZstdFile(out / "frames.zst", **overrides)

    def started(self, mem: ProcessMemory) -> float:
        return 0.0

    def record(self, fs: FrameSet, costs: np.ndarray) -> None:
        self.file.record(fs, costs)

    def close(self) -> None:
        self.file.close()


def measure_write(mode: str, fs: FrameSet, out: Path, overrides: dict[str, Any]) -> dict:
    """One run (call it in a forked child). Every mode pays the same harness: a
    collection and a heap trim before, the RSS sampler thread (200 Hz, PSS every 100 ms)
    during, and opening its output (the store and recorder; the zstd file) before the
    clock starts (``start_s``). frames/s and CPU count from the first step until
    everything is durable; CPU is this process's and its children's, all threads,
    user + system (a storage process's start-up excluded)."""
    costs = np.zeros(len(fs), dtype=np.int64)
    kind = _ZstdOut if mode == "zstd" else _FrameStoreOut
    if mode != "zstd":
        overrides = {**overrides, "writer": mode}
    with ProcessMemory() as mem:
        opened = time.perf_counter()
        sink = kind(fs, out, overrides)
        try:
            t0 = time.perf_counter()
            cpu0 = _cpu_seconds() + sink.started(mem)
            sink.record(fs, costs)
        finally:
            sink.close()
        seconds = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
    p50, p99, mx = percentiles_us(costs)
    waited = sink.waited
    free = costs if waited is None else costs[~waited]
    free_p50, free_p99, _ = percentiles_us(free) if len(free) else (0.0, 0.0, 0.0)
    return {
        "waits": 0 if waited is None else int(waited.sum()),
        "free_p50_us": free_p50,
        "free_p99_us": free_p99,
        "fps": len(fs) / seconds,
        "cpu_us": cpu / len(fs) * 1e6,
        "start_s": t0 - opened,
        "producer_p50_us": p50,
        "producer_p99_us": p99,
        "producer_max_us": mx,
        "producer_mb": mem.growth / 2**20,
        "storage_mb": mem.other_peak / 2**20,
        "total_mb": mem.pss_growth / 2**20,
        "max_queue": sink.max_queue,
        "frame_bytes": dir_bytes(out / "bench.store" / "segments" if mode != "zstd" else out)
        / len(fs),
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


def _verify(store: Path, fs: FrameSet) -> bool:
    from ._throughput import verify_framestore

    return verify_framestore(store, fs)


def _one(mode: str, fs: FrameSet, workdir: str | os.PathLike | None, check: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"fsbench-writers-{mode}-", dir=workdir))
    try:
        d = in_child(measure_write, mode, fs, out, {})
        if check and mode != "zstd":
            d["verified"] = _verify(out / "bench.store", fs)
        return d
    finally:
        shutil.rmtree(out, ignore_errors=True)


_MEDIANS = (
    "fps", "cpu_us", "producer_p50_us", "producer_p99_us", "producer_max_us", "waits",
    "free_p50_us", "free_p99_us", "start_s",
    "producer_mb", "storage_mb", "total_mb", "max_queue", "frame_bytes",
)  # fmt: skip


def _median_row(game: str, mode: str, frames: int, runs: list[dict]) -> WriterResult:
    row = WriterResult(game, mode, len(runs), frames)
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        row.error = errors[0]
        return row
    for key in _MEDIANS:
        setattr(row, key, statistics.median(r[key] for r in runs))
    if mode != "zstd":
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
        n = frames or WRITERS_FRAMES.get(game, DEFAULT_FRAMES[game])
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
        limit = game_rows[-1]
        for row in game_rows:
            if limit.error or row.error:
                continue
            row.fps_vs_zstd = row.fps / limit.fps if limit.fps else None
            row.cpu_vs_zstd = row.cpu_us / limit.cpu_us if limit.cpu_us else None
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
    ("cpu_vs_zstd", "cpu/zstd", "{:.2f}"),
    ("producer_p50_us", "p50 us", "{:.1f}"),
    ("producer_p99_us", "p99 us", "{:.1f}"),
    ("producer_max_us", "max us", "{:.0f}"),
    ("waits", "waited", "{:.0f}"),
    ("free_p50_us", "no-wait p50", "{:.1f}"),
    ("free_p99_us", "no-wait p99", "{:.1f}"),
    ("start_s", "start s", "{:.2f}"),
    ("producer_mb", "producer MB", "{:.1f}"),
    ("storage_mb", "storage MB", "{:.1f}"),
    ("total_mb", "both PSS MB", "{:.1f}"),
    ("max_queue", "max q", "{:.0f}"),
    ("frame_bytes", "B/frame", "{:.0f}"),
    ("verified", "verified", "{}"),
)
