"""The storage process (``writer="process"``): the same recording, guarantees and errors
as the thread placement, started with ``spawn`` or ``fork``; its death and the
producer's death leave a store that ``recover`` and ``verify`` accept, and no process or
shared memory behind (the autouse fixture in conftest checks both after every test).

Random-moment SIGKILL trials of either process are in ``test_reliability_crash.py``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import numpy as np
import pytest
from conftest import alive, shm_blocks, wait_for, writer_overrides

from framestore import FrameStore, StoreLocked, WriterFailed
from framestore.errors import DiskFull, InvalidInput, QueueFull
from framestore.settings import resolve
from framestore.write.process._ring import SHM_DIR
from framestore.write.process._wire import decode_error, encode_error
from tools.recover import recover
from tools.verify import verify

ENV_ID = "ALE/Assault-v5"


def _noise(n: int, shape=(210, 160, 3), seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("start", ["spawn", "fork"])
def test_records_both_apis_bit_exactly(tmp_path, assault_frames, start):
    path = tmp_path / "p.store"
    space = gym.spaces.Discrete(7)
    with FrameStore.open(path) as store:
        rec = store.recorder(
            ENV_ID,
            action_space=space,
            overrides={"chunk_frames": 16, **writer_overrides("process", start)},
        )
        pid = rec.writer_pid
        assert pid is not None and pid != os.getpid() and alive(pid)
        first = rec.begin_episode(seed=1)
        for i in range(40):
            rec.record_step(assault_frames[i], action=i % 7, reward=0.5, info={"i": i})
        rec.end_episode()
        a = rec.open_episode(seed=2, sub_env=0)
        b = rec.open_episode(seed=3, sub_env=1)
        for i in range(30):
            rec.record_steps(
                [a, b],
                np.stack([assault_frames[100 + i], assault_frames[200 + i]]),
                np.array([i % 7, (i + 1) % 7]),
                [1.0, 2.0],
                [i == 29, False],
                None,
                [{"k": i}, None],
            )
        rec.close_episode(a)
        rec.close_episode(b)
        rec.flush()
        m = rec.metrics()
        assert m.frames.frames_written == 100 and m.sink.steps_committed == 100
        rec.close()
        assert not alive(pid)
        got = list(store.iter_frames(first))
        assert (
            all(np.array_equal(g, assault_frames[i]) for i, g in enumerate(got)) and len(got) == 40
        )
        steps = store.read_steps(first)
        assert [s.action for s in steps] == [i % 7 for i in range(40)]
        assert steps[5].info == {"i": 5} and steps[5].reward == 0.5
        for eid, base in ((a, 100), (b, 200)):
            got = list(store.iter_frames(eid))
            assert len(got) == 30
            assert all(np.array_equal(g, assault_frames[base + i]) for i, g in enumerate(got))
        assert store.episode(a).terminated and store.episode(b).status == "complete"
    assert verify(path).ok


def test_second_writer_is_refused_either_way(tmp_path, assault_frames):
    path = tmp_path / "p.store"
    with FrameStore.open(path) as a, FrameStore.open(path) as b:
        with a.recorder(ENV_ID, overrides=writer_overrides("process")) as rec:
            rec.begin_episode()
            rec.record_step(assault_frames[0])
            with pytest.raises(StoreLocked):
                b.recorder(ENV_ID)
            with pytest.raises(StoreLocked):
                b.recorder(ENV_ID, overrides=writer_overrides("process", "spawn"))
        with a.recorder(ENV_ID) as rec, pytest.raises(StoreLocked):
            b.recorder(ENV_ID, overrides=writer_overrides("process"))


def test_a_writer_error_reaches_the_next_call_and_on_error(tmp_path, assault_frames):
    path = tmp_path / "p.store"
    seen = []
    overrides = {"codec": "raw", "chunk_frames": 4, "segment_bytes": 1 << 20}
    with FrameStore.open(path) as store:
        rec = store.recorder(
            ENV_ID, overrides={**overrides, **writer_overrides("process")}, on_error=seen.append
        )
        rec.begin_episode()
        for i in range(4):
            rec.record_step(assault_frames[i])
        rec.flush()
        shutil.rmtree(path / "segments")  # the next segment cannot be created
        with pytest.raises(WriterFailed):
            for i in range(4, 300):
                rec.record_step(assault_frames[i])
                time.sleep(0.002)
        # on_error got the writer's own error, as the thread placement passes it (from
        # the listener thread, which may call it just after the producer raised)
        wait_for(lambda: seen, timeout=30)
        assert isinstance(seen[0], WriterFailed) and "deleted" in str(seen[0])
        with pytest.raises(WriterFailed):
            rec.record_step(assault_frames[0])
        with pytest.raises(WriterFailed):
            rec.close()
        assert not alive(rec.writer_pid)


def test_storage_process_killed_gives_writer_failed_at_once(tmp_path, assault_frames):
    path = tmp_path / "p.store"
    seen = []
    with FrameStore.open(path) as store:
        rec = store.recorder(ENV_ID, overrides=writer_overrides("process"), on_error=seen.append)
        rec.begin_episode(seed=0)
        for i in range(50):
            rec.record_step(assault_frames[i], action=i % 7)
        rec.flush()
        os.kill(rec.writer_pid, signal.SIGKILL)
        wait_for(lambda: bool(seen), timeout=10)
        assert isinstance(seen[0], WriterFailed) and "signal 9" in str(seen[0])
        with pytest.raises(WriterFailed, match="died"):
            rec.record_step(assault_frames[50])
        with pytest.raises(WriterFailed):
            rec.flush()
        with pytest.raises(WriterFailed):
            rec.close()
    report = recover(path)
    assert report.frames_lost == {}
    assert verify(path).ok
    with FrameStore.open(path, readonly=True) as store:
        steps = store.read_steps(1)
        assert len(steps) >= 50  # flushed before the kill
        for s in steps:
            assert np.array_equal(store.read_frame(1, s.step), assault_frames[s.step])


PRODUCER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from framestore import FrameStore
    path, start, n, progress = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    frames = [np.full((210, 160, 3), i % 251, dtype=np.uint8) for i in range(n)]
    store = FrameStore.open(path)
    rec = store.recorder("ALE/Assault-v5", overrides={"writer": "process", "writer_start": start})
    rec.begin_episode(seed=0)
    for i in range(n):
        rec.record_step(frames[i], action=i % 7)
    with open(progress, "w") as f:
        f.write(f"{rec.writer_pid} {n}\\n")
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("start", ["spawn", "fork"])
def test_producer_killed_storage_process_commits_what_it_has_and_exits(tmp_path, start):
    path = tmp_path / "p.store"
    progress = tmp_path / "progress"
    n = 300
    proc = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(path), start, str(n), str(progress)],
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    pid, sent = map(int, progress.read_text().split())
    wait_for(lambda: not alive(pid), timeout=30)
    # Its shared memory went with it (the producer could not unlink it).
    wait_for(lambda: not shm_blocks(proc.pid), timeout=10)
    report = recover(path)
    assert report.frames_lost == {}
    assert verify(path).ok
    with FrameStore.open(path, readonly=True) as store:
        steps = store.read_steps(1)
        # Every step whose chunk left the producer was committed, with its frame; the
        # open chunk (at most one chunk of steps) died with the producer.
        chunk = resolve("ALE/Assault-v5").settings.chunk_frames
        assert sent - chunk < len(steps) <= sent
        assert [s.step for s in steps] == list(range(len(steps)))
        for s in steps[:: max(1, sent // 20)]:
            assert store.read_frame(1, s.step)[0, 0, 0] == s.step % 251


def test_drop_policy_drops_frames_and_keeps_every_row(tmp_path):
    path = tmp_path / "p.store"
    frames = _noise(8)
    overrides = {
        "policy": "drop",
        "queue_frames": 4,
        "level": 19,
        "chunk_frames": 2,
        **writer_overrides("process"),
    }
    with FrameStore.open(path) as store:
        with store.recorder(ENV_ID, overrides=overrides) as rec:
            rec.begin_episode()
            for i in range(200):
                rec.record_step(frames[i % 8], action=1)
            rec.end_episode()
            rec.flush()
            m = rec.metrics().frames
            assert m.frames_dropped > 0
            assert m.frames_written + m.frames_dropped == 200
            assert m.high_water_frames <= 4
        ep = store.episodes()[0]
        assert ep.steps == 200 and ep.frames_dropped == m.frames_dropped
        assert ep.frames == 200 - m.frames_dropped
        locs = store.frame_locations(ep.id)
        assert sum(loc is None for _, loc in locs) == m.frames_dropped


def test_block_policy_times_out_with_queue_full_and_records_nothing(tmp_path):
    path = tmp_path / "p.store"
    frames = _noise(4)
    overrides = {
        "queue_frames": 2,
        "level": 19,
        "chunk_frames": 1,
        "block_timeout": 0.001,
        **writer_overrides("process"),
    }
    with FrameStore.open(path) as store:
        with store.recorder(ENV_ID, overrides=overrides) as rec:
            rec.begin_episode()
            recorded = 0
            with pytest.raises(QueueFull):
                for i in range(500):
                    rec.record_step(frames[i % 4])
                    recorded += 1
            rec.end_episode()
        ep = store.episodes()[0]
        assert ep.steps == recorded == ep.frames  # the refused step left nothing


def test_a_new_frame_shape_replaces_the_ring(tmp_path, assault_frames):
    path = tmp_path / "p.store"
    big = _noise(5, shape=(400, 600, 3))
    with FrameStore.open(path) as store:
        with store.recorder(ENV_ID, overrides=writer_overrides("process")) as rec:
            rec.begin_episode()
            for f in assault_frames[:5]:
                rec.record_step(f)
            rec.end_episode()
            rec.begin_episode()
            for f in big:
                rec.record_step(f)
            rec.record_step(assault_frames[5])  # smaller: fits the new slots
            rec.end_episode()
        got = list(store.iter_frames(1)) + list(store.iter_frames(2))
    want = [*assault_frames[:5], *big, assault_frames[5]]
    assert len(got) == len(want) and all(
        np.array_equal(a, b) for a, b in zip(got, want, strict=True)
    )


def test_bad_input_is_refused_in_the_producer(tmp_path, assault_frames):
    path = tmp_path / "p.store"
    with FrameStore.open(path) as store:
        with store.recorder(
            ENV_ID, action_space=gym.spaces.Discrete(7), overrides=writer_overrides("process")
        ) as rec:
            rec.begin_episode()
            with pytest.raises(InvalidInput):
                rec.record_step(assault_frames[0].astype(np.float32))
            with pytest.raises(InvalidInput):
                rec.record_step(assault_frames[0], action=9)
            rec.record_step(assault_frames[1], action=3)
        assert [s.action for s in store.read_steps(1)] == [3]


def test_storage_process_logs_reach_the_producers_loggers(tmp_path, caplog):
    path = tmp_path / "p.store"
    frames = _noise(4)
    overrides = {"queue_frames": 4, "level": 19, "chunk_frames": 1, **writer_overrides("process")}
    # DEBUG: the sink logs every commit (LOG933), so the storage process has a line to
    # send whatever the timing (a full queue's warning depends on who is faster)
    with caplog.at_level(logging.DEBUG, logger="telemetry"):
        with FrameStore.open(path) as store:
            with store.recorder(ENV_ID, overrides=overrides) as rec:
                rec.begin_episode()
                for i in range(40):
                    rec.record_step(frames[i % 4])
                pid = rec.writer_pid
    ours = [r for r in caplog.records if r.process == pid]
    assert ours and any(r.getMessage().startswith("LOG933 queue=db") for r in ours)


@pytest.mark.parametrize(
    "exc",
    [
        StoreLocked("/x/s.store", "pid 12"),
        DiskFull("/x/s.store/segments", "the frame writer stopped"),
        QueueFull("frame queue", 2.0, "4/4 frames"),
        WriterFailed("frame writer failed: boom"),
    ],
)
def test_errors_cross_the_process_boundary_unchanged(exc):
    import pickle

    back = decode_error(pickle.loads(pickle.dumps(encode_error(exc))))
    assert type(back) is type(exc) and str(back) == str(exc) and vars(back) == vars(exc)


# ------------------------------------------------------------- found in review (issue 14)
def test_an_empty_batch_neither_kills_the_storage_process_nor_hangs_a_flush(tmp_path):
    """``record_steps([])`` (a vector reset whose mask is all False) once made the storage
    process exit without a word; the next ``flush()`` then waited forever."""
    path = tmp_path / "p.store"
    frames = _noise(3)
    with FrameStore.open(path) as store:
        with store.recorder(ENV_ID, overrides=writer_overrides("process")) as rec:
            eid = rec.open_episode(seed=1)
            rec.record_steps([eid], frames[:1])
            rec.flush(timeout=30)  # so the empty batch is read on its own, not with a row
            assert rec.record_steps([], None) == []
            time.sleep(0.2)
            rec.flush(timeout=30)  # answered (before: no reply, ever)
            rec.record_steps([eid], frames[1:2])
            rec.close_episode(eid, status="complete")
        got = list(store.iter_frames(eid))
    assert len(got) == 2 and all(np.array_equal(a, b) for a, b in zip(got, frames[:2], strict=True))


def test_a_chunk_that_cannot_be_sent_gives_its_ring_slot_back(tmp_path, monkeypatch):
    """A chunk whose command is refused (queue full, Ctrl-C) after its frames took a ring
    slot: the caller gets the error, the slot and the frames' room are free again, so the
    queue drains to 0 and a new frame shape (which waits for the ring to drain) works."""
    from framestore.write.process._client import ProcessStorage
    from framestore.write.process._wire import Cmd

    path = tmp_path / "p.store"
    frames = _noise(4)
    send = ProcessStorage._send
    refused = []

    def refuse_first_chunk(self, msg, weight=0, timeout=None):
        if msg[0] == Cmd.CHUNK and not refused:
            refused.append(msg)
            raise QueueFull("telemetry DB queue", 0.0, "refused by the test")
        return send(self, msg, weight, timeout)

    monkeypatch.setattr(ProcessStorage, "_send", refuse_first_chunk)
    overrides = {**writer_overrides("process"), "block_timeout": 5.0}
    with FrameStore.open(path) as store:
        with store.recorder(ENV_ID, overrides=overrides) as rec:
            rec.begin_episode()
            rec.record_step(frames[0])
            with pytest.raises(QueueFull):
                rec.flush()
            assert rec.metrics().frames.queue_frames == 0
            rec.record_step(frames[1])
            rec.flush()
            assert rec.metrics().frames.queue_frames == 0
            rec.record_step(_noise(1, shape=(400, 600, 3))[0])  # a new ring: drained first
            rec.end_episode()
        assert refused
        eid = store.episodes()[0].id
        assert [s.step for s in store.read_steps(eid)] == [1, 2]


def test_a_batch_larger_than_the_row_bound_goes_when_nothing_is_in_flight(tmp_path):
    path = tmp_path / "p.store"
    overrides = {**writer_overrides("process"), "sink_queue": 8, "batch_size": 4}
    with FrameStore.open(path) as store:
        with store.recorder(ENV_ID, overrides=overrides) as rec:
            eids = [rec.open_episode(seed=i) for i in range(50)]
            rec.record_steps(eids, None, rewards=[1.0] * 50)  # 50 rows > 8 + 4
            for e in eids:
                rec.close_episode(e, status="complete")
        assert sum(e.steps for e in store.episodes()) == 50


def test_the_ring_fits_the_shared_memory_room(tmp_path, monkeypatch):
    """A tmpfs smaller than ``queue_bytes`` (Docker's /dev/shm is 64 MiB) would let the
    ring be created and kill the producer with SIGBUS when it fills: the ring takes at
    most half the room, and no room for one frame is one clear error."""
    import framestore.write.process._client as client

    real = os.statvfs
    room = {"bytes": 8 * 100_800}

    class Small:
        f_frsize = 4096

        @property
        def f_bavail(self):
            return room["bytes"] // 4096

    monkeypatch.setattr(client.os, "statvfs", lambda p: Small() if p == SHM_DIR else real(p))
    path = tmp_path / "p.store"
    frames = _noise(12)
    overrides = {**writer_overrides("process"), "queue_bytes": 64 << 20}
    with FrameStore.open(path) as store:
        with store.recorder(ENV_ID, overrides=overrides) as rec:
            rec.begin_episode()
            for f in frames:
                rec.record_step(f)
            bound = rec.metrics().frames.bound_bytes
            assert 0 < bound <= room["bytes"] // 2
            rec.end_episode()
        got = list(store.iter_frames(store.episodes()[0].id))
        assert all(np.array_equal(a, b) for a, b in zip(got, frames, strict=True))
        room["bytes"] = 100_000  # half of it holds no 100,800-byte frame
        with store.recorder(ENV_ID, overrides=overrides) as rec:
            rec.begin_episode()
            with pytest.raises(WriterFailed, match="shm-size"):
                rec.record_step(frames[0])


def test_close_when_the_close_command_cannot_be_sent_still_ends_the_process(tmp_path, monkeypatch):
    """Closing while the pipe stays full (or on Ctrl-C): the command pipe is hung up, the
    storage process commits what it has and exits; nothing is left running (conftest)."""
    from framestore.write.process._client import ProcessStorage
    from framestore.write.process._wire import Cmd

    path = tmp_path / "p.store"
    frames = _noise(5)
    send = ProcessStorage._send

    def no_room_for_close(self, msg, weight=0, timeout=None):
        if msg[0] == Cmd.CLOSE:
            raise KeyboardInterrupt
        return send(self, msg, weight, timeout)

    monkeypatch.setattr(ProcessStorage, "_send", no_room_for_close)
    with FrameStore.open(path) as store:
        rec = store.recorder(ENV_ID, overrides=writer_overrides("process"))
        pid = rec.writer_pid
        rec.begin_episode()
        for f in frames:
            rec.record_step(f)
        rec.flush()
        with pytest.raises(KeyboardInterrupt):
            rec.close()
        wait_for(lambda: not alive(pid), timeout=30)
    recover(path)
    assert verify(path).ok
    with FrameStore.open(path, readonly=True) as store:
        got = list(store.iter_frames(store.episodes()[0].id))
    assert len(got) == 5 and all(np.array_equal(a, b) for a, b in zip(got, frames, strict=True))


def test_a_defect_in_the_storage_process_is_an_error_at_the_next_call(tmp_path, monkeypatch):
    """An unexpected exception while carrying out a command (a bug, not a store error) is
    reported to the producer, which raises at its next call instead of waiting forever;
    what was committed before stays readable. (``fork``: the child inherits the patch.)"""
    import framestore.write.process._main as proc

    def broken(self, msg):
        raise RuntimeError("a defect")

    path = tmp_path / "p.store"
    frames = _noise(3)
    errors = []
    with FrameStore.open(path) as store:
        rec = store.recorder(
            ENV_ID, overrides=writer_overrides("process", "fork"), on_error=errors.append
        )
        rec.begin_episode()
        rec.record_step(frames[0])
        rec.flush(timeout=30)
        monkeypatch.setattr(proc._Server, "chunk", broken)  # not seen by the running child
        rec.close()
        rec = store.recorder(
            ENV_ID, overrides=writer_overrides("process", "fork"), on_error=errors.append
        )
        pid = rec.writer_pid
        rec.begin_episode()
        rec.record_step(frames[1])
        wait_for(lambda: errors, timeout=30)
        assert "a defect" in str(errors[0])
        with pytest.raises(WriterFailed, match="a defect"):
            rec.record_step(frames[2])
            rec.flush(timeout=30)
        with pytest.raises(WriterFailed):
            rec.close()
        assert not alive(pid)
    recover(path)
    assert verify(path).ok
    with FrameStore.open(path, readonly=True) as store:
        assert np.array_equal(next(iter(store.iter_frames(1))), frames[0])
