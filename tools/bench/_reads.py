"""``framestore bench --reads``: chunk length and zstd level, writing and reading.

For each configuration (framestore with ``chunk_frames`` and ``level`` overridden, or the
game's preset as it is) and for plain zstd (level 3 over 64-frame chunks, one file: the
limit), in ONE run, the configurations interleaved round by round (the order rotating):

- **write**: the same run as ``bench --writers`` (``measure_write``: thread placement,
  the same harness for every row): frames/s, CPU µs per frame, bytes holding frames;
- **random**: single frames at random steps through the public API,
  ``FrameStore.read_frame`` on a freshly opened store, every read a cache miss (each
  read's chunk is one the last ``RECENT`` reads did not touch; ``misses`` counts the
  chunks decoded per read: 1.00 = every read decoded its chunk); plain zstd decodes the
  chunk holding the frame (offsets kept in memory) and copies the frame out;
- **sequential**: every frame once in step order, ``iter_frames`` over every episode
  (read-only views, no copy), against decompressing the plain zstd file chunk by chunk
  into arrays and taking each frame's view.

Each write and each read pass runs in a forked child; the medians over the rounds are
reported with ratios to plain zstd from the same run. The first round checks that every
frame read back (random and sequential) is bit-exact.
"""

from __future__ import annotations

import os
import random
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
from ._frames import FrameSet, capture
from ._measure import in_child, settle_allocator
from ._writers import measure_write

__all__ = ["READS_TABLE", "ReadsResult", "run_reads"]

#: Random reads per pass, and how many recent reads' chunks a read avoids (more than
#: the reader's chunk cache holds, so every read is a miss).
RANDOM_READS = 1000
RECENT = 24
ZSTD = "zstd"


@dataclass(frozen=True)
class ReadConfig:
    """One row: ``chunk_frames`` / ``level`` None keep the preset's value."""

    chunk_frames: int | None = None
    level: int | None = None
    part_frames: int | None = None

    @property
    def name(self) -> str:
        if self.chunk_frames is None and self.level is None and self.part_frames is None:
            return "preset"
        name = f"c{self.chunk_frames or '-'} l{self.level if self.level is not None else '-'}"
        return name if self.part_frames is None else f"{name} p{self.part_frames}"

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.chunk_frames is not None:
            out["chunk_frames"] = self.chunk_frames
        if self.level is not None:
            out["level"] = self.level
        if self.part_frames is not None:
            out["part_frames"] = self.part_frames
        return out


@dataclass
class ReadsResult:
    """One configuration of one game (medians over the rounds)."""

    game: str
    config: str  # "preset", "c16 l3", ... or "zstd" (level 3, 64-frame chunks)
    chunk_frames: int | None
    level: int | None
    rounds: int
    frames: int
    write_fps: float = 0.0
    write_cpu_us: float = 0.0  # CPU per frame written, all threads and children
    write_cpu_vs_zstd: float | None = None
    frame_bytes: float = 0.0  # bytes holding frames, per frame
    bytes_vs_zstd: float | None = None
    random_p50_us: float = 0.0
    random_p99_us: float = 0.0
    random_vs_zstd: float | None = None  # p50 ratio (lower is better)
    misses: float = 0.0  # chunks decoded per random read
    seq_fps: float = 0.0
    seq_vs_zstd: float | None = None  # frames/s ratio (higher is better)
    verified: bool | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------- the picks
def _spread(chunk_of: Sequence[Any], n: int, rng: random.Random) -> list[int]:
    """``n`` random indexes whose chunk (``chunk_of[i]``) is none of the last
    ``RECENT`` picks' chunks (all chunks when there are too few to avoid)."""
    by_chunk: dict[Any, list[int]] = {}
    for i, c in enumerate(chunk_of):
        by_chunk.setdefault(c, []).append(i)
    chunks = list(by_chunk)
    avoid = min(RECENT, len(chunks) - 1)
    recent: list[Any] = []
    picks: list[int] = []
    while len(picks) < n:
        c = rng.choice(chunks)
        if c in recent:
            continue
        picks.append(rng.choice(by_chunk[c]))
        recent.append(c)
        if len(recent) > avoid:
            recent.pop(0)
    return picks


def _global_index(fs: FrameSet) -> dict[tuple[int, int], int]:
    """``(episode number, step) -> frame index`` in recording order."""
    return {(e, i - a): i for e, (a, b) in enumerate(fs.episodes) for i in range(a, b)}


