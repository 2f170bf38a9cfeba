"""Pacing: does recording steal time from a fixed-rate (60 Hz) producer loop?"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from framestore import FrameStore, Recorder

from ._frames import DEFAULT_FRAMES, FrameSet, capture
from ._measure import in_child, percentiles_us, sleep_until_ns

__all__ = ["PACING_TABLE", "PacingResult", "pacing", "run_pacing"]


@dataclass
class PacingResult:
    """Lateness of each tick of a fixed-rate loop against its schedule."""

    game: str
    mode: str  # "no recording" | "framestore"
    hz: float
    envs: int
    ticks: int
    late_p50_us: float
    late_p99_us: float
    late_max_us: float
    missed_ticks: int  # ticks that started more than one period late
    work_p50_us: float  # producer work per tick (all envs' record_step calls)
    work_p99_us: float
    work_max_us: float
    dropped: int = 0
    max_queue_depth: int = 0
    close_s: float = 0.0  # time close() took after the loop (draining + durability)


def pacing(
    fs: FrameSet,
    *,
    hz: float = 60.0,
    envs: int = 1,
    seconds: float = 5.0,
    record: bool = True,
    workdir: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> PacingResult:
    """Drive ``envs`` environments at ``hz`` ticks per second for ``seconds`` and record
    each one's frame every tick (into its own store: one writer per environment), or
    only run the loop (``record=False``) to get the machine's own jitter."""
    if hz <= 0 or envs < 1:
        raise ValueError("hz must be positive and envs at least 1")
    ticks = max(1, int(round(seconds * hz)))
    period = int(1e9 / hz)
    out = Path(tempfile.mkdtemp(prefix="fsbench-pacing-", dir=workdir))
    stores: list[FrameStore] = []
    dropped = max_q = 0
    close_s = 0.0
    try:
        recs = _open_recorders(fs, out, envs, overrides, stores) if record else []
        late, work = _tick_loop(fs, recs, envs, ticks, period)
        for rec in recs:
            m = rec.metrics().frames
            dropped += m.frames_dropped
            max_q = max(max_q, m.high_water_frames)
        t0 = time.perf_counter()
        for rec in recs:
            rec.close()
        close_s = time.perf_counter() - t0
    finally:
        for st in stores:
            st.close()
        shutil.rmtree(out, ignore_errors=True)
    lp50, lp99, lmax = percentiles_us(late)
    wp50, wp99, wmax = percentiles_us(work)
    return PacingResult(
        fs.game,
        "framestore" if record else "no recording",
        hz,
        envs,
        ticks,
        lp50,
        lp99,
        lmax,
        int((late > period).sum()),
        wp50,
        wp99,
        wmax,
        dropped,
        max_q,
        close_s,
    )


def _open_recorders(
    fs: FrameSet,
    out: Path,
    envs: int,
    overrides: dict[str, Any] | None,
    stores: list[FrameStore],
) -> list[Recorder]:
    """One store and recorder per environment, each in an open episode; the stores are
    appended to ``stores`` as they open, so the caller closes them whatever happens."""
    recs = []
    for k in range(envs):
        st = FrameStore.open(out / f"env{k}.store")
        stores.append(st)
        rec = st.recorder(fs.env_id, action_space=fs.action_space, overrides=overrides)
        recs.append(rec)
        rec.begin_episode(seed=k)
    return recs


def _tick_loop(
    fs: FrameSet, recs: list[Recorder], envs: int, ticks: int, period: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per tick: how late it started (ns) and how long its producer work took (ns)."""
    late = np.zeros(ticks, dtype=np.int64)
    work = np.zeros(ticks, dtype=np.int64)
    n = len(fs)
    clock = time.perf_counter_ns
    start = clock() + 20_000_000
    offsets = [(k * n) // envs for k in range(envs)]
    sink = 0
    for t in range(ticks):
        target = start + t * period
        sleep_until_ns(target)
        now = clock()
        late[t] = now - target
        for k in range(envs):
            i = (offsets[k] + t) % n
            if recs:
                recs[k].record_step(
                    fs.frames[i], fs.actions[i], fs.rewards[i], False, False, fs.infos[i]
                )
            else:
                sink += int(fs.frames[i][0, 0, 0])  # touch the frame, as a display would
        work[t] = clock() - now
    return late, work


PACING_TABLE = (
    ("game", "game", "{}"),
    ("mode", "mode", "{}"),
    ("hz", "Hz", "{:g}"),
    ("envs", "envs", "{}"),
    ("ticks", "ticks", "{}"),
    ("late_p50_us", "late p50 us", "{:.0f}"),
    ("late_p99_us", "late p99 us", "{:.0f}"),
    ("late_max_us", "late max us", "{:.0f}"),
    ("missed_ticks", "missed", "{}"),
    ("work_p50_us", "work p50 us", "{:.0f}"),
    ("work_p99_us", "work p99 us", "{:.0f}"),
    ("work_max_us", "work max us", "{:.0f}"),
    ("dropped", "dropped", "{}"),
    ("max_queue_depth", "max q", "{}"),
    ("close_s", "close s", "{:.2f}"),
)


def run_pacing(
    games: Sequence[str],
    *,
    hz: float = 60.0,
    envs: int = 1,
    seconds: float = 5.0,
    frames: int | None = None,
    workdir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
    writers: Sequence[str] = (),
) -> list[PacingResult]:
    """For each game: the loop alone, then the loop recording with framestore (once per
    writer placement in ``writers``: ``thread``, ``process``; default: the host's)."""
    rows = []
    for game in games:
        n = frames or min(DEFAULT_FRAMES[game], max(1, int(hz * seconds)))
        if progress:
            progress(f"capturing {n} {game} frames")
        fs = capture(game, n)
        for writer in (None, *(writers or ("",))):
            record = writer is not None
            overrides = {"writer": writer} if writer else None
            if progress:
                what = f"recording {writer}" if record else "idle"
                progress(f"{game}: {hz:g} Hz x {envs} env(s), {what}")
            row = in_child(
                pacing,
                fs,
                hz=hz,
                envs=envs,
                seconds=seconds,
                record=record,
                workdir=workdir,
                overrides=overrides,
            )
            if writer:
                row.mode = f"framestore/{writer}"
            rows.append(row)
    return rows
