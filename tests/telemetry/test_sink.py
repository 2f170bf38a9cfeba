"""TelemetryDBSink against real SQLite files."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time

import pytest
from conftest import wait_for

from telemetry.db import open_db
from telemetry.errors import Closed, InvalidInput, QueueFull, SchemaTooNew, SinkError
from telemetry.events import EpisodeEnded, EpisodeStarted, RunEnded, RunStarted, Step
from telemetry.sink import TelemetryDBSink
from telemetry.spaces import encode_info

ATARI_INFO = encode_info({"lives": 3, "episode_frame_number": 4000, "frame_number": 123456})


@pytest.fixture(autouse=True)
def no_sink_threads_left():
    yield
    left = [t for t in threading.enumerate() if t.name == "telemetry-db-sink"]
    assert not left, f"sink threads left running: {left}"


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "framestore.db"


def step(i: int, episode: int = 1, frame: object | None = None) -> Step:
    return Step(
        episode_id=episode,
        step=i,
        action=str(i % 6),
        reward=float(i % 2),
        terminated=False,
        truncated=False,
        info=ATARI_INFO,
        wall_time=1000.0 + i / 60,
        frame=frame,
        frame_shape="210x160x3" if frame is not None else None,
    )


def start_events(run=1, episode=1):
    return [
        RunStarted(run, "ALE/Pong-v5", 1000.0, preset="laptop", config={"fps": 60}),
        EpisodeStarted(episode, run, 0, 42, 1000.0),
    ]


def count_steps(path) -> int:
    # A second connection, as a reader (GUI, CLI) would have.
    with open_db(path, readonly=True) as db:
        return db.execute("SELECT count(*) FROM steps").fetchone()[0]


class Gate:
    """A resolve_frames hook that stalls until released."""

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list] = []

    def __call__(self, frames):
        self.calls.append(list(frames))
        self.entered.set()
        assert self.release.wait(10), "gate never released"
        return [None] * len(frames)


def test_events_land_in_order(db_path):
    with TelemetryDBSink(db_path, batch_size=16) as sink:
        for e in start_events():
            assert sink.offer(e)
        for i in range(40):
            sink.offer(step(i))
        sink.offer(EpisodeEnded(1, 1001.0, "complete", 40, 20.0, True, False, frames_dropped=2))
        sink.offer(EpisodeStarted(2, 1, 1, 43, 1001.5))
        sink.offer(step(0, episode=2))
        sink.offer(EpisodeEnded(2, 1002.0, "interrupted", 1, 0.0, False, False))
        sink.offer(RunEnded(1, 1003.0, stats={"max_queue_depth": 7}))
    with open_db(db_path, readonly=True) as db:
        run = db.execute("SELECT env_id, preset, config, ended, stats FROM runs").fetchone()
        assert run[:2] == ("ALE/Pong-v5", "laptop")
        assert json.loads(run[2]) == {"fps": 60}
        assert run[3] == 1003.0 and json.loads(run[4]) == {"max_queue_depth": 7}
        episodes = db.execute(
            "SELECT id, idx, seed, status, steps, total_reward, terminated, frames_dropped "
            "FROM episodes ORDER BY id"
        ).fetchall()
        assert episodes == [
            (1, 0, 42, "complete", 40, 20.0, 1, 2),
            (2, 1, 43, "interrupted", 1, 0.0, 0, 0),
        ]
        rows = db.execute("SELECT step, action, info FROM steps WHERE episode_id = 1").fetchall()
        assert [r[0] for r in rows] == list(range(40))
        assert rows[5][1:] == ("5", ATARI_INFO)
    m = sink.metrics()
    assert m.steps_committed == 41 and m.queue_depth == 0 and m.steps_dropped == 0


def test_batch_commit_by_size_and_interval(db_path):
    with TelemetryDBSink(db_path, batch_size=10, commit_interval=60) as sink:
        for e in start_events():
            sink.offer(e)
        for i in range(25):
            sink.offer(step(i))
        wait_for(lambda: sink.metrics().steps_committed == 20)
        assert count_steps(db_path) == 20  # the 5 left wait for a full batch or a flush
        assert sink.metrics().batches == 2
        sink.flush(timeout=5)
        assert count_steps(db_path) == 25
    with TelemetryDBSink(db_path, batch_size=1000, commit_interval=0.05) as sink:
        sink.offer(step(100))
        wait_for(lambda: sink.metrics().steps_committed == 1)  # idle commit
        assert count_steps(db_path) == 26


def test_resolve_runs_before_rows_become_visible(db_path):
    gate = Gate()
    resolved = threading.Event()

    def resolve(frames):
        gate(frames)
        resolved.set()
        return [(7, 4096 * i, i % 4) for i in range(len(frames))]

    sink = TelemetryDBSink(db_path, batch_size=8, resolve_frames=resolve)
    seen_early = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            with open_db(db_path, readonly=True) as db:
                n = db.execute("SELECT count(*) FROM steps").fetchone()[0]
            if n and not resolved.is_set():
                seen_early.append(n)

    poller = threading.Thread(target=poll)
    try:
        for e in start_events():
            sink.offer(e)
        for i in range(8):
            sink.offer(step(i, frame=("ref", i)))
        assert gate.entered.wait(5)
        poller.start()
        time.sleep(0.1)
        assert count_steps(db_path) == 0
        gate.release.set()
        sink.flush(timeout=5)
    finally:
        gate.release.set()
        stop.set()
        if poller.is_alive() or poller.ident:
            poller.join()
        sink.close()
    assert seen_early == []
    assert gate.calls[0] == [("ref", i) for i in range(8)]
    with open_db(db_path, readonly=True) as db:
        rows = db.execute(
            "SELECT step, frame_segment, frame_offset, frame_slot, frame_shape FROM steps"
        ).fetchall()
    assert rows[3] == (3, 7, 4096 * 3, 3, "210x160x3")


def test_no_hook_leaves_frame_columns_null(db_path):
    with TelemetryDBSink(db_path) as sink:
        for e in start_events():
            sink.offer(e)
        sink.offer(step(0, frame="opaque"))
    with open_db(db_path, readonly=True) as db:
        row = db.execute("SELECT frame_segment, frame_offset, frame_slot FROM steps").fetchone()
    assert row == (None, None, None)


def test_sink_error_propagates_to_offer_flush_close_and_on_error(db_path):
    errors = []

    def broken(frames):
        raise OSError(28, "No space left on device")

    sink = TelemetryDBSink(db_path, batch_size=2, resolve_frames=broken, on_error=errors.append)
    for e in start_events():
        sink.offer(e)
    sink.offer(step(0))
    sink.offer(step(1))
    wait_for(lambda: sink.metrics().failed)
    assert len(errors) == 1 and isinstance(errors[0], OSError)
    with pytest.raises(SinkError) as info:
        sink.offer(step(2))
    assert info.value.__cause__ is errors[0]
    with pytest.raises(SinkError):
        sink.flush(timeout=1)
    sink.close()  # already reported to the caller: close just cleans up
    assert count_steps(db_path) == 0  # nothing of the failed batch committed


def test_unreported_error_is_raised_by_close(db_path):
    sink = TelemetryDBSink(db_path, resolve_frames=lambda frames: 1 / 0)
    sink.offer(step(0))
    with pytest.raises(SinkError) as info:
        sink.close()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    sink.close()  # reported once
    with pytest.raises(Closed):
        sink.offer(step(1))


def test_database_error_fails_flush(db_path):
    sink = TelemetryDBSink(db_path)
    try:
        sink.offer(step(0))
        sink.offer(step(0))  # duplicate primary key
        with pytest.raises(SinkError) as info:
            sink.flush(timeout=5)
        assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
    finally:
        sink.close()


def test_episode_end_for_unknown_episode_fails(db_path):
    sink = TelemetryDBSink(db_path)
    sink.offer(EpisodeEnded(99, 1.0, "complete", 0, 0.0, False, False))
    with pytest.raises(SinkError, match="unknown episode 99"):
        sink.close()


def test_block_policy_raises_queue_full_when_stalled(db_path):
    gate = Gate()
    sink = TelemetryDBSink(
        db_path, batch_size=1, max_queue=4, block_timeout=0.1, resolve_frames=gate
    )
    try:
        sink.offer(step(0))
        assert gate.entered.wait(5)  # the sink thread is now stuck in resolve
        for i in range(1, 5):
            assert sink.offer(step(i))
        start = time.monotonic()
        with pytest.raises(QueueFull) as info:
            sink.offer(step(5))
        assert 0.09 <= time.monotonic() - start < 2
        assert isinstance(info.value, TimeoutError) and info.value.timeout == 0.1
        with pytest.raises(QueueFull):
            sink.offer(step(5), timeout=0)
    finally:
        gate.release.set()
        sink.close()
    assert count_steps(db_path) == 5
    assert sink.metrics().high_water == 4


def test_drop_policy_counts_dropped_steps_but_keeps_control_events(db_path):
    gate = Gate()
    sink = TelemetryDBSink(db_path, batch_size=1, max_queue=4, policy="drop", resolve_frames=gate)
    try:
        for e in start_events():
            sink.offer(e)
        sink.offer(step(0))
        assert gate.entered.wait(5)
        accepted = [sink.offer(step(i)) for i in range(1, 21)]
        assert accepted.count(True) == 4
        assert sink.offer(EpisodeEnded(1, 2.0, "complete", 21, 0.0, True, False))
        assert sink.metrics().steps_dropped == 16
    finally:
        gate.release.set()
        sink.close()
    assert count_steps(db_path) == 5
    with open_db(db_path, readonly=True) as db:
        assert db.execute("SELECT status FROM episodes").fetchone() == ("complete",)


def test_queue_high_and_slow_flush_are_logged(db_path, caplog):
    caplog.set_level(logging.DEBUG, logger="telemetry")
    gate = Gate()

    def slow(frames):
        if not gate.calls:
            gate(frames)  # stall the first batch so the queue fills up
        time.sleep(0.03)
        return [None] * len(frames)

    sink = TelemetryDBSink(
        db_path, batch_size=1, max_queue=10, resolve_frames=slow, slow_flush_ms=20
    )
    try:
        sink.offer(step(0))
        assert gate.entered.wait(5)
        for i in range(1, 10):
            sink.offer(step(i))
    finally:
        gate.release.set()
        sink.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "telemetry"]
    high = [m for m in messages if m.startswith("LOG932")]
    assert high == ["LOG932 queue=db queue_depth=8 bound=10 policy=block"]
    assert any(m.startswith("LOG934 queue=db steps=1") for m in messages)
    assert any(m.startswith("LOG933 queue=db steps=1") for m in messages)
    assert sink.metrics().max_flush_ms >= 20


def test_queue_snapshots_are_logged(db_path, caplog):
    caplog.set_level(logging.INFO, logger="telemetry")
    with TelemetryDBSink(db_path, snapshot_interval=0.02) as sink:
        sink.offer(step(0))
        wait_for(lambda: any(r.getMessage().startswith("LOG931") for r in caplog.records))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("LOG931"))
    assert "queue_depth=" in line and "high_water=" in line and "bound=4096" in line


def test_checkpoints_every_interval(db_path):
    with TelemetryDBSink(db_path, batch_size=50, checkpoint_interval=100) as sink:
        for e in start_events():
            sink.offer(e)
        for i in range(300):
            sink.offer(step(i))
        sink.flush(timeout=5)
        assert sink.metrics().checkpoints == 3
    assert sink.metrics().checkpoints == 4  # the final one at close


def test_db_growth_per_step_is_small(db_path):
    with open_db(db_path):
        pass
    empty = db_path.stat().st_size
    with TelemetryDBSink(db_path, resolve_frames=lambda fs: [(1, 64 * i, 0) for i in fs]) as sink:
        for e in start_events():
            sink.offer(e)
        for i in range(2000):
            sink.offer(step(i, frame=i))
        sink.offer(EpisodeEnded(1, 2000.0, "complete", 2000, 1000.0, True, False))
    per_step = (db_path.stat().st_size - empty) / 2000
    assert not (db_path.parent / "framestore.db-wal").exists()  # last close checkpointed
    assert per_step < 300, per_step


def test_schema_too_new_raised_by_constructor(db_path):
    with open_db(db_path) as db:
        db["_sqlite_migrations"].insert(
            {"migration_set": "framestore", "name": "m999_future", "applied_at": "x"}
        )
    with pytest.raises(SchemaTooNew):
        TelemetryDBSink(db_path)


def test_argument_validation(db_path):
    with pytest.raises(InvalidInput, match="policy"):
        TelemetryDBSink(db_path, policy="lossy")
    with pytest.raises(InvalidInput, match="max_queue"):
        TelemetryDBSink(db_path, max_queue=0)
    with pytest.raises(InvalidInput, match="valid profiles"):
        TelemetryDBSink(db_path, profile="turbo")


def test_offer_after_close_is_rejected(db_path):
    sink = TelemetryDBSink(db_path)
    sink.close()
    sink.close()
    with pytest.raises(Closed):
        sink.offer(step(0))
    with pytest.raises(Closed):
        sink.flush()
