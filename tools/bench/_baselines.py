"""The pipelines measured against each other: framestore and the ways frames are usually
stored (base64 in SQLite, PNG files, HDF5-lzf, plain zstd: the limit)."""

from __future__ import annotations

import base64
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from framestore.files import fsync_file

from ._frames import FrameSet, record_all
from ._measure import dir_bytes

__all__ = ["PIPELINE_FUNCS", "PipelineRun", "ZstdFile", "hdf5_available"]


@dataclass
class PipelineRun:
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


def _pipe_framestore(fs: FrameSet, out: Path, overrides: dict[str, Any] | None) -> PipelineRun:
    from framestore import FrameStore

    costs = np.zeros(len(fs), dtype=np.int64)
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
            record_all(rec, fs, costs)
            m = rec.metrics().frames
        finally:
            rec.close()
    finally:
        store.close()
    seconds = time.perf_counter() - t0
    seg_bytes = dir_bytes(out / "bench.store" / "segments")
    return PipelineRun(len(fs), seconds, costs, seg_bytes, m.high_water_frames, m.frames_dropped)


def _pipe_sqlite_b64(fs: FrameSet, out: Path, _overrides: Any) -> PipelineRun:
    """The earlier app: JSON + base64 on the producer, SQLite rows from a writer thread
    fed by an unbounded queue (commits each time it drains what is queued)."""
    q: queue.Queue = queue.Queue()  # unbounded, as it was
    errors: list[BaseException] = []
    costs = np.zeros(len(fs), dtype=np.int64)
    clock = time.perf_counter_ns
    max_depth = 0
    t0 = time.perf_counter()
    thread = threading.Thread(
        target=_sqlite_writer,
        args=(out / "frames.db", q, errors),
        name="bench-sqlite-writer",
        daemon=True,
    )
    thread.start()
    for e, i in _steps(fs):
        s = clock()
        q.put(_b64_row(fs, e, i))
        costs[i] = clock() - s
        depth = q.qsize()
        if depth > max_depth:
            max_depth = depth
    q.put(None)
    thread.join()
    if errors:
        raise errors[0]
    seconds = time.perf_counter() - t0
    return PipelineRun(len(fs), seconds, costs, dir_bytes(out), max_depth)


def _b64_row(fs: FrameSet, e: int, i: int) -> tuple[Any, ...]:
    """One step as the earlier app stored it: JSON text, the frame base64-encoded."""
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
    info_json = json.dumps(fs.infos[i])
    return (
        e,
        i,
        action_json,
        fs.rewards[i],
        fs.terminated[i],
        fs.truncated[i],
        info_json,
        frame_json,
    )


def _sqlite_writer(path: Path, q: queue.Queue, errors: list[BaseException]) -> None:
    """Insert what is queued, one commit per drain, until the None sentinel."""
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


def _pipe_png(fs: FrameSet, out: Path, _overrides: Any) -> PipelineRun:
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
        fsync_file(p)
    fsync_file(d)
    seconds = time.perf_counter() - t0
    return PipelineRun(len(fs), seconds, costs, dir_bytes(d))


def hdf5_available() -> bool:
    try:
        import h5py  # noqa: F401
    except ImportError:
        return False
    return True


def _pipe_hdf5(fs: FrameSet, out: Path, _overrides: Any) -> PipelineRun:
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
    fsync_file(path)
    seconds = time.perf_counter() - t0
    return PipelineRun(len(fs), seconds, costs, dir_bytes(out))


class ZstdFile:
    """Plain zstd over fixed-length chunks appended to one file, no metadata, on the
    caller's thread: the limit. ``offsets`` holds where each chunk starts (the index a
    reader would keep), ``chunk`` frames a chunk."""

    def __init__(self, path: Path, *, level: int = 3, chunk: int = 64):
        import zstandard

        self.path = path
        self.chunk = chunk
        self.offsets: list[int] = []
        self._zc = zstandard.ZstdCompressor(level=level)
        self._fp = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._pos = 0

    def _write(self, frames: list[np.ndarray]) -> None:
        data = self._zc.compress(b"".join(f.data for f in frames))
        self.offsets.append(self._pos)
        self._fp.write(data)
        self._pos += len(data)

    def record(self, fs: FrameSet, costs: np.ndarray) -> None:
        """Every frame of ``fs``; ``costs[i]``: nanoseconds of the i-th step."""
        clock = time.perf_counter_ns
        pending: list[np.ndarray] = []
        for _e, i in _steps(fs):
            s = clock()
            pending.append(fs.frames[i])
            if len(pending) == self.chunk:
                self._write(pending)
                pending = []
            costs[i] = clock() - s
        if pending:
            self._write(pending)

    def close(self) -> None:
        """Durable: flushed and fsynced."""
        self._fp.flush()
        os.fsync(self._fp.fileno())
        self._fp.close()


def _pipe_zstd(fs: FrameSet, out: Path, _overrides: Any) -> PipelineRun:
    costs = np.zeros(len(fs), dtype=np.int64)
    t0 = time.perf_counter()
    zf = ZstdFile(out / "frames.zst")
    try:
        zf.record(fs, costs)
    finally:
        zf.close()
    seconds = time.perf_counter() - t0
    return PipelineRun(len(fs), seconds, costs, dir_bytes(out))


PIPELINE_FUNCS: dict[str, Callable[[FrameSet, Path, Any], PipelineRun]] = {
    "framestore": _pipe_framestore,
    "sqlite-b64": _pipe_sqlite_b64,
    "png": _pipe_png,
    "hdf5-lzf": _pipe_hdf5,
    "zstd": _pipe_zstd,
}
