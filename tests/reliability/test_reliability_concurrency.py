"""Readers while a writer records (another thread, another process), gc under a busy
reader, and the hub + SQLite sink under many producer threads. Deadlines everywhere: a
deadlock fails the test instead of hanging CI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import WRITERS

from framestore import FrameStore
from framestore.errors import SegmentMissing
from telemetry import (
    EpisodeEnded,
    EpisodeStarted,
    RunStarted,
    Step,
    TelemetryAsyncHub,
    TelemetryDBSink,
)
from tools.export import export_episode
from tools.gc import collect

ENV_ID = "ALE/Assault-v5"
SHAPE = (48, 64, 3)


def synthetic(episode: int, step: int) -> np.ndarray:
    return np.random.default_rng(episode * 100_003 + step).integers(0, 256, SHAPE, dtype=np.uint8)


def join_all(threads: list[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"deadlock? still running after {timeout}s: {alive}"


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_reader_thread_and_export_while_recording(writer, store_path, tmp_path):
    overrides = {"codec": "zstd", "chunk_frames": 8, "batch_size": 16}
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            with FrameStore.open(store_path, readonly=True) as store:
                n = 0
                while not stop.is_set():
                    for ep in store.episodes():
                        for step, frame in store.iter_steps_frames(ep.id, skip_missing=False):
                            assert np.array_equal(frame, synthetic(ep.id, step)), (ep.id, step)
                            n += 1
                        if ep.frames:
                            out = tmp_path / f"live-{ep.id}-{n}.npz"
                            r = export_episode(store, ep.id, out)
                            with np.load(out) as z:
                                for s, f in zip(z["step_index"], z["frames"], strict=True):
                                    assert np.array_equal(f, synthetic(ep.id, int(s)))
                                assert r.frames == len(z["frames"]) >= 1
                            out.unlink()
                    seen.append(n)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    with FrameStore.open(store_path) as store, store.recorder(ENV_ID, overrides=overrides) as rec:
        rec.begin_episode(seed=0)  # the store exists with its first rows before reading
        rec.flush()
        t = threading.Thread(target=reader, name="test-reader")
        t.start()
        try:
            for e in range(4):
                eid = rec.current_episode or rec.begin_episode(seed=e)
                for s in range(120):
                    rec.record_step(synthetic(eid, s), action=s % 7)
                    if s % 40 == 39:
                        time.sleep(0.02)
                rec.end_episode()
        finally:
            time.sleep(0.2)
            stop.set()
            join_all([t], 60)
    assert not errors, errors
    assert len(seen) >= 2 and seen[-1] > 0


READER_PROCESS = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from framestore import FrameStore
    from framestore.errors import NotAStore

    path, done_flag = sys.argv[1], sys.argv[2]
    def synthetic(e, s):
        rng = np.random.default_rng(e * 100_003 + s)
        return rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    checked = passes = 0
    import os
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        finished = os.path.exists(done_flag)
        try:
            store = FrameStore.open(path, readonly=True)
        except NotAStore:
            time.sleep(0.01)
            continue
        with store:
            for ep in store.episodes():
                for step, frame in store.iter_steps_frames(ep.id, skip_missing=False):
                    if not np.array_equal(frame, synthetic(ep.id, step)):
                        print("WRONG", ep.id, step, flush=True)
                        sys.exit(3)
                    checked += 1
        passes += 1
        if finished:
            break
    print("checked", checked, "passes", passes, flush=True)
    """
)


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_reader_process_while_recording(writer, store_path, tmp_path):
    done = tmp_path / "done"
    with FrameStore.open(store_path) as store:
        with store.recorder(ENV_ID, overrides={"chunk_frames": 4, "batch_size": 8}) as rec:
            rec.begin_episode()
            rec.flush()
            proc = subprocess.Popen(
                [sys.executable, "-c", READER_PROCESS, str(store_path), str(done)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                for _e in range(3):
                    eid = rec.current_episode or rec.begin_episode()
                    for s in range(150):
                        rec.record_step(synthetic(eid, s), action=1)
                        if s % 50 == 49:
                            time.sleep(0.05)
                    rec.end_episode()
            finally:
                rec.flush()
                done.touch()
                out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, (out, err)
    checked = int(out.split()[1])
    assert checked >= 450, out  # the final pass saw everything; earlier passes saw prefixes


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_gc_while_a_reader_thread_keeps_reading(writer, store_path):
    overrides = {"codec": "raw", "chunk_frames": 4, "segment_bytes": 1 << 20}
    shape = (160, 210, 3)  # ~100 KB frames: several 1 MiB segments

    def frame(e, s):
        return np.full(shape, (e * 37 + s) % 256, np.uint8)

    with FrameStore.open(store_path) as store, store.recorder(ENV_ID, overrides=overrides) as rec:
        for _ in range(4):
            eid = rec.begin_episode()
            for s in range(16):
                rec.record_step(frame(eid, s))
            rec.end_episode()
    with FrameStore.open(store_path) as store:
        store.delete_episodes([1, 3])

    stop = threading.Event()
    errors: list[BaseException] = []
    stats = {"reads": 0, "retries": 0}

    def reader() -> None:
        try:
            with FrameStore.open(store_path, readonly=True) as store:
                while not stop.is_set():
                    for eid in (2, 4):
                        try:
                            got = list(store.iter_steps_frames(eid, skip_missing=False))
                        except SegmentMissing:
                            # Pointers read before gc's commit, file deleted after it:
                            # asking the database again gives the new pointers.
                            stats["retries"] += 1
                            store.reader.forget()
                            got = list(store.iter_steps_frames(eid, skip_missing=False))
                        assert [s for s, _ in got] == list(range(16))
                        for s, f in got:
                            assert np.array_equal(f, frame(eid, s)), (eid, s)
                        stats["reads"] += 1
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=reader, name="test-gc-reader")
    t.start()
    try:
        time.sleep(0.05)
        for _ in range(3):
            collect(store_path, threshold=1.0)  # rewrites every segment with live data
    finally:
        time.sleep(0.05)
        stop.set()
        join_all([t], 60)
    assert not errors, errors
    assert stats["reads"] > 0


def test_hub_and_sink_under_many_producer_threads(tmp_path):
    db_path = tmp_path / "framestore.db"
    threads_n, steps_n = 8, 400
    sink = TelemetryDBSink(db_path, batch_size=32, max_queue=64, block_timeout=30)
    hub = TelemetryAsyncHub()
    hud_events: list = []
    hub.subscribe("db", sink, policy="durable")
    hub.subscribe("hud", hud_events.append, maxlen=16, policy="drop_oldest")
    errors: list[BaseException] = []
    try:
        hub.publish(RunStarted(run_id=1, env_id="x", created=time.time()))
        sink.flush(timeout=30)

        def producer(k: int) -> None:
            try:
                eid = k + 1
                hub.publish(EpisodeStarted(eid, 1, k, k, time.time()))
                for s in range(steps_n):
                    hub.publish(Step(eid, s, "1", float(s), False, False, "{}", time.time()))
                hub.publish(
                    EpisodeEnded(eid, time.time(), "complete", steps_n, 0.0, False, False, 0)
                )
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        producers = [
            threading.Thread(target=producer, args=(k,), name=f"test-producer-{k}")
            for k in range(threads_n)
        ]
        for t in producers:
            t.start()
        join_all(producers, 60)
        sink.flush(timeout=30)
    finally:
        hub.close()
        sink.close(timeout=30)
    assert not errors, errors
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT episode_id, COUNT(*), MIN(step), MAX(step) FROM steps GROUP BY episode_id"
        ).fetchall()
        statuses = {r[0] for r in conn.execute("SELECT status FROM episodes")}
    conn.close()
    assert sorted(rows) == [(k + 1, steps_n, 0, steps_n - 1) for k in range(threads_n)]
    assert statuses == {"complete"}
    m = sink.metrics()
    assert m.steps_committed == threads_n * steps_n and m.high_water <= 64


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_one_recorder_shared_by_producer_threads_under_a_lock(writer, store_path):
    """One writer per store: threads that share it serialise on their own lock; every
    frame lands at its step."""
    lock = threading.Lock()
    errors: list[BaseException] = []
    with FrameStore.open(store_path) as store:
        rec = store.recorder(ENV_ID, overrides={"chunk_frames": 8, "batch_size": 16})
        try:
            eid = rec.begin_episode()

            def producer(k: int) -> None:
                try:
                    for _ in range(60):
                        with lock:
                            step = rec._step
                            rec.record_step(synthetic(eid, step), action=k)
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)

            ts = [threading.Thread(target=producer, args=(k,), name=f"test-p{k}") for k in range(6)]
            for t in ts:
                t.start()
            join_all(ts, 60)
            rec.end_episode()
        finally:
            rec.close()
        assert not errors, errors
        got = list(store.iter_steps_frames(eid, skip_missing=False))
    assert len(got) == 360
    assert all(np.array_equal(f, synthetic(eid, s)) for s, f in got)


@pytest.fixture(autouse=True)
def _no_test_threads_left():
    yield
    assert not [t for t in threading.enumerate() if t.name.startswith("test-") and t.is_alive()]
