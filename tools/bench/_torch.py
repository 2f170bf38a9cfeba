"""``framestore bench --torch``: the PyTorch datasets of ``framestore.torch`` against
``iter_frames`` on the same store, in ONE run with the modes interleaved round by round
(the order rotates; the median of each is reported, so a slow moment of a shared machine
hits every mode alike):

====================  ======================================================================
``iter_frames``       ``FrameStore.iter_frames`` over every episode, one process: the limit
``iterable``          ``IterableStepDataset(batch_size=256)`` through a DataLoader with 2
                      workers: uint8 batches of 256 decoded by the dataset into reused
                      batch slots, handed to this process as handles: a training pass
                      in chunk order
``iterable, no        the same pass with the batches left in the workers (each worker
transport``           consumes its own and sends one count): the decode in 2 workers
                      alone, the ceiling of the ``iterable`` row
``iterable, items``   the same pass item by item, batched by the DataLoader (256,
                      ``collate_steps``)
``random item``       ``StepDataset[i]`` for random i in this process: per-item cost
``shuffled epoch``    ``StepDataset`` through a DataLoader, shuffle, batches of 64, 2 workers
``4-frame windows``   the same with ``window={"render": [-3, -2, -1, 0]}``
``chunk-shuffled``    ``shuffled epoch`` with ``ChunkShuffleSampler`` (4 chunks a window,
                      told the loader's batch size and workers) for ``shuffle=True``
``chunk-shuffled w``  ``4-frame windows`` with ``ChunkShuffleSampler``
``sequential item``   ``IterableStepDataset`` iterated in this process: per-item cost
``DataLoader floor``  no store: 2 workers each yield batches of 256 frames already in
                      memory, copied into new shared memory as PyTorch's own collate
                      hands a batch over: PyTorch's transport alone (the ``iterable``
                      row no longer pays it)
====================  ======================================================================

items/s counts dataset items (one step with its frame, or its 4-frame window) consumed
in the main process, from making the dataset (its episode pointers read) to the last
item; ``us/item`` is its inverse. DataLoader modes also report ``startup`` (making the
dataset, starting the workers, until the first batch arrives) and ``steady items/s``
(the items after the first batch over the time after it): on a short pass the workers'
start weighs as much as the reading. ``cpu us/item`` is the CPU time of this process and
of its DataLoader workers (user + system, workers counted once they are joined) per
item: the cost of an item, which a loaded machine does not inflate the way it inflates
wall-clock rates. ``others' cores`` is how many cores other processes kept busy, on
average, while the mode ran (the machine's busy time in ``/proc/stat`` less this process's
and its workers'): the DataLoader modes need 2 cores and ``iter_frames`` one, so a core
taken by someone else halves the workers' rate and not ``iter_frames``'s (Linux only).
Each timing runs in a fresh spawned process that holds nothing but the store's path:
this process keeps the captured frames (gigabytes), and a DataLoader forking its workers
from it copied their page tables (an empty 2-worker loader started in 0.10-0.12 s from
it against 0.03 s from a small process). A warm-up pass first (untimed) checks
every frame of the iterable pass against ``iter_frames`` (CRC-32 by episode and step),
and starts nothing else: each timed DataLoader starts its own workers, as an epoch does
without ``persistent_workers``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import resource
import shutil
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from ._frames import FrameSet, record_store

__all__ = ["TORCH_MODES", "TORCH_TABLE", "TorchResult", "run_torch"]

TORCH_MODES = (
    "iter_frames",
    "iterable",
    "iterable, no transport",
    "iterable, items",
    "random item",
    "shuffled epoch",
    "4-frame windows",
    "chunk-shuffled",
    "chunk-shuffled w",
    "sequential item",
    "DataLoader floor",
)
#: Items each mode reads per round at most (random items: a sample, not an epoch).
RANDOM_ITEMS = 1000


@dataclass
class TorchResult:
    """One mode's medians over the rounds."""

    mode: str
    workers: int
    batch: int
    rounds: int
    items: int  # per round
    items_per_s: float = 0.0
    us_per_item: float = 0.0
    vs_iter_frames: float = 0.0
    cpu_us_per_item: float = 0.0  # this process and its workers
    startup_s: float | None = None  # until the first batch (DataLoader modes)
    steady_items_per_s: float | None = None  # after the first batch
    steady_vs_iter_frames: float | None = None
    verified: bool | None = None  # the iterable pass read every frame bit-exact
    others_cores: float | None = None  # cores other processes kept busy meanwhile
    error: str | None = None


