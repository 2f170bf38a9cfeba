"""Bad input of every kind gets a clear error and never damages what is stored: after
each refusal the store still verifies clean and reads back exactly. CLI cases: one
``framestore: error:`` line, a documented exit code, no traceback."""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
import tracemalloc
import zlib
from contextlib import closing

import numpy as np
import pytest
from conftest import WRITERS, assert_one_line_error, run_cli

from framestore import FrameStore
from framestore._format import ChunkHeader, Codec, RecordType, pack_record
from framestore.disk.segments import segment_path
from framestore.errors import (
    CorruptData,
    CorruptRecord,
    EpisodeNotFound,
    InfoTooLarge,
    InvalidFrame,
    InvalidInput,
    SchemaTooNew,
    StoreLocked,
)
from tools.gc import collect
from tools.recover import recover
from tools.verify import verify

ENV_ID = "ALE/Assault-v5"


@pytest.fixture
def recorded(store_path, assault_frames):
    """A closed store with two 10-step episodes."""
    want = {}
    with FrameStore.open(store_path) as store, store.recorder(ENV_ID) as rec:
        for e in range(2):
            eid = rec.begin_episode(seed=e)
            want[eid] = assault_frames[e * 10 : e * 10 + 10]
            for i, f in enumerate(want[eid]):
                rec.record_step(f, action=i % 7, reward=1.0)
            rec.end_episode()
    return store_path, want


def assert_intact(path, want) -> None:
    r = verify(path)
    assert r.ok, [str(p) for p in r.problems]
    with FrameStore.open(path, readonly=True) as store:
        for eid, frames in want.items():
            got = list(store.iter_frames(eid, skip_missing=False))
            assert len(got) == len(frames)
            assert all(np.array_equal(a, b) for a, b in zip(got, frames, strict=True))


BAD_FRAMES = [
    ("float32", lambda f: f.astype(np.float32)),
    ("int16", lambda f: f.astype(np.int16)),
    ("4-d", lambda f: f[None]),
    ("1-d", lambda f: f.reshape(-1)),
    ("empty", lambda f: f[:0]),
    ("5 channels", lambda f: np.zeros((4, 4, 5), np.uint8)),
    ("object", lambda f: np.array([[object()]], dtype=object)),
    ("not an array", lambda f: "pixels"),
    ("too large", lambda f: np.zeros((8193, 8193), np.uint8)),
]


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_refused_steps_record_nothing_and_damage_nothing(writer, recorded, assault_frames):
    path, want = recorded
    grey = (assault_frames[50].mean(axis=2)).astype(np.uint8)[::2, ::2]  # 105x80
    with FrameStore.open(path) as store, store.recorder(ENV_ID) as rec:
        eid = rec.begin_episode(seed=9)
        rec.record_step(assault_frames[40])
        for _name, make in BAD_FRAMES:
            with pytest.raises(InvalidInput):  # InvalidFrame, or the queue's size bound
                rec.record_step(make(assault_frames[41]), action=1)
        for reward in (float("nan"), float("inf"), -float("inf"), "1.0", None):
            with pytest.raises(InvalidInput):
                rec.record_step(assault_frames[41], action=1, reward=reward)
        with pytest.raises(InfoTooLarge):
            rec.record_step(assault_frames[41], info={"blob": "x" * (65 * 1024)})
        with pytest.raises(InvalidInput, match="lock"):
            rec.record_step(assault_frames[41], info={"lock": threading.Lock()})
        assert rec.metrics().frames.frames_in == 1
        # Non-finite numbers inside info are data, stored tagged and read back as such.
        rec.record_step(assault_frames[41], action=1, info={"x": float("nan"), "y": -np.inf})
        # A shape change mid-episode is allowed: a new chunk, read back at its own shape.
        rec.record_step(grey, action=2)
        rec.record_step(assault_frames[42], action=3)
        rec.end_episode()
        want[eid] = [assault_frames[40], assault_frames[41], grey, assault_frames[42]]
    with FrameStore.open(path, readonly=True) as store:
        steps = store.read_steps(eid)
        assert np.isnan(steps[1].info["x"]) and steps[1].info["y"] == -np.inf
        shapes = [s.frame_shape for s in steps]
        assert shapes == [(210, 160, 3), (210, 160, 3), (105, 80), (210, 160, 3)]
    assert_intact(path, want)
    with pytest.raises(InvalidFrame):
        with FrameStore.open(path) as store, store.recorder(ENV_ID) as rec:
            rec.begin_episode()
            rec.record_step(np.zeros((2, 2), np.float64))
    assert_intact(path, want)


def test_unknown_ids_and_not_a_store(recorded, tmp_path):
    path, want = recorded
    with FrameStore.open(path) as store:
        for call in (
            lambda: store.episode(99),
            lambda: store.read_frame(99, 0),
            lambda: list(store.iter_frames(99)),
            lambda: store.delete_episodes([1, 99]),  # nothing deleted: all or nothing
        ):
            with pytest.raises(EpisodeNotFound):
                call()
        with pytest.raises(InvalidInput):
            store.recorder("")
    assert_intact(path, want)

    assert "no episode 99" in assert_one_line_error(
        run_cli("export", path, "--episode", 99, "-o", tmp_path / "x.npz"), 2
    )
    assert "no episode 99" in assert_one_line_error(run_cli("rm", path, "--episode", 99), 2)
    assert "unknown environment" in assert_one_line_error(
        run_cli("record", tmp_path / "n.store", "--env", "Nope-v9"), 2
    )
    assert_intact(path, want)

    file = tmp_path / "file.txt"
    file.write_text("not a store")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.md").write_text("mine")
    for target in (file, other, tmp_path / "missing"):
        for verb in ("ls", "info", "verify", "recover", "gc"):
            assert_one_line_error(run_cli(verb, target), 2)
        assert_one_line_error(
            run_cli("export", target, "--episode", 1, "-o", tmp_path / "y.npz"), 2
        )
    assert file.read_text() == "not a store" and os.listdir(other) == ["notes.md"]


