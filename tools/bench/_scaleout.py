"""Scale-out: frames/s decoded by ``framestore.ray.read_store`` with 1 and 2 read tasks
against single-process ``iter_frames``, from a local store and from the same store
published to S3 (moto's server on 127.0.0.1), and the readers' peak memory.

The frames are recorded once into a store (the game's preset, zstd), published to a
local moto server when moto is installed, and read by every reader in turn. Ray runs on
this machine only (``ray.init(num_cpus=2)`` bound to 127.0.0.1), started before the
timings. Each Ray row is timed from ``read_store`` (planning included) until every frame
has been decoded and consumed where it was read: a ``map_batches`` fused into the read
tasks takes each frame's CRC-32 (as a training step on the workers would take the
frames), and the driver compares the CRCs with the recorded frames'; one untimed read
warms the workers up first. Peak memory is the growth of the reading process: the RSS of
this process for ``iter_frames``; for ``read_store`` the largest growth of any Ray
worker's RSS minus its shared pages (blocks a worker puts into Ray's shared-memory object
store are mapped into it), sampled every 10 ms.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._frames import FrameSet, record_store
from ._measure import RssSampler

__all__ = ["SCALEOUT_TABLE", "ScaleOutResult", "scale_out"]


@dataclass
class ScaleOutResult:
    """One reader over one source."""

    reader: str  # "iter_frames" or "read_store"
    source: str  # "local" or "s3 (moto)"
    workers: int  # read tasks running at once (1 for iter_frames)
    frames: int
    seconds: float = 0.0
    fps: float = 0.0
    peak_mem_mb: float = 0.0
    verified: bool | None = None  # every frame equal to the recorded one
    error: str | None = None
    skipped: str | None = None


SCALEOUT_TABLE = (
    ("reader", "reader", "{}"),
    ("source", "source", "{}"),
    ("workers", "workers", "{}"),
    ("frames", "frames", "{}"),
    ("seconds", "seconds", "{:.2f}"),
    ("fps", "frames/s", "{:.0f}"),
    ("peak_mem_mb", "peak MB", "{:.1f}"),
    ("verified", "exact", "{}"),
)


def scale_out(
    fs: FrameSet,
    *,
    workdir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[ScaleOutResult]:
    """Run every reader over ``fs`` recorded into a store (see the module docstring)."""
    from framestore.extras import require

    require("ray.data", extra="ray", what="bench --scale-out")
    say = progress or (lambda _msg: None)
    tmp = Path(tempfile.mkdtemp(prefix="fs-scaleout-", dir=workdir))
    try:
        store = tmp / "bench.store"
        say(f"recording {len(fs)} {fs.game} frames")
        record_store(fs, store)
        sources: list[tuple[str, str, dict | None]] = [("local", str(store), None)]
        with _moto() as s3:
            if s3 is None:
                rows = [ScaleOutResult(r, "s3 (moto)", 0, 0, skipped="moto not installed")
                        for r in ("iter_frames", "read_store")]  # fmt: skip
            else:
                say("publishing to S3 (moto)")
                sources.append(("s3 (moto)", *_publish(store, s3)))
                rows = []
            with _local_ray():
                for name, location, options in sources:
                    say(f"reading {name} with iter_frames")
                    rows.append(_iter_frames(fs, name, location, options))
                    for _batch in _read_store(location, options, 2):
                        pass  # warm the workers up (imports, first connections)
                    for workers in (1, 2):
                        say(f"reading {name} with read_store, {workers} task(s)")
                        rows.append(_ray_row(fs, name, location, options, workers))
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _moto:
    """moto's S3 server on 127.0.0.1 for the run (None when moto is not installed)."""

    def __enter__(self) -> dict | None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            self._server = None
            return None
        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        return {
            "key": "bench",
            "secret": "bench",
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        }

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.stop()


def _publish(store: Path, options: dict) -> tuple[str, dict]:
    import s3fs

    from framestore import FrameStore
    from framestore.maintenance.publish import publish

    s3fs.S3FileSystem(skip_instance_cache=True, **options).mkdir("bench")
    url = "s3://bench/store"
    with FrameStore.open(store, readonly=True) as st:
        publish(st, url, storage_options=options)
    return url, options