TORCH_TABLE = (
    ("mode", "mode", "{}"),
    ("workers", "workers", "{}"),
    ("batch", "batch", "{}"),
    ("items", "items", "{}"),
    ("items_per_s", "items/s", "{:.0f}"),
    ("us_per_item", "us/item", "{:.0f}"),
    ("cpu_us_per_item", "cpu us/item", "{:.0f}"),
    ("vs_iter_frames", "vs iter_frames", "{:.2f}x"),
    ("startup_s", "startup s", "{:.2f}"),
    ("steady_items_per_s", "steady items/s", "{:.0f}"),
    ("steady_vs_iter_frames", "steady vs iter_frames", "{:.2f}x"),
    ("others_cores", "others' cores", "{:.2f}"),
    ("verified", "exact", "{}"),
)

_SHAPES = {  # mode -> (workers, batch)
    "iter_frames": (0, 1),
    "iterable": (2, 256),
    "iterable, no transport": (2, 256),
    "iterable, items": (2, 256),
    "random item": (0, 1),
    "shuffled epoch": (2, 64),
    "4-frame windows": (2, 64),
    "chunk-shuffled": (2, 64),
    "chunk-shuffled w": (2, 64),
    "sequential item": (0, 1),
    "DataLoader floor": (2, 256),
}


def run_torch(
    fs: FrameSet,
    *,
    rounds: int = 5,
    workdir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[TorchResult]:
    """Record ``fs`` into a store (its game's preset) and time every mode ``rounds``
    times, interleaved (see the module docstring)."""
    from framestore.extras import require

    require("torch", extra="torch", what="bench --torch")
    say = progress or (lambda _msg: None)
    tmp = Path(tempfile.mkdtemp(prefix="fs-torch-", dir=workdir))
    try:
        store = tmp / "bench.store"
        say(f"recording {len(fs)} {fs.game} frames")
        record_store(fs, store)
        say("checking the iterable pass against iter_frames")
        verified = _verify(store)
        times: dict[str, list[_Timing]] = {m: [] for m in TORCH_MODES}
        counts: dict[str, int] = {}
        errors: dict[str, str] = {}
        fresh = ProcessPoolExecutor(1, mp_context=get_context("spawn"), max_tasks_per_child=1)
        with fresh:
            _time_rounds(fresh, store, rounds, times, counts, errors, say)
        return _rows(times, counts, errors, rounds, verified)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _timed(mode: str, store: str) -> _Timing:
    """One timing of ``mode``, in the fresh process it runs in. A spawned process makes
    spawn its default: its DataLoaders start workers as a training script's would
    (``fork`` where the platform has it, not a new interpreter importing torch)."""
    if "fork" in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method("fork", force=True)
    return _others_busy(_MODES[mode], Path(store))


def _time_rounds(fresh, store, rounds, times, counts, errors, say) -> None:
    """Every mode ``rounds`` times, the order rotating, each in a fresh process."""
    for r in range(rounds):
        order = TORCH_MODES[r % len(TORCH_MODES) :] + TORCH_MODES[: r % len(TORCH_MODES)]
        for mode in order:
            if mode in errors:
                continue
            say(f"round {r + 1}/{rounds}: {mode}")
            try:
                timing = fresh.submit(_timed, mode, str(store)).result()
            except Exception as e:  # a row says what failed; the others still run
                errors[mode] = f"{type(e).__name__}: {e}"
                continue
            counts[mode] = timing.items
            times[mode].append(timing)


def _rows(times, counts, errors, rounds, verified) -> list[TorchResult]:
    def median(mode: str, f: Callable[[_Timing], float | None]) -> float | None:
        values = [v for v in map(f, times[mode]) if v is not None]
        return statistics.median(values) if values else None

    rate = {m: median(m, lambda t: t.items / t.seconds) for m in TORCH_MODES if times[m]}
    base = rate.get("iter_frames")
    rows = []
    for mode in TORCH_MODES:
        workers, batch = _SHAPES[mode]
        row = TorchResult(mode, workers, batch, rounds, counts.get(mode, 0))
        row.error = errors.get(mode)
        if rate.get(mode):
            row.items_per_s = rate[mode]
            row.us_per_item = 1e6 / rate[mode]
            row.vs_iter_frames = rate[mode] / base if base else 0.0
            row.cpu_us_per_item = median(mode, lambda t: 1e6 * t.cpu / t.items) or 0.0
            row.startup_s = median(mode, lambda t: t.startup)
            row.others_cores = median(mode, lambda t: t.others_cores)
            row.steady_items_per_s = median(mode, _Timing.steady_rate)
            if row.steady_items_per_s and base:
                row.steady_vs_iter_frames = row.steady_items_per_s / base
        if mode == "iterable":
            row.verified = verified
        rows.append(row)
    return rows


@dataclass(frozen=True)
class _Timing:
    items: int
    seconds: float
    cpu: float  # seconds of CPU, this process and the workers it joined
    startup: float | None = None  # until the first batch
    first: int = 0  # items in the first batch
    others_cores: float | None = None  # set by ``_others_busy``

    def steady_rate(self) -> float | None:
        if self.startup is None or self.seconds <= self.startup or self.items <= self.first:
            return None
        return (self.items - self.first) / (self.seconds - self.startup)


def _others_busy(mode: Callable[[Path], _Timing], store: Path) -> _Timing:
    """``mode``'s timing with ``others_cores``: the machine's busy CPU time while it ran,
    less this process's and its workers', over the wall time (None without /proc/stat)."""
    busy0, t0, c0 = _machine_busy(), time.perf_counter(), _cpu()
    timing = mode(store)
    busy1, wall, ours = _machine_busy(), time.perf_counter() - t0, _cpu() - c0
    if busy0 is None or busy1 is None or wall <= 0:
        return timing
    others = max(0.0, (busy1 - busy0 - ours) / wall)
    return dataclasses.replace(timing, others_cores=others)


def _machine_busy() -> float | None:
    """CPU seconds the whole machine has been busy (all cores), from ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:8]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def _cpu() -> float:
    """CPU seconds of this process and its joined children, in ns/us steps: ``os.times``
    counts in 10 ms ticks, which a 300-frame pass (5 ms of CPU) can round to 0."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _loader(
    dataset: Any, batch: int | None, workers: int, shuffle: bool = False, chunks: bool = False
) -> Any:
    """``chunks``: shuffled by a ``ChunkShuffleSampler`` (instead of ``shuffle``)."""
    from torch.utils.data import DataLoader

    from framestore.torch import ChunkShuffleSampler, collate_steps

    sampler = ChunkShuffleSampler(dataset, batch_size=batch, workers=workers) if chunks else None
    return DataLoader(
        dataset, batch_size=batch, shuffle=shuffle, sampler=sampler, num_workers=workers,
        collate_fn=collate_steps,
    )  # fmt: skip


