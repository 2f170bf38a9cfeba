"""``framestore bench``: throughput, producer cost, size and memory against baselines.

Every pipeline stores the SAME frames in the SAME run, each into a fresh temporary
directory, so ratios between rows are meaningful on the machine that produced them:

==============  ===========================================================================
``framestore``  ``FrameStore.open`` + ``recorder(env_id)`` + ``record_step`` + ``close``
``sqlite-b64``  the earlier app: base64 JSON per frame, encoded on the producer, inserted
                into a SQLite row by a writer thread fed by an unbounded ``queue.Queue``
``png``         one PNG file per frame, saved on the producer thread (Pillow defaults)
``hdf5-lzf``    h5py dataset with lzf chunks of 100 frames (only when h5py is importable)
``zstd``        plain zstd level 3 over 64-frame chunks appended to one file, no metadata,
                single-threaded on the producer: the limit the others are compared with
==============  ===========================================================================

"End-to-end" time runs from opening the output to the moment everything is durable
(``close()`` returned; baselines fsync their files). "Producer cost" is
``perf_counter_ns`` around the one call the producer makes per step. Peak memory is the
RSS high-water mark (sampled by a thread with psutil) minus the RSS just before the
pipeline started; each pipeline runs in a forked child so allocator state left by one
pipeline cannot hide the next one's growth.

Other modes: ``pacing`` (a fixed-rate producer loop with and without recording: does the
writer's Python work steal time from a 60 Hz loop?), ``overload`` (a producer far faster
than the writer: memory must stay bounded under both queue policies) and ``stress``
(replay at 1x, 10x and maximum rate with tiny buffers: must always finish).
"""

from __future__ import annotations

import base64
import csv
import functools
import gc
import json
import multiprocessing
import os
import queue
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

GAMES = {
    "assault": "ALE/Assault-v5",
    "carracing": "CarRacing-v3",
    "noise": "ALE/Assault-v5",  # Assault-shaped random pixels, recorded with Assault's preset
}
# Defaults sized so `framestore bench --game all` takes about 2-3 minutes on 2 cores.
DEFAULT_FRAMES = {"assault": 5000, "carracing": 600, "noise": 2000}
NOISE_SHAPE = (210, 160, 3)
PIPELINES = ("framestore", "sqlite-b64", "png", "hdf5-lzf", "zstd")
LIMIT = "zstd"
MEMORY_SLACK = 64 * 1024 * 1024  # the overload target: peak RSS <= queue_bytes + this


# --------------------------------------------------------------------------- frame sources
@dataclass
class FrameSet:
    """Frames of one game plus the step data recorded with them.

    ``episodes`` holds ``(start, stop)`` index ranges into the per-step lists; row
    ``start`` of each episode is the reset (``action`` None).
    """

    game: str
    env_id: str
    frames: list[np.ndarray]
    actions: list[Any]
    rewards: list[float]
    terminated: list[bool]
    truncated: list[bool]
    infos: list[dict[str, Any]]
    episodes: list[tuple[int, int]]
    action_space: Any = None
    render_fps: float = 60.0

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def frame_bytes(self) -> int:
        return self.frames[0].nbytes if self.frames else 0

    def head(self, n: int) -> FrameSet:
        """The first ``n`` steps (episodes cut to fit)."""
        eps = [(a, min(b, n)) for a, b in self.episodes if a < n]
        return FrameSet(
            self.game,
            self.env_id,
            self.frames[:n],
            self.actions[:n],
            self.rewards[:n],
            self.terminated[:n],
            self.truncated[:n],
            self.infos[:n],
            eps,
            self.action_space,
            self.render_fps,
        )


