"""gc: compaction reclaims space, never loses a live frame, survives a crash at any phase."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SMALL_SEGMENTS, record_episodes

from framestore import FrameStore
from framestore.disk.segments import list_partials, list_segment_ids, segment_path
from tools.cli import cli
from tools.gc import PHASES, collect
from tools.recover import recover
from tools.verify import verify

# Raw chunks of 4 Atari frames (~400 KB) in 1 MiB segments (the smallest allowed): a
# 14-step episode spans parts of three segments, so three episodes give several sealed ones.
OVERRIDES = SMALL_SEGMENTS
STEPS = 14


def record(path, frames, episodes=3, steps=STEPS):
    return record_episodes(
        path, frames, episodes=episodes, steps=steps, overrides=OVERRIDES, reward=lambda i: float(i)
    )


def expected(frames, ids, steps=STEPS):
    return {eid: frames[e * steps : (e + 1) * steps] for e, eid in enumerate(ids)}


def assert_frames(path, want):
    with FrameStore.open(path, readonly=True) as store:
        for eid, frames in want.items():
            got = list(store.iter_frames(eid))
            assert len(got) == len(frames)
            for a, b in zip(got, frames, strict=True):
                assert np.array_equal(a, b)


def snapshot(path):
    """Every file's bytes (hashed) and every table's rows."""
    files = {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.startswith("framestore.db") and p.name != "LOCK"
    }
    conn = sqlite3.connect(f"file:{path / 'framestore.db'}?mode=ro", uri=True)
    try:
        tables = {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for t in ("runs", "episodes", "steps", "segments")
        }
    finally:
        conn.close()
    return files, tables


@pytest.fixture
def three(store_path, assault_frames):
    ids = record(store_path, assault_frames)
    return store_path, ids, expected(assault_frames, ids)


def delete(path, ids):
    with FrameStore.open(path) as store:
        store.delete_episodes(ids)


def test_gc_gives_back_deleted_space_and_keeps_the_rest(three):
    path, ids, want = three
    assert len(list_segment_ids(path)) >= 3
    delete(path, [ids[0], ids[2]])
    r = collect(path)
    assert not r.dry_run
    assert r.segment_bytes_reclaimed >= r.segment_bytes_before / 2
    assert r.segment_bytes_after == sum(
        segment_path(path, s).stat().st_size for s in list_segment_ids(path)
    )
    assert r.segments_deleted and r.segments_rewritten and r.segments_written
    assert r.steps_repointed > 0
    assert r.step_rows_removed == 2 * STEPS
    assert r.db_bytes_after <= r.db_bytes_before
    assert not set(r.segments_deleted) & set(list_segment_ids(path))
    assert_frames(path, {ids[1]: want[ids[1]]})
    with FrameStore.open(path, readonly=True) as store:
        assert [e.id for e in store.episodes()] == [ids[1]]
        gone = store.episode(ids[0], include_deleted=True)
        assert gone.status == "deleted" and gone.steps == 0
    assert verify(path).ok
    again = collect(path)  # nothing left to do
    assert not again.segments_rewritten and again.segment_bytes_reclaimed == 0


def test_dry_run_changes_nothing(three):
    path, ids, _ = three
    delete(path, [ids[0], ids[2]])
    before = snapshot(path)
    r = collect(path, dry_run=True)
    assert r.dry_run
    assert snapshot(path) == before
    real = collect(path)
    assert sorted(r.segments_deleted) == sorted(real.segments_deleted)
    assert r.segments_rewritten == real.segments_rewritten
    assert r.step_rows_removed == real.step_rows_removed
    assert r.steps_repointed == real.steps_repointed


class Crash(Exception):
    pass


@pytest.mark.parametrize("cleanup", ["gc", "recover"])
@pytest.mark.parametrize("phase", PHASES)
def test_crash_at_any_phase_loses_no_live_frame(three, phase, cleanup):
    path, ids, want = three
    delete(path, [ids[0], ids[2]])
    live = {ids[1]: want[ids[1]]}

    def hook(p):
        if p == phase:
            raise Crash(p)

    with pytest.raises(Crash):
        collect(path, threshold=1.0, _hook=hook)
    assert_frames(path, live)  # old or new pointers, never dangling
    leftovers = {"copied": "partial leftover", "renamed": "unexpected segment"}
    leftovers["repointed"] = "obsolete leftover"
    if phase in leftovers:
        assert leftovers[phase] in {p.kind for p in verify(path).problems}
    if cleanup == "gc":
        collect(path)
    else:
        assert not recover(path).data_lost
    assert not list_partials(path)
    report = verify(path)
    assert report.ok, [str(p) for p in report.problems]
    assert_frames(path, live)
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        on_disk = set(list_segment_ids(path))
        rows = {r[0] for r in conn.execute("SELECT id FROM segments WHERE state != 'obsolete'")}
    assert rows == on_disk


def test_gc_while_a_reader_is_open(three):
    path, ids, want = three
    delete(path, ids[:1])
    with FrameStore.open(path, readonly=True) as reader:
        first = list(reader.iter_frames(ids[1]))  # caches chunks, holds descriptors
        assert reader.reader._fds
        old = set(list_segment_ids(path))
        r = collect(path, threshold=1.0)  # rewrites every segment with live data
        assert old.isdisjoint(list_segment_ids(path))
        assert r.segments_written
        for eid in ids[1:]:
            got = list(reader.iter_frames(eid))
            assert all(np.array_equal(a, b) for a, b in zip(got, want[eid], strict=True))
            assert {loc[0] for _s, loc in reader.frame_locations(eid)} <= set(r.segments_written)
        reader.reader.forget()
        assert all(
            np.array_equal(a, b) for a, b in zip(reader.iter_frames(ids[1]), first, strict=True)
        )


def test_locked_store_exits_4(three):
    path, _, _ = three
    with FrameStore.open(path) as store:
        rec = store.recorder("ALE/Assault-v5", overrides=OVERRIDES)
        try:
            result = CliRunner().invoke(cli, ["gc", str(path)])
        finally:
            rec.close()
    assert result.exit_code == 4, result.output
    assert "locked" in result.output


def test_cli_gc_dry_run_and_json(three):
    import json

    path, ids, _ = three
    delete(path, [ids[0], ids[2]])
    runner = CliRunner()
    dry = runner.invoke(cli, ["gc", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output and "would" in dry.output
    res = runner.invoke(cli, ["gc", str(path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["segment_bytes_reclaimed"] > 0 and data["step_rows_removed"] == 2 * STEPS
    bad = runner.invoke(cli, ["gc", str(path), "--threshold", "2"])
    assert bad.exit_code == 2


def test_gc_refuses_a_store_left_recording(three):
    path, ids, _ = three
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute("UPDATE episodes SET status = 'recording' WHERE id = ?", (ids[2],))
    result = CliRunner().invoke(cli, ["gc", str(path)])
    assert result.exit_code == 2
    assert "recover" in result.output
