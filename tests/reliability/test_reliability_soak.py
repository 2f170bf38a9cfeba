"""Soak: three environments (CartPole, Assault, FrozenLake), each recording into its own
store at 60 Hz with the default presets, for ``FRAMESTORE_SOAK_SECONDS`` (20 s by default;
set it to 3600 for an hour). RSS and thread counts are sampled throughout.

Bounds, and why:
- RSS growth after warm-up <= 48 MiB. Every buffer on the recording path is bounded
  (frame queue, sink queue, hub buffers, the reader's chunk cache) and at 60 Hz the writer
  keeps them near empty, so RSS must plateau once the allocator, SQLite's page cache and
  zstd's contexts are warm. A leak of one frame per step would add CartPole's 720 KB x 60
  = 42 MiB every second; 48 MiB over the rest of the run catches far smaller leaks too.
- Peak RSS growth over the start <= the presets' memory budget (``queue_bytes`` summed
  over the three recorders), which is what the presets promise to stay within.
- The thread count never exceeds the start plus what the three recorders may own (a
  writer, ``compress_threads`` compressors started on demand, a sink) and is back to the
  start after close; every recorder finishes within its deadline (no deadlock).

The soak runs in a child process with glibc's mmap threshold fixed at 1 MiB
(``MALLOC_MMAP_THRESHOLD_``) and two arenas: otherwise glibc raises the threshold after
each large free and keeps freed multi-MB chunk buffers resident, and RSS would measure the
allocator's retention instead of live memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from framestore import FrameStore, RecordFrames
from framestore.envs import make_env
from tools.verify import verify

SECONDS = float(os.environ.get("FRAMESTORE_SOAK_SECONDS", "20"))
ENVS = ("CartPole-v1", "ALE/Assault-v5", "FrozenLake-v1")
HZ = 60.0
LEAK_BOUND = 48 * 1024 * 1024


def soak(tmp_path: Path, seconds: float) -> dict:
    """The soak itself (run in the child process; raises AssertionError on failure)."""
    proc = psutil.Process()
    stop = threading.Event()
    errors: list[BaseException] = []
    counts: dict[str, int] = {}
    budgets: dict[str, int] = {}
    owned_by: dict[str, int] = {}
    ready = threading.Barrier(len(ENVS) + 1, timeout=60)

    # Made and rendered once here: pygame's lazy imports are not thread-safe on first use.
    envs = [make_env(env_id) for env_id in ENVS]
    for i, env in enumerate(envs):
        env.reset(seed=i)
        env.render()

    def run(env_id: str, index: int) -> None:
        env = envs[index]
        try:
            with FrameStore.open(tmp_path / f"s{index}.store") as store:
                wrapped = RecordFrames(env, store)
                budgets[env_id] = wrapped.recorder.settings.queue_bytes
                owned_by[env_id] = 2 + wrapped.recorder.settings.compress_threads
                try:
                    env.action_space.seed(index)
                    wrapped.reset(seed=index)
                    ready.wait()
                    n, t_next = 0, time.monotonic()
                    while not stop.is_set():
                        _, _, term, trunc, _ = wrapped.step(env.action_space.sample())
                        n += 1
                        if term or trunc:
                            wrapped.reset()
                        t_next += 1.0 / HZ
                        delay = t_next - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    counts[env_id] = n
                finally:
                    wrapped.close()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
            if ready.n_waiting:
                ready.abort()
        finally:
            env.close()

    threads_before = threading.active_count()
    rss0 = proc.memory_info().rss
    workers = [
        threading.Thread(target=run, args=(e, i), name=f"soak-{i}", daemon=True)
        for i, e in enumerate(ENVS)
    ]
    for t in workers:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        for t in workers:
            t.join(60)
        raise AssertionError(f"a recorder failed to start: {errors!r}") from None
    warmup = max(3.0, seconds * 0.25)
    samples: list[tuple[float, int, int]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and not errors:
        samples.append((time.monotonic() - t0, proc.memory_info().rss, threading.active_count()))
        time.sleep(0.25)
    stop.set()
    deadline = time.monotonic() + 60
    for t in workers:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not [t.name for t in workers if t.is_alive()], "a recorder did not finish: deadlock?"
    assert not errors, errors

    after = [(rss, n) for (t, rss, n) in samples if t >= warmup]
    assert after, samples
    base = next(rss for (t, rss, _n) in samples if t >= warmup)
    growth = max(rss for rss, _ in after) - base
    assert growth <= LEAK_BOUND, f"RSS grew {growth / 2**20:.1f} MiB after warm-up"
    peak = max(rss for _t, rss, _n in samples) - rss0
    assert peak <= sum(budgets.values()), (peak, budgets)
    owned = sum(owned_by.values())
    most = max(n for _t, _rss, n in samples)
    assert most <= threads_before + len(ENVS) + owned, (most, threads_before, owned)
    assert threading.active_count() <= threads_before

    expected = seconds * HZ
    for i, env_id in enumerate(ENVS):
        assert counts[env_id] >= 0.8 * expected, (env_id, counts[env_id], expected)
        path = tmp_path / f"s{i}.store"
        assert verify(path, quick=True).ok
        with FrameStore.open(path, readonly=True) as store:
            eps = store.episodes()
            actions = sum(e.steps - 1 for e in eps)  # one reset row per episode
            assert actions == counts[env_id]
            assert all(e.frames == e.steps for e in eps)
            last = eps[-1]
            frame = store.read_frame(last.id, last.steps - 1)
            assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8
    return {
        "growth_after_warmup_mib": round(growth / 2**20, 1),
        "peak_growth_mib": round(peak / 2**20, 1),
        "max_threads": most,
        "steps": counts,
    }


def run_soak_process(tmp_path: Path, seconds: float) -> dict:
    code = (
        "import json, sys, pathlib\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_reliability_soak as m\n"
        f"print(json.dumps(m.soak(pathlib.Path({str(tmp_path)!r}), {seconds!r})))\n"
    )
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1048576", MALLOC_ARENA_MAX="2")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=seconds + 180,  # a deadlock fails here instead of hanging CI
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_soak_three_envs_at_60hz(tmp_path):
    result = run_soak_process(tmp_path, SECONDS)
    assert result["growth_after_warmup_mib"] <= LEAK_BOUND / 2**20


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("FRAMESTORE_SOAK_LONG"), reason="set FRAMESTORE_SOAK_LONG=1 (an hour)"
)
def test_soak_one_hour(tmp_path):
    run_soak_process(tmp_path, float(os.environ.get("FRAMESTORE_SOAK_LONG_SECONDS", "3600")))
