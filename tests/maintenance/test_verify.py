"""verify: read-only checks of checksums, pointers and the catalogue."""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
from contextlib import closing

import pytest
from click.testing import CliRunner
from conftest import SMALL_SEGMENTS, record_episodes

from framestore import FrameStore
from framestore.disk import codecs as codecs_mod
from framestore.disk.segments import SEAL_RECORD_SIZE, list_segment_ids, segment_path
from tools.cli import cli
from tools.verify import verify

OVERRIDES = SMALL_SEGMENTS
STEPS = 10


def record(path, frames, episodes=3, steps=STEPS):
    return record_episodes(path, frames, episodes=episodes, steps=steps, overrides=OVERRIDES)


@pytest.fixture
def recorded(store_path, assault_frames):
    return store_path, record(store_path, assault_frames)


def locations(path, eid):
    with FrameStore.open(path, readonly=True) as store:
        return store.frame_locations(eid)


def flip(path, offset):
    with open(path, "r+b") as fp:
        fp.seek(offset)
        b = fp.read(1)
        fp.seek(offset)
        fp.write(bytes([b[0] ^ 0xFF]))


def test_clean_store_exits_0(recorded):
    path, _ = recorded
    r = verify(path)
    assert r.ok and r.steps_checked == 3 * STEPS and r.frames_checked == 3 * STEPS
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok:")


def test_flipped_byte_names_episode_and_steps(recorded):
    path, ids = recorded
    locs = locations(path, ids[1])
    # the episode's biggest chunk (where the writer cut chunks depends on timing: the
    # sink's commits close the open one), so that one flip names several steps
    chunks: dict[tuple[int, int], list[int]] = {}
    for s, loc in locs:
        chunks.setdefault(loc[:2], []).append(s)
    (seg, off), same_chunk = max(chunks.items(), key=lambda kv: len(kv[1]))
    assert len(same_chunk) > 1
    flip(segment_path(path, seg), off + 8 + 28 + 8 * len(same_chunk) + 1000)  # pixel data

    for quick in (False, True):
        r = verify(path, quick=quick)
        hits = [p for p in r.problems if p.episode == ids[1]]
        assert len(hits) == 1, [str(p) for p in r.problems]
        p = hits[0]
        assert p.kind == "checksum" and p.segment == seg and p.offset == off
        assert sorted(p.steps) == same_chunk and p.step == min(same_chunk)
        assert not [q for q in r.problems if q.episode not in (ids[1],)]  # other chunks fine

    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if x.startswith("checksum"))
    assert f"episode {ids[1]}" in line
    assert f"steps {same_chunk[0]}-{same_chunk[-1]}" in line


def test_missing_segment_file(recorded):
    path, ids = recorded
    seg = locations(path, ids[0])[0][1][0]
    os.unlink(segment_path(path, seg))
    r = verify(path)
    kinds = {p.kind for p in r.problems}
    assert {"missing segment", "dangling pointer"} <= kinds
    dangling = [p for p in r.problems if p.kind == "dangling pointer"]
    assert all(p.segment == seg and p.episode is not None and p.steps for p in dangling)
    result = CliRunner().invoke(cli, ["verify", str(path), "--json"])
    assert result.exit_code == 1
    assert not json.loads(result.stdout)["ok"]


def test_hostile_paths_are_reported_and_never_opened(recorded, monkeypatch, tmp_path):
    path, _ = recorded
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute("UPDATE segments SET path = '../../etc/passwd' WHERE id = 1")
        conn.execute("UPDATE segments SET path = '/etc/shadow' WHERE id = 2")
    secret = tmp_path / "secret"
    secret.write_bytes(b"x" * 100)
    os.symlink(secret, segment_path(path, 99))

    opened = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *a, **k):
        opened.append(str(file))
        return real_open(file, *a, **k)

    def spy_os_open(file, *a, **k):
        opened.append(str(file))
        return real_os_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    r = verify(path)
    monkeypatch.undo()

    bad = [p for p in r.problems if p.kind == "bad path"]
    assert {p.segment for p in bad} == {1, 2, 99}
    assert any("../../etc/passwd" in p.message for p in bad)
    assert not [f for f in opened if "passwd" in f or "shadow" in f or "secret" in f]
    assert not [f for f in opened if f.endswith("seg-000099.fseg")]


def test_quick_mode_does_not_decompress(recorded, monkeypatch):
    path, _ = recorded

    def boom(*a, **k):
        raise AssertionError("quick mode decoded a chunk")

    # every decoder (the scan's and the reader's) loads decode_chunk from codecs on use
    monkeypatch.setattr(codecs_mod, "decode_chunk", boom)
    r = verify(path, quick=True)
    assert r.ok and r.quick and r.frames_checked == 3 * STEPS
    result = CliRunner().invoke(cli, ["verify", str(path), "--quick"])
    assert result.exit_code == 0, result.output


def test_verify_is_read_only_and_knows_a_running_writer(recorded, assault_frames):
    path, ids = recorded
    db = path / "framestore.db"
    with FrameStore.open(path) as store:
        rec = store.recorder("ALE/Assault-v5", overrides=OVERRIDES)
        try:
            rec.begin_episode()
            for f in assault_frames[:6]:
                rec.record_step(f)
            rec.flush()
            r = verify(path)
            assert r.writer_running is True
            assert r.ok, [str(p) for p in r.problems]  # 'recording' + active segment: fine
        finally:
            rec.close()
    # a stale 'recording' episode is reported once no writer holds the lock
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE episodes SET status = 'recording' WHERE id = ?", (ids[0],))

    def files():  # SQLite's reader index (-shm) and an empty -wal are not store changes
        return {
            f.name: f.read_bytes()
            for f in path.rglob("*")
            if f.is_file() and not f.name.endswith("-shm") and f.stat().st_size
        }

    before = files()
    r = verify(path)
    assert r.writer_running is False
    assert [(p.kind, p.episode) for p in r.problems] == [("stale recording", ids[0])]
    assert files() == before


def test_unsealed_and_partial_leftovers_are_reported(recorded):
    path, _ = recorded
    last = list_segment_ids(path)[-1]
    p = segment_path(path, last)
    os.truncate(p, p.stat().st_size - SEAL_RECORD_SIZE)  # drop the seal
    (p.parent / "seg-000500.fseg.partial").write_bytes(b"")
    kinds = sorted(q.kind for q in verify(path).problems)
    assert kinds == ["partial leftover", "unsealed"]


def test_not_a_store_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["verify", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.output.startswith("framestore: error:")