def capture(game: str, n: int, *, seed: int = 0) -> FrameSet:
    """``n`` frames of ``game`` (``assault``, ``carracing`` or ``noise``), captured once.

    Real games are played with a random policy seeded with ``seed`` and ``env.render()``
    is taken after the reset and after every step; episodes restart with ``seed + k``.
    ``noise`` is uniformly random pixels (the worst case for every codec) at Atari size.
    """
    if game not in GAMES:
        raise ValueError(f"unknown game {game!r}; choose one of {', '.join(GAMES)}")
    if n < 1:
        raise ValueError("frame count must be at least 1")
    if game == "noise":
        return _noise(n, seed)
    from framestore.envs import make_env

    env = make_env(GAMES[game])
    try:
        fs = FrameSet(game, GAMES[game], [], [], [], [], [], [], [], env.action_space)
        fs.render_fps = float(env.metadata.get("render_fps") or 60)
        env.action_space.seed(seed)
        episode = 0
        while len(fs.frames) < n:
            start = len(fs.frames)
            _, info = env.reset(seed=seed + episode)
            episode += 1
            _append(fs, env.render(), None, 0.0, False, False, info)
            done = False
            while not done and len(fs.frames) < n:
                action = env.action_space.sample()
                _, reward, term, trunc, info = env.step(action)
                _append(fs, env.render(), action, float(reward), term, trunc, info)
                done = term or trunc
            fs.episodes.append((start, len(fs.frames)))
        return fs
    finally:
        env.close()


def _append(fs: FrameSet, frame, action, reward, term, trunc, info) -> None:
    fs.frames.append(np.ascontiguousarray(frame))
    fs.actions.append(action)
    fs.rewards.append(reward)
    fs.terminated.append(bool(term))
    fs.truncated.append(bool(trunc))
    fs.infos.append({k: _plain(v) for k, v in info.items()})