def _verify(store: Path) -> bool:
    from framestore import FrameStore
    from framestore.torch import IterableStepDataset

    want = {}
    with FrameStore.open(store, readonly=True) as st:
        for ep in st.episodes():
            for step, frame in st.iter_steps_frames(ep.id):
                want[(ep.id, step)] = zlib.crc32(frame)
    got = {}
    with IterableStepDataset(store, batch_size=256) as ds:
        for b in _loader(ds, None, 2):
            for e, s, f in zip(b["episode"], b["step"], b["render"].numpy(), strict=True):
                got[(int(e), int(s))] = zlib.crc32(f)
    return got == want


def _iter_frames(store: Path) -> _Timing:
    from framestore import FrameStore

    n = 0
    t0, c0 = time.perf_counter(), _cpu()
    with FrameStore.open(store, readonly=True) as st:
        for ep in st.episodes():
            for _frame in st.iter_frames(ep.id):
                n += 1
    return _Timing(n, time.perf_counter() - t0, _cpu() - c0)


def _batches(
    make: Callable[[], Any], batch: int | None, workers: int, shuffle: bool, chunks: bool = False
) -> _Timing:
    """Items consumed through a DataLoader; the dataset is made (episode pointers read)
    inside the timing, as a training script makes it."""
    n, first, startup = 0, 0, None
    t0, c0 = time.perf_counter(), _cpu()
    with make() as ds:
        loader = iter(_loader(ds, batch, workers, shuffle, chunks))
        for b in loader:
            n += len(b["step"])
            if startup is None:
                startup, first = time.perf_counter() - t0, n
        seconds = time.perf_counter() - t0
        del loader  # joins the workers, so their CPU time is counted
    return _Timing(n, seconds, _cpu() - c0, startup, first)