def test_store_from_a_newer_schema_is_refused_untouched(recorded):
    path, want = recorded
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
            "VALUES ('framestore', 'm999_from_the_future', '2099-01-01')"
        )
    before = (path / "framestore.db").read_bytes()
    for readonly in (False, True):
        with pytest.raises(SchemaTooNew, match="m999_from_the_future"):
            FrameStore.open(path, readonly=readonly)
    for args in (["ls"], ["verify"], ["recover"], ["gc"], ["rm", "--episode", "1"]):
        line = assert_one_line_error(run_cli(args[0], path, *args[1:]), 2)
        assert "newer" in line and "m999_from_the_future" in line
    assert (path / "framestore.db").read_bytes() == before


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_two_writers_one_store(writer, recorded, assault_frames):
    path, want = recorded
    with FrameStore.open(path) as a, a.recorder(ENV_ID) as rec:
        eid = rec.begin_episode(seed=5)
        rec.record_step(assault_frames[60])
        rec.flush()
        with FrameStore.open(path) as b:
            with pytest.raises(StoreLocked):
                b.recorder(ENV_ID)
            with pytest.raises(StoreLocked):
                collect(b)
            with pytest.raises(StoreLocked):
                recover(b)
        assert "locked" in assert_one_line_error(run_cli("record", path, "--env", "CartPole-v1"), 4)
        assert "locked" in assert_one_line_error(run_cli("gc", path), 4)
        assert "locked" in assert_one_line_error(run_cli("recover", path), 4)
        rec.record_step(assault_frames[61], action=1)
        rec.end_episode()
    want[eid] = assault_frames[60:62]
    assert_intact(path, want)


def test_segment_rows_pointing_outside_the_store(recorded, tmp_path, assault_frames):
    path, want = recorded
    outside = tmp_path / "outside.fseg"
    outside.write_bytes(segment_path(path, 1).read_bytes())  # a valid segment elsewhere
    os.symlink(outside, segment_path(path, 77))
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute("UPDATE segments SET path = '../../etc/passwd' WHERE id = 1")
        conn.execute("INSERT INTO segments (id, path, state) VALUES (2, '/etc/passwd', 'sealed')")
        conn.execute("UPDATE steps SET frame_segment = 77 WHERE episode_id = 1 AND step = 3")
        conn.execute("UPDATE steps SET frame_segment = -5 WHERE episode_id = 1 AND step = 4")
    with FrameStore.open(path, readonly=True) as store:
        assert np.array_equal(store.read_frame(1, 0), want[1][0])  # paths are never used
        with pytest.raises(CorruptRecord, match="symlink"):
            store.read_frame(1, 3)
        with pytest.raises(CorruptRecord, match="invalid frame pointer"):
            store.read_frame(1, 4)
    result = run_cli("verify", path)
    assert result.exit_code == 1
    assert "bad path" in result.output and "../../etc/passwd" in result.output
    assert "not a regular file" in result.output
    report = recover(path)
    assert report.frames_lost == {1: 2}  # the two steps lose their pointers, rows stay
    assert any("not a regular file" in n for n in report.notes)
    assert outside.read_bytes() == segment_path(path, 1).read_bytes()  # never touched
    want[1] = [f for i, f in enumerate(want[1]) if i not in (3, 4)]
    with FrameStore.open(path, readonly=True) as store:
        got = list(store.iter_frames(1))
        assert all(np.array_equal(a, b) for a, b in zip(got, want[1], strict=True))
        assert np.array_equal(store.read_frame(2, 9), want[2][9])


def test_decompression_bomb_in_a_store_is_refused(recorded):
    path, want = recorded
    # A new segment holding one well-formed CHUNK record (valid CRC) whose header claims
    # 64 frames of 4096x4096x4 (4 GiB) over a few bytes of zstd data.
    header = ChunkHeader(Codec.ZSTD, 3, 4096, 4096, 4, 1, tuple(range(64)), (4096 * 4096 * 4,) * 64)
    payload = header.pack() + b"\x28\xb5\x2f\xfd" + b"\0" * 64
    data = bytearray(segment_path(path, 1).read_bytes()[:24])
    data[12:16] = struct.pack("<I", 9)
    data[20:24] = struct.pack("<I", zlib.crc32(bytes(data[:20])))
    seg = segment_path(path, 9)
    seg.write_bytes(bytes(data) + pack_record(RecordType.CHUNK, payload))
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute(
            "UPDATE steps SET frame_segment = 9, frame_offset = 24, frame_slot = 0 "
            "WHERE episode_id = 1 AND step = 0"
        )
    tracemalloc.start()
    try:
        with FrameStore.open(path, readonly=True) as store:
            with pytest.raises(CorruptData, match="exceeds"):
                store.read_frame(1, 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, peak
    result = run_cli("verify", path)
    assert result.exit_code == 1 and "exceeds" in result.output
    assert "exceeds" in assert_one_line_error(
        run_cli("export", path, "--episode", 1, "-o", path.parent / "b.npz"), 5
    )