def _plain(v: Any) -> Any:
    """numpy scalars (ALE's reset info holds a tuple of uint32 seeds) as Python values."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v


def _noise(n: int, seed: int) -> FrameSet:
    import gymnasium as gym

    rng = np.random.default_rng(seed)
    block = rng.integers(0, 256, size=(n, *NOISE_SHAPE), dtype=np.uint8)
    actions = [None] + [int(a) for a in rng.integers(0, 7, size=n - 1)]
    return FrameSet(
        "noise",
        GAMES["noise"],
        list(block),
        actions,
        [0.0] * n,
        [False] * n,
        [False] * n,
        [{"lives": 4, "episode_frame_number": 4 * i, "frame_number": 4 * i} for i in range(n)],
        [(0, n)],
        gym.spaces.Discrete(7),
    )


# --------------------------------------------------------------------------- measuring
class RssSampler:
    """Samples this process's RSS on a thread; ``peak`` minus ``baseline`` is growth."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = 0
        self.peak = 0
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _rss(self) -> int:
        return self._proc.memory_info().rss

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._rss())

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.baseline)

    def __enter__(self) -> RssSampler:
        gc.collect()
        _trim_heap()
        self.baseline = self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so that memory freed earlier, and
    still resident, cannot absorb the measured pipeline's allocations unseen."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _percentiles_us(costs_ns: np.ndarray) -> tuple[float, float, float]:
    if costs_ns.size == 0:
        return 0.0, 0.0, 0.0
    p50, p99 = np.percentile(costs_ns, [50, 99])
    return float(p50) / 1e3, float(p99) / 1e3, float(costs_ns.max()) / 1e3


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _in_child(
    fn: Callable[..., Any],
    *args: Any,
    timeout: float = 900.0,
    isolate: bool = True,
    **kwargs: Any,
):
    """Run ``fn(*args, **kwargs)`` in a forked child (fresh allocator state for memory
    figures) and return its result; in-process where fork is unavailable or ``isolate``
    is False."""
    if kwargs:
        fn = functools.partial(fn, **kwargs)
    if not isolate or "fork" not in multiprocessing.get_all_start_methods():
        return fn(*args)
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def target() -> None:
        try:
            send.send(("ok", fn(*args)))
        except BaseException as e:  # noqa: BLE001 - reported to the parent as a row error
            send.send(("error", f"{type(e).__name__}: {e}"))
        finally:
            send.close()

    proc = ctx.Process(target=target, name="bench-child", daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            proc.kill()
            raise TimeoutError(f"benchmark child did not finish within {timeout:g}s")
        status, value = recv.recv()
    except EOFError:
        status, value = "error", "benchmark child died without a result"
    finally:
        recv.close()
        proc.join(10)
    if status == "error":
        raise RuntimeError(value)
    return value


# --------------------------------------------------------------------------- pipelines
@dataclass
class _Run:
    frames: int
    seconds: float
    costs_ns: np.ndarray
    frame_bytes: int  # bytes holding frames (framestore: its segment files)
    max_queue: int = 0
    dropped: int = 0


def _steps(fs: FrameSet) -> Iterable[tuple[int, int]]:
    """``(episode_index, step_index)`` in recording order."""
    for e, (a, b) in enumerate(fs.episodes):
        for i in range(a, b):
            yield e, i


def _pipe_framestore(fs: FrameSet, out: Path, overrides: dict[str, Any] | None) -> _Run:
    from framestore import FrameStore

    costs = np.zeros(len(fs), dtype=np.int64)
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    store = FrameStore.open(out / "bench.store")
    try:
        rec = store.recorder(
            fs.env_id,
            action_space=fs.action_space,
            overrides=overrides,
            config={"bench": fs.game},
        )
        try:
            frames, actions, rewards = fs.frames, fs.actions, fs.rewards
            terms, truncs, infos = fs.terminated, fs.truncated, fs.infos
            for e, (a, b) in enumerate(fs.episodes):
                rec.begin_episode(seed=e)
                for i in range(a, b):
                    s = clock()
                    rec.record_step(
                        frames[i], actions[i], rewards[i], terms[i], truncs[i], infos[i]
                    )
                    costs[i] = clock() - s
                rec.end_episode()
            m = rec.metrics().frames
        finally:
            rec.close()
    finally:
        store.close()
    seconds = time.perf_counter() - t0
    seg_bytes = _dir_bytes(out / "bench.store" / "segments")
    return _Run(len(fs), seconds, costs, seg_bytes, m.high_water_frames, m.frames_dropped)


def _pipe_sqlite_b64(fs: FrameSet, out: Path, _overrides: Any) -> _Run:
    """The earlier app: JSON + base64 on the producer, SQLite rows from a writer thread
    fed by an unbounded queue (commits each time it drains what is queued)."""
    q: queue.Queue = queue.Queue()  # unbounded, as it was
    path = out / "frames.db"
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            db = sqlite3.connect(path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(
                "CREATE TABLE steps (episode INTEGER, step INTEGER, action TEXT, reward REAL, "
                "terminated INTEGER, truncated INTEGER, info TEXT, frame TEXT)"
            )
            stop = False
            while not stop:
                rows = [q.get()]
                while True:
                    try:
                        rows.append(q.get_nowait())
                    except queue.Empty:
                        break
                if rows[-1] is None:
                    rows.pop()
                    stop = True
                with db:
                    db.executemany("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()
        except BaseException as e:  # noqa: BLE001 - re-raised on the producer
            errors.append(e)

    costs = np.zeros(len(fs), dtype=np.int64)
    clock = time.perf_counter_ns
    max_depth = 0
    t0 = time.perf_counter()
    thread = threading.Thread(target=writer, name="bench-sqlite-writer", daemon=True)
    thread.start()
    for e, i in _steps(fs):
        s = clock()
        f = fs.frames[i]
        frame_json = json.dumps(
            {
                "shape": list(f.shape),
                "dtype": str(f.dtype),
                "data": base64.b64encode(f.tobytes()).decode("ascii"),
            }
        )
        action = fs.actions[i]
        action_json = None if action is None else json.dumps(np.asarray(action).tolist())
        q.put(
            (
                e,
                i,
                action_json,
                fs.rewards[i],
                fs.terminated[i],
                fs.truncated[i],
                json.dumps(fs.infos[i]),
                frame_json,
            )
        )
        costs[i] = clock() - s
        depth = q.qsize()
        if depth > max_depth:
            max_depth = depth
    q.put(None)
    thread.join()
    if errors:
        raise errors[0]
    seconds = time.perf_counter() - t0
    return _Run(len(fs), seconds, costs, _dir_bytes(out), max_depth)


def _pipe_png(fs: FrameSet, out: Path, _overrides: Any) -> _Run:
    from PIL import Image

    d = out / "png"
    costs = np.zeros(len(fs), dtype=np.int64)
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    d.mkdir()
    paths = []
    for e, i in _steps(fs):
        s = clock()
        p = d / f"ep{e:04d}_{i:07d}.png"
        Image.fromarray(fs.frames[i]).save(p)
        costs[i] = clock() - s
        paths.append(p)
    for p in paths:  # durable like the others: every file and the directory
        _fsync_path(p)
    _fsync_path(d)
    seconds = time.perf_counter() - t0
    return _Run(len(fs), seconds, costs, _dir_bytes(d))


def hdf5_available() -> bool:
    try:
        import h5py  # noqa: F401
    except ImportError:
        return False
    return True


def _pipe_hdf5(fs: FrameSet, out: Path, _overrides: Any) -> _Run:
    import h5py

    chunk = 100
    shape = fs.frames[0].shape
    path = out / "frames.h5"
    costs = np.zeros(len(fs), dtype=np.int64)
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        dset = f.create_dataset(
            "frames",
            shape=(0, *shape),
            maxshape=(None, *shape),
            chunks=(chunk, *shape),
            compression="lzf",
            dtype=np.uint8,
        )
        buf = np.empty((chunk, *shape), dtype=np.uint8)
        n = 0
        written = 0

        def write_chunk(count: int) -> None:
            nonlocal written
            dset.resize(written + count, axis=0)
            dset[written : written + count] = buf[:count]
            written += count

        for _e, i in _steps(fs):
            s = clock()
            buf[n] = fs.frames[i]
            n += 1
            if n == chunk:
                write_chunk(n)
                n = 0
            costs[i] = clock() - s
        if n:
            write_chunk(n)
        f.flush()
    _fsync_path(path)
    seconds = time.perf_counter() - t0
    return _Run(len(fs), seconds, costs, _dir_bytes(out))


def _pipe_zstd(fs: FrameSet, out: Path, _overrides: Any) -> _Run:
    import zstandard

    zc = zstandard.ZstdCompressor(level=3)
    path = out / "frames.zst"
    costs = np.zeros(len(fs), dtype=np.int64)
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    with open(path, "wb") as fp:
        pending: list[np.ndarray] = []
        for _e, i in _steps(fs):
            s = clock()
            pending.append(fs.frames[i])
            if len(pending) == 64:
                fp.write(zc.compress(b"".join(f.data for f in pending)))
                pending = []
            costs[i] = clock() - s
        if pending:
            fp.write(zc.compress(b"".join(f.data for f in pending)))
        fp.flush()
        os.fsync(fp.fileno())
    seconds = time.perf_counter() - t0
    return _Run(len(fs), seconds, costs, _dir_bytes(out))


_PIPELINE_FUNCS: dict[str, Callable[[FrameSet, Path, Any], _Run]] = {
    "framestore": _pipe_framestore,
    "sqlite-b64": _pipe_sqlite_b64,
    "png": _pipe_png,
    "hdf5-lzf": _pipe_hdf5,
    "zstd": _pipe_zstd,
}


@dataclass
class PipelineResult:
    """One row of the throughput table."""

    game: str
    pipeline: str
    frames: int
    frame_shape: str
    seconds: float = 0.0
    fps: float = 0.0
    producer_p50_us: float = 0.0
    producer_p99_us: float = 0.0
    producer_max_us: float = 0.0
    bytes_per_frame: float = 0.0  # everything the pipeline left on disk
    frame_bytes_per_frame: float = 0.0  # only the bytes holding frames
    peak_mem_mb: float = 0.0
    max_queue_depth: int = 0
    dropped: int = 0
    fps_vs_zstd: float | None = None
    frame_bytes_vs_zstd: float | None = None
    verified: bool | None = None  # framestore: frames read back bit-exact
    error: str | None = None
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _measure(name: str, fs: FrameSet, out: Path, overrides: dict[str, Any] | None) -> dict:
    fn = _PIPELINE_FUNCS[name]
    with RssSampler() as mem:
        run = fn(fs, out, overrides)
    total = _dir_bytes(out)
    p50, p99, mx = _percentiles_us(run.costs_ns)
    n = max(run.frames, 1)
    return {
        "seconds": run.seconds,
        "fps": run.frames / run.seconds if run.seconds > 0 else 0.0,
        "producer_p50_us": p50,
        "producer_p99_us": p99,
        "producer_max_us": mx,
        "bytes_per_frame": total / n,
        "frame_bytes_per_frame": run.frame_bytes / n,
        "peak_mem_mb": mem.growth / 2**20,
        "max_queue_depth": run.max_queue,
        "dropped": run.dropped,
    }


def verify_framestore(store_path: str | os.PathLike, fs: FrameSet) -> bool:
    """True when every frame stored by the framestore pipeline reads back bit-exact,
    in order, and none is missing."""
    from framestore import FrameStore

    with FrameStore.open(store_path, readonly=True) as store:
        i = 0
        for ep in store.episodes():
            for frame in store.iter_frames(ep.id):
                if i >= len(fs) or not np.array_equal(frame, fs.frames[i]):
                    return False
                i += 1
    return i == len(fs)


def run_pipeline(
    name: str,
    fs: FrameSet,
    *,
    workdir: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    isolate: bool = True,
    verify: bool = True,
    timeout: float = 900.0,
) -> PipelineResult:
    """Measure one pipeline on ``fs`` in a fresh temporary directory (removed after)."""
    if name not in _PIPELINE_FUNCS:
        raise ValueError(f"unknown pipeline {name!r}; choose from {', '.join(PIPELINES)}")
    row = PipelineResult(fs.game, name, len(fs), "x".join(map(str, fs.frames[0].shape)))
    if name == "hdf5-lzf" and not hdf5_available():
        row.skipped = "h5py not installed (pip install h5py)"
        return row
    out = Path(tempfile.mkdtemp(prefix=f"fsbench-{name}-", dir=workdir))
    try:
        try:
            values = _in_child(_measure, name, fs, out, overrides, timeout=timeout, isolate=isolate)
        except Exception as e:  # one broken pipeline must not end the whole bench
            row.error = f"{type(e).__name__}: {e}" if not isinstance(e, RuntimeError) else str(e)
            return row
        for k, v in values.items():
            setattr(row, k, v)
        if name == "framestore" and verify:
            row.verified = verify_framestore(out / "bench.store", fs)
        return row
    finally:
        shutil.rmtree(out, ignore_errors=True)


def add_ratios(rows: Sequence[PipelineResult]) -> None:
    """Fill ``fps_vs_zstd`` and ``frame_bytes_vs_zstd`` from the plain-zstd row of the
    same game in the same run."""
    limits = {r.game: r for r in rows if r.pipeline == LIMIT and not (r.error or r.skipped)}
    for r in rows:
        lim = limits.get(r.game)
        if lim is None or r.error or r.skipped:
            continue
        r.fps_vs_zstd = r.fps / lim.fps if lim.fps else None
        r.frame_bytes_vs_zstd = (
            r.frame_bytes_per_frame / lim.frame_bytes_per_frame
            if lim.frame_bytes_per_frame
            else None
        )


def run_bench(
    games: Sequence[str] = ("assault", "carracing", "noise"),
    *,
    frames: int | dict[str, int] | None = None,
    pipelines: Sequence[str] = PIPELINES,
    workdir: str | os.PathLike | None = None,
    seed: int = 0,
    isolate: bool = True,
    verify: bool = True,
    overrides: dict[str, Any] | None = None,
    repeat: int = 1,
    progress: Callable[[str], None] | None = None,
    durabilities: Sequence[str] = (),
) -> list[PipelineResult]:
    """Capture each game's frames once, then measure every pipeline on them (``repeat``
    times each, keeping the fastest run: other load on the machine only slows runs down).

    ``frames`` is one count for every game or a per-game dict (defaults:
    ``DEFAULT_FRAMES``). Returns one row per (game, pipeline), ratios filled in.
    """
    rows: list[PipelineResult] = []
    for game in games:
        n = frames.get(game) if isinstance(frames, dict) else frames
        n = n or DEFAULT_FRAMES[game]
        if progress:
            progress(f"capturing {n} {game} frames")
        fs = capture(game, n, seed=seed)
        for name in pipelines:
            # framestore once per asked durability profile (labelled), else once.
            variants = [(d, {**(overrides or {}), "durability": d}) for d in durabilities]
            if name != "framestore" or not variants:
                variants = [(None, overrides)]
            for profile, ovr in variants:
                if progress:
                    progress(f"{game}: {name}" + (f" ({profile})" if profile else ""))
                tries = [
                    run_pipeline(
                        name, fs, workdir=workdir, overrides=ovr, isolate=isolate, verify=verify
                    )
                    for _ in range(max(1, repeat))
                ]
                # Best of N: interference from other processes only ever slows a run down.
                best = max(tries, key=lambda r: (r.error is None, r.fps))
                if profile:
                    best.pipeline = f"{name}/{profile}"
                rows.append(best)
        del fs
        gc.collect()
    add_ratios(rows)
    return rows


# --------------------------------------------------------------------------- output
_TABLE = (
    ("game", "game", "{}"),
    ("pipeline", "pipeline", "{}"),
    ("frames", "frames", "{}"),
    ("fps", "frames/s", "{:.0f}"),
    ("fps_vs_zstd", "x zstd", "{:.2f}"),
    ("producer_p50_us", "p50 us", "{:.1f}"),
    ("producer_p99_us", "p99 us", "{:.1f}"),
    ("producer_max_us", "max us", "{:.0f}"),
    ("frame_bytes_per_frame", "B/frame", "{:.0f}"),
    ("frame_bytes_vs_zstd", "x zstd", "{:.2f}"),
    ("bytes_per_frame", "B/frame all", "{:.0f}"),
    ("peak_mem_mb", "peak MB", "{:.1f}"),
    ("max_queue_depth", "max q", "{}"),
    ("dropped", "dropped", "{}"),
)


def format_table(rows: Sequence[Any], columns: Sequence[tuple[str, str, str]] = _TABLE) -> str:
    """A plain-text table; rows are dataclasses or dicts. Errors and skips get a note."""
    dicts = [r if isinstance(r, dict) else asdict(r) for r in rows]
    cells = [[title for _k, title, _f in columns]]
    notes = []
    for d in dicts:
        line = []
        for key, _title, fmt in columns:
            v = d.get(key)
            line.append("-" if v is None else fmt.format(v))
        problem = d.get("error") or d.get("skipped")
        if problem:
            line = line[:2] + ["-"] * (len(columns) - 2)
            notes.append(f"  {d.get('game', '')}/{d.get('pipeline', '')}: {problem}")
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    out = []
    for j, line in enumerate(cells):
        out.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out + notes)


def write_csv(rows: Sequence[Any], path: str | os.PathLike) -> None:
    """Every field of every row, one row per line."""
    dicts = [r if isinstance(r, dict) else asdict(r) for r in rows]
    if not dicts:
        Path(path).write_text("")
        return
    names = list(dicts[0])
    for d in dicts[1:]:
        names += [k for k in d if k not in names]
    with open(path, "w", newline="") as fp:
        w = csv.DictWriter(fp, fieldnames=names)
        w.writeheader()
        for d in dicts:
            w.writerow({k: ("" if d.get(k) is None else d.get(k)) for k in names})


# --------------------------------------------------------------------------- pacing
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


def sleep_until_ns(target_ns: int) -> None:
    """Sleep, then spin the last millisecond; the spin yields the GIL every turn so
    background threads are not starved by the waiting loop itself."""
    clock = time.perf_counter_ns
    while True:
        remaining = target_ns - clock()
        if remaining <= 0:
            return
        if remaining > 1_500_000:
            time.sleep((remaining - 1_000_000) / 1e9)
        else:
            time.sleep(0)


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
    from framestore import FrameStore

    if hz <= 0 or envs < 1:
        raise ValueError("hz must be positive and envs at least 1")
    ticks = max(1, int(round(seconds * hz)))
    period = int(1e9 / hz)
    late = np.zeros(ticks, dtype=np.int64)
    work = np.zeros(ticks, dtype=np.int64)
    n = len(fs)
    out = Path(tempfile.mkdtemp(prefix="fsbench-pacing-", dir=workdir))
    stores, recs = [], []
    dropped = max_q = 0
    close_s = 0.0
    try:
        if record:
            for k in range(envs):
                st = FrameStore.open(out / f"env{k}.store")
                stores.append(st)
                rec = st.recorder(fs.env_id, action_space=fs.action_space, overrides=overrides)
                recs.append(rec)
                rec.begin_episode(seed=k)
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
                        fs.frames[i],
                        fs.actions[i],
                        fs.rewards[i],
                        False,
                        False,
                        fs.infos[i],
                    )
                else:
                    sink += int(fs.frames[i][0, 0, 0])  # touch the frame, as a display would
            work[t] = clock() - now
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
    lp50, lp99, lmax = _percentiles_us(late)
    wp50, wp99, wmax = _percentiles_us(work)
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
) -> list[PacingResult]:
    """For each game: the loop alone, then the loop recording with framestore."""
    rows = []
    for game in games:
        n = frames or min(DEFAULT_FRAMES[game], max(1, int(hz * seconds)))
        if progress:
            progress(f"capturing {n} {game} frames")
        fs = capture(game, n)
        for record in (False, True):
            if progress:
                progress(f"{game}: {hz:g} Hz x {envs} env(s), {'recording' if record else 'idle'}")
            rows.append(
                _in_child(
                    pacing, fs, hz=hz, envs=envs, seconds=seconds, record=record, workdir=workdir
                )
            )
    return rows