# ----------------------------------------------------------------- framestore reads
def _read_store(path: Path, fs: FrameSet, check: bool, seed: int) -> dict:
    from framestore import FrameStore

    settle_allocator()
    index = _global_index(fs)
    with FrameStore.open(path, readonly=True) as store:
        eps = [ep.id for ep in store.episodes()]
        steps = [
            (e, step, loc[:2])
            for e, eid in enumerate(eps)
            for step, loc in store.frame_locations(eid)
            if loc is not None
        ]
    picks = _spread([s[2] for s in steps], RANDOM_READS, random.Random(seed))
    costs = np.zeros(len(picks), dtype=np.int64)
    ok = True
    clock = time.perf_counter_ns
    with FrameStore.open(path, readonly=True) as store:  # fresh: nothing cached
        decoded0 = store.reader.chunks_decoded
        for k, p in enumerate(picks):
            e, step, _chunk = steps[p]
            s = clock()
            frame = store.read_frame(eps[e], step)
            costs[k] = clock() - s
            if check:
                ok &= bool(np.array_equal(frame, fs.frames[index[(e, step)]]))
        misses = (store.reader.chunks_decoded - decoded0) / len(picks)
    with FrameStore.open(path, readonly=True) as store:
        t0 = time.perf_counter()
        n = 0
        for eid in eps:
            for frame in store.iter_frames(eid):
                n += 1
                if check:
                    ok &= bool(np.array_equal(frame, fs.frames[n - 1]))
        seconds = time.perf_counter() - t0
    ok &= n == len(fs)
    return _read_result(costs, misses, n / seconds, ok)


def _read_result(costs: np.ndarray, misses: float, seq_fps: float, ok: bool) -> dict:
    p50, p99 = np.percentile(costs, [50, 99]) / 1e3
    return {
        "random_p50_us": float(p50),
        "random_p99_us": float(p99),
        "misses": misses,
        "seq_fps": seq_fps,
        "verified": ok,
    }