def _iterable(store: Path) -> _Timing:
    from framestore.torch import IterableStepDataset

    return _batches(lambda: IterableStepDataset(store, batch_size=256), None, 2, False)


def _iterable_kept(store: Path) -> _Timing:
    from framestore.torch import IterableStepDataset

    return _batches(lambda: _Drained(IterableStepDataset(store, batch_size=256)), None, 2, False)


def _iterable_items(store: Path) -> _Timing:
    from framestore.torch import IterableStepDataset

    return _batches(lambda: IterableStepDataset(store), 256, 2, False)


def _shuffled(store: Path) -> _Timing:
    from framestore.torch import StepDataset

    return _batches(lambda: StepDataset(store), 64, 2, True)


def _windows(store: Path) -> _Timing:
    from framestore.torch import StepDataset

    window = {"render": [-3, -2, -1, 0]}
    return _batches(lambda: StepDataset(store, window=window), 64, 2, True)


def _chunk_shuffled(store: Path) -> _Timing:
    from framestore.torch import StepDataset

    return _batches(lambda: StepDataset(store), 64, 2, False, chunks=True)


def _chunk_windows(store: Path) -> _Timing:
    from framestore.torch import StepDataset

    window = {"render": [-3, -2, -1, 0]}
    return _batches(lambda: StepDataset(store, window=window), 64, 2, False, chunks=True)


def _random_item(store: Path) -> _Timing:
    from framestore.torch import StepDataset

    with StepDataset(store) as ds:
        picks = np.random.default_rng(0).integers(len(ds), size=min(RANDOM_ITEMS, len(ds)))
        t0, c0 = time.perf_counter(), _cpu()
        for i in picks:
            ds[int(i)]
        return _Timing(len(picks), time.perf_counter() - t0, _cpu() - c0)


def _sequential_item(store: Path) -> _Timing:
    from framestore.torch import IterableStepDataset

    n = 0
    with IterableStepDataset(store) as ds:
        t0, c0 = time.perf_counter(), _cpu()
        for _item in ds:
            n += 1
        return _Timing(n, time.perf_counter() - t0, _cpu() - c0)


def _floor(store: Path) -> _Timing:
    import torch.utils.data as tud

    from framestore import FrameStore

    with FrameStore.open(store, readonly=True) as st:
        episodes = st.episodes()
        count = sum(e.frames for e in episodes)
        frames = [f for _i, f in zip(range(256), st.iter_frames(episodes[0].id), strict=False)]
    frames = (frames * (256 // len(frames) + 1))[:256]

    class Floor(tud.IterableDataset):
        def __iter__(self):
            from framestore.torch import collate_steps

            info = tud.get_worker_info()
            share = range(info.id * 256, count, info.num_workers * 256)
            for start in share:
                n = min(256, count - start)
                yield collate_steps([{"render": f, "step": 0} for f in frames[:n]])

    return _batches(lambda: _Closing(Floor()), None, 2, False)


class _Drained:
    """A dataset whose batches stay in the DataLoader worker that read them: each worker
    yields one ``{"step": tensor of its item count}`` (a few bytes) once it has read its
    whole share, so the pass costs the reads without the handover."""

    def __init__(self, dataset: Any):
        import torch.utils.data as tud

        class Drain(tud.IterableDataset):
            def __iter__(inner):  # noqa: N805  (the outer dataset is self)
                import torch

                n = sum(len(b["step"]) for b in dataset)
                yield {"step": torch.zeros(n, dtype=torch.uint8)}

        self.dataset = dataset
        self.drain = Drain()

    def __enter__(self) -> Any:
        return self.drain

    def __exit__(self, *exc: object) -> None:
        self.dataset.close()


class _Closing:
    """A dataset as a context manager, as the framestore datasets are."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __enter__(self) -> Any:
        return self.dataset

    def __exit__(self, *exc: object) -> None:
        pass


_MODES: dict[str, Callable[[Path], _Timing]] = {
    "iter_frames": _iter_frames,
    "iterable": _iterable,
    "iterable, no transport": _iterable_kept,
    "iterable, items": _iterable_items,
    "random item": _random_item,
    "shuffled epoch": _shuffled,
    "4-frame windows": _windows,
    "chunk-shuffled": _chunk_shuffled,
    "chunk-shuffled w": _chunk_windows,
    "sequential item": _sequential_item,
    "DataLoader floor": _floor,
}