# --------------------------------------------------------------------------- overload
@dataclass
class OverloadResult:
    """A producer far faster than the writer: memory must stay bounded."""

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
    error: str | None = None


OVERLOAD_TABLE = (
    ("policy", "policy", "{}"),
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
    ("close_s", "close s", "{:.2f}"),
)


def _overload_one(
    fs: FrameSet, policy: str, level: int, queue_bytes: int, seconds: float, out: Path
) -> dict:
    import zstandard

    from framestore import FrameStore

    overrides = {
        "level": level,
        "policy": policy,
        "queue_bytes": queue_bytes,
        "block_timeout": max(60.0, seconds * 10),
    }
    # The writer caps a chunk at a quarter of the queue's byte bound (service.py).
    chunk = min(64 * fs.frame_bytes, max(fs.frame_bytes, queue_bytes // 4))
    ctx = zstandard.ZstdCompressionParameters.from_level(level, source_size=chunk)
    put = 0
    error = None
    with RssSampler() as mem:
        t0 = time.perf_counter()
        with FrameStore.open(out / "overload.store") as store:
            rec = store.recorder(fs.env_id, action_space=fs.action_space, overrides=overrides)
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
    return {
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
        "peak_mem_mb": mem.growth / 2**20,
        "bound_mb": bound / 2**20,
        "within_bound": mem.growth <= bound and m.high_water_bytes <= queue_bytes,
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
) -> list[OverloadResult]:
    """Feed noisy frames as fast as the producer can while the writer compresses at a
    slow zstd ``level`` with a small ``queue_bytes``; one row per policy."""
    fs = fs or capture("noise", 256)
    rows = []
    for policy in policies:
        out = Path(tempfile.mkdtemp(prefix=f"fsbench-overload-{policy}-", dir=workdir))
        try:
            d = _in_child(
                _overload_one, fs, policy, level, queue_bytes, seconds, out, isolate=isolate
            )
        finally:
            shutil.rmtree(out, ignore_errors=True)
        rows.append(OverloadResult(**d))
    return rows


# --------------------------------------------------------------------------- stress
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


def field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


__all__ = [
    "FrameSet",
    "PipelineResult",
    "PacingResult",
    "OverloadResult",
    "StressResult",
    "capture",
    "run_pipeline",
    "run_bench",
    "add_ratios",
    "verify_framestore",
    "pacing",
    "run_pacing",
    "overload",
    "stress",
    "format_table",
    "write_csv",
    "hdf5_available",
]