# ----------------------------------------------------------------- plain zstd reads
def _read_zstd(path: Path, offsets: list[int], fs: FrameSet, check: bool, seed: int) -> dict:
    import zstandard

    settle_allocator()
    shape = fs.frames[0].shape
    per = 64
    ends = [*offsets[1:], os.path.getsize(path)]
    picks = _spread([i // per for i in range(len(fs))], RANDOM_READS, random.Random(seed))
    costs = np.zeros(len(picks), dtype=np.int64)
    ok = True
    clock = time.perf_counter_ns
    zd = zstandard.ZstdDecompressor()
    fd = os.open(path, os.O_RDONLY)
    try:
        for k, i in enumerate(picks):
            s = clock()
            c = i // per
            raw = zd.decompress(os.pread(fd, ends[c] - offsets[c], offsets[c]))
            frame = np.frombuffer(raw, np.uint8).reshape(-1, *shape)[i % per].copy()
            costs[k] = clock() - s
            if check:
                ok &= bool(np.array_equal(frame, fs.frames[i]))
        t0 = time.perf_counter()
        n = 0
        for c, off in enumerate(offsets):
            chunk = np.frombuffer(
                zd.decompress(os.pread(fd, ends[c] - off, off)), np.uint8
            ).reshape(-1, *shape)
            for frame in chunk:
                n += 1
                if check:
                    ok &= bool(np.array_equal(frame, fs.frames[n - 1]))
        seconds = time.perf_counter() - t0
    finally:
        os.close(fd)
    return _read_result(costs, 1.0, n / seconds, ok and n == len(fs))


# ----------------------------------------------------------------- one round
def _write_zstd_offsets(fs: FrameSet, out: Path) -> list[int]:
    """The zstd file again (untimed), for its chunk offsets."""
    zf = ZstdFile(out / "frames.zst")
    try:
        zf.record(fs, np.zeros(len(fs), dtype=np.int64))
    finally:
        zf.close()
    return zf.offsets


def _one(cfg: ReadConfig | None, fs: FrameSet, workdir: Any, check: bool, seed: int) -> dict:
    """Write (timed, in a child), then read (in another child) one configuration;
    ``cfg`` None is plain zstd."""
    out = Path(tempfile.mkdtemp(prefix="fsbench-reads-", dir=workdir))
    try:
        if cfg is None:
            w = in_child(measure_write, ZSTD, fs, out, {})
            offsets = in_child(_write_zstd_offsets, fs, out)
            r = in_child(_read_zstd, out / "frames.zst", offsets, fs, check, seed)
        else:
            w = in_child(measure_write, "thread", fs, out, cfg.overrides())
            r = in_child(_read_store, out / "bench.store", fs, check, seed)
        return {
            "write_fps": w["fps"],
            "write_cpu_us": w["cpu_us"],
            "frame_bytes": w["frame_bytes"],
            **r,
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


_MEDIANS = (
    "write_fps", "write_cpu_us", "frame_bytes", "random_p50_us", "random_p99_us", "misses",
    "seq_fps",
)  # fmt: skip


def _row(game: str, cfg: ReadConfig | None, frames: int, runs: list[dict]) -> ReadsResult:
    if cfg is None:
        row = ReadsResult(game, ZSTD, 64, 3, len(runs), frames)
    else:
        row = ReadsResult(game, cfg.name, cfg.chunk_frames, cfg.level, len(runs), frames)
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        row.error = errors[0]
        return row
    for key in _MEDIANS:
        setattr(row, key, statistics.median(r[key] for r in runs))
    checked = [r["verified"] for r in runs if r.get("checked")]
    row.verified = all(checked) if checked else None
    return row


def _ratios(rows: list[ReadsResult]) -> None:
    lim = rows[-1]
    if lim.error:
        return
    for r in rows:
        if r.error:
            continue
        r.write_cpu_vs_zstd = r.write_cpu_us / lim.write_cpu_us if lim.write_cpu_us else None
        r.bytes_vs_zstd = r.frame_bytes / lim.frame_bytes if lim.frame_bytes else None
        r.random_vs_zstd = r.random_p50_us / lim.random_p50_us if lim.random_p50_us else None
        r.seq_vs_zstd = r.seq_fps / lim.seq_fps if lim.seq_fps else None


def run_reads(
    game: str = "assault",
    *,
    frames: int | None = None,
    chunk_frames: Sequence[int] = (),
    levels: Sequence[int] = (),
    part_frames: Sequence[int] = (),
    rounds: int = 5,
    workdir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[ReadsResult]:
    """One row per configuration (every ``chunk_frames`` x ``levels`` x
    ``part_frames``; none given: the game's preset) and one for plain zstd, medians of ``rounds`` interleaved rounds."""
    n = frames or 12_000
    if progress:
        progress(f"capturing {n} {game} frames")
    fs = capture(game, n)
    grid = [
        ReadConfig(c, lv, p)
        for c in (chunk_frames or [None])
        for lv in (levels or [None])
        for p in (part_frames or [None])
    ]
    configs: list[ReadConfig | None] = [*grid, None]
    runs: list[list[dict]] = [[] for _ in configs]
    for r in range(rounds):
        shift = r % len(configs)
        for k in [*range(shift, len(configs)), *range(shift)]:
            cfg = configs[k]
            if progress:
                name = ZSTD if cfg is None else cfg.name
                progress(f"{game}: round {r + 1}/{rounds}: {name}")
            try:
                d = _one(cfg, fs, workdir, check=r == 0, seed=r)
                d["checked"] = r == 0
            except Exception as e:  # one broken run must not end the bench
                d = {"error": f"{type(e).__name__}: {e}"}
            runs[k].append(d)
    rows = [_row(game, cfg, n, rs) for cfg, rs in zip(configs, runs, strict=True)]
    _ratios(rows)
    return rows


READS_TABLE = (
    ("game", "game", "{}"),
    ("config", "config", "{}"),
    ("rounds", "rounds", "{}"),
    ("frames", "frames", "{}"),
    ("write_fps", "write f/s", "{:.0f}"),
    ("write_cpu_us", "write cpu us/f", "{:.0f}"),
    ("write_cpu_vs_zstd", "cpu/zstd", "{:.2f}"),
    ("frame_bytes", "B/frame", "{:.0f}"),
    ("bytes_vs_zstd", "B/zstd", "{:.2f}"),
    ("random_p50_us", "random p50 us", "{:.0f}"),
    ("random_p99_us", "random p99 us", "{:.0f}"),
    ("random_vs_zstd", "rnd/zstd", "{:.2f}"),
    ("misses", "misses", "{:.2f}"),
    ("seq_fps", "seq f/s", "{:.0f}"),
    ("seq_vs_zstd", "seq/zstd", "{:.2f}"),
    ("verified", "verified", "{}"),
)