class _local_ray:
    """A Ray instance on this machine (2 CPUs, loopback) unless one is running."""

    def __enter__(self) -> None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # stay on 127.0.0.1
        import ray

        self._started = not ray.is_initialized()
        if self._started:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")  # fmt: skip
        ray.data.DataContext.get_current().enable_progress_bars = False

    def __exit__(self, *exc: object) -> None:
        import ray

        if self._started:
            ray.shutdown()


def _iter_frames(fs: FrameSet, name: str, location: str, options: dict | None) -> ScaleOutResult:
    import numpy as np

    from framestore import FrameStore

    row = ScaleOutResult("iter_frames", name, 1, 0)
    try:
        with RssSampler() as rss:
            t0 = time.perf_counter()
            ok = True
            i = 0
            with FrameStore.open(location, readonly=True, storage_options=options) as st:
                for ep in st.episodes():
                    for frame in st.iter_frames(ep.id):
                        ok = ok and np.array_equal(frame, fs.frames[i])
                        i += 1
            row.seconds = time.perf_counter() - t0
        row.frames, row.verified = i, ok and i == len(fs)
        row.fps = i / row.seconds
        row.peak_mem_mb = rss.growth / 2**20
    except Exception as e:  # noqa: BLE001 - a failed reader is a row with an error
        row.error = f"{type(e).__name__}: {e}"
    return row


def _digests(batch: dict[str, Any]) -> dict[str, Any]:
    """Runs in the read tasks: each frame's CRC-32 instead of the frame."""
    import zlib

    import numpy as np

    crcs = [zlib.crc32(np.ascontiguousarray(f)) for f in batch["frame"]]
    return {"episode_id": batch["episode_id"], "step": batch["step"], "crc": np.asarray(crcs)}


def _read_store(location: str, options: dict | None, workers: int) -> Any:
    from framestore.ray import read_store

    ds = read_store(location, storage_options=options, override_num_blocks=workers,
                    columns=["episode_id", "step", "frame"])  # fmt: skip
    ds = ds.map_batches(_digests, batch_format="numpy", batch_size=None)
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def _ray_row(
    fs: FrameSet, name: str, location: str, options: dict | None, workers: int
) -> ScaleOutResult:
    import zlib

    row = ScaleOutResult("read_store", name, workers, 0)
    try:
        with _WorkerRss() as rss:
            t0 = time.perf_counter()
            got: dict[tuple[int, int], int] = {}
            for batch in _read_store(location, options, workers):
                for e, s, c in zip(batch["episode_id"], batch["step"], batch["crc"], strict=True):
                    got[(int(e), int(s))] = int(c)
            row.seconds = time.perf_counter() - t0
        row.frames = len(got)
        row.fps = row.frames / row.seconds
        row.peak_mem_mb = rss.growth / 2**20
        crcs = [got[k] for k in sorted(got)]
        row.verified = crcs == [zlib.crc32(f) for f in fs.frames]
    except Exception as e:  # noqa: BLE001
        row.error = f"{type(e).__name__}: {e}"
    return row


class _WorkerRss:
    """The largest RSS growth of any Ray worker process while the block runs."""

    def __init__(self, interval: float = 0.01):
        self._interval = interval
        self._stop = threading.Event()
        self._base: dict[int, int] = {}
        self._peak: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, name="bench-ray-rss", daemon=True)

    @staticmethod
    def _workers() -> list[Any]:
        import psutil

        out = []
        for p in psutil.Process().children(recursive=True):  # our own Ray instance only
            try:
                name = p.name()
            except psutil.Error:
                continue
            if name.startswith("ray::") and not name.startswith(("ray::Dashboard", "ray::Runtime")):
                out.append(p)
        return out

    def _sample(self) -> None:
        import psutil

        for p in self._workers():
            try:
                mem = p.memory_info()
                rss = mem.rss - mem.shared
            except psutil.Error:
                continue
            self._base.setdefault(p.pid, rss)
            self._peak[p.pid] = max(self._peak.get(p.pid, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    @property
    def growth(self) -> int:
        return max((self._peak[p] - self._base[p] for p in self._peak), default=0)

    def __enter__(self) -> _WorkerRss:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
