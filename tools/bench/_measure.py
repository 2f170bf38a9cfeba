"""Measuring tools: RSS growth, percentiles, bytes on disk, a forked child per run, and
a precise sleep for fixed-rate loops."""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np
import psutil

__all__ = [
    "ProcessMemory",
    "RssSampler",
    "dir_bytes",
    "in_child",
    "percentiles_us",
    "sleep_until_ns",
]


class RssSampler:
    """Samples this process's RSS on a thread; ``peak`` minus ``baseline`` is growth."""

    def __init__(self, interval: float = 0.005):
        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = 0
        self.peak = 0
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _rss(self) -> int:
        return self._proc.memory_info().rss

    def _begin(self) -> None:
        """The baseline, taken after a collection, a heap trim and the allocator settled."""
        gc.collect()
        _trim_heap()
        settle_allocator()
        self.baseline = self.peak = self._rss()

    def _sample(self) -> None:
        self.peak = max(self.peak, self._rss())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.baseline)

    def __enter__(self) -> Self:
        self._begin()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


class ProcessMemory(RssSampler):
    """``RssSampler`` that can also watch a second process (the storage process):
    its peak RSS, and the peak growth of both processes' PSS together (pages they share,
    like the frame ring, counted once; the second one's PSS when watching starts is
    part of the baseline). PSS is read every 20th sample (100 ms): reading it walks the
    page tables, CPU time the measured run would otherwise pay."""

    def __init__(self, interval: float = 0.005):
        super().__init__(interval)
        self._other = None
        self.other_peak = 0
        self.other_base = 0
        self._pss0 = 0
        self.pss_growth = 0
        self._tick = 0

    def watch(self, pid: int) -> None:
        """Watch ``pid`` too, from now on: its PSS now is part of the baseline (a storage
        process's interpreter at rest is not growth), its RSS peak is ``other_peak``."""
        other = psutil.Process(pid)
        self._pss0 += other.memory_full_info().pss
        self.other_base = other.memory_info().rss
        self._other = other

    def _pss(self) -> int:
        total = self._proc.memory_full_info().pss
        if self._other is not None:
            try:
                total += self._other.memory_full_info().pss
            except psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        super()._sample()
        if self._other is not None:
            try:
                self.other_peak = max(self.other_peak, self._other.memory_info().rss)
            except psutil.Error:
                pass
        self._tick += 1
        if self._tick % 20 == 0:
            self.pss_growth = max(self.pss_growth, self._pss() - self._pss0)

    def _begin(self) -> None:
        super()._begin()
        self._pss0 = self._proc.memory_full_info().pss


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so that memory freed earlier, and
    still resident, cannot absorb the measured pipeline's allocations unseen."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def settle_allocator() -> None:
    """Put glibc's malloc in the same state for every measured pipeline (writes and
    reads): a 16 MiB block allocated and freed raises its dynamic mmap threshold to 16 MiB
    (the maximum is 32 MiB; a larger block leaves the threshold alone), so multi-megabyte
    buffers (a 64-frame chunk joined for zstd, zstd's output) come from the heap and are
    reused, instead of a fresh ``mmap`` each time that page-faults on every page. Without
    it the state was whatever the parent process left: plain zstd over 6,000 Assault
    frames cost 69-80 us of CPU a frame (24 page faults a frame) in a fresh process and
    20-22 us (0.3) after one large free, so ``bench --reads`` charged its zstd row 68-79 us
    where ``bench --writers`` measured 27-37."""
    block = bytearray(16 << 20)
    del block


def percentiles_us(costs_ns: np.ndarray) -> tuple[float, float, float]:
    if costs_ns.size == 0:
        return 0.0, 0.0, 0.0
    p50, p99 = np.percentile(costs_ns, [50, 99])
    return float(p50) / 1e3, float(p99) / 1e3, float(costs_ns.max()) / 1e3


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def in_child(
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
