"""recover: torn tails, crashed writers, corrupt records and lost rows."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SMALL_SEGMENTS, record_episodes

from framestore import FrameStore, InvalidInput
from framestore.catalog import COMPACTION_OUTPUTS
from framestore.disk.segments import list_segment_ids, segment_path
from tools.cli import cli
from tools.recover import recover
from tools.verify import verify

OVERRIDES = SMALL_SEGMENTS
STEPS = 10


def record(path, frames, episodes=3, steps=STEPS):
    return record_episodes(path, frames, episodes=episodes, steps=steps, overrides=OVERRIDES)


@pytest.fixture
def recorded(store_path, assault_frames):
    ids = record(store_path, assault_frames)
    want = {eid: assault_frames[e * STEPS : (e + 1) * STEPS] for e, eid in enumerate(ids)}
    return store_path, ids, want


def frames_of(path, eid):
    with FrameStore.open(path, readonly=True) as store:
        return dict(store.iter_steps_frames(eid))


def assert_clean(path):
    r = verify(path)
    assert r.ok, [str(p) for p in r.problems]


def assert_idempotent(path):
    result = CliRunner().invoke(cli, ["recover", str(path)])
    assert result.exit_code == 0, result.output
    assert "nothing to recover" in result.output
    again = recover(path)
    assert not again.changed and not again.data_lost


def test_torn_tail_is_cut_sealed_and_reported(recorded):
    path, ids, want = recorded
    last = list_segment_ids(path)[-1]
    with FrameStore.open(path, readonly=True) as store:
        locs = [loc for eid in ids for _s, loc in store.frame_locations(eid) if loc[0] == last]
    torn_off = max(loc[1] for loc in locs)
    torn_steps = {
        (ids[-1], s) for s, loc in frames_of_locs(path, ids[-1]) if loc[:2] == (last, torn_off)
    }
    os.truncate(segment_path(path, last), torn_off + 5000)  # mid-record, seal gone
    with (
        closing(sqlite3.connect(path / "framestore.db")) as conn,
        conn,
    ):  # the writer "crashed" mid-episode
        conn.execute("UPDATE episodes SET status = 'recording' WHERE id = ?", (ids[-1],))

    result = CliRunner().invoke(cli, ["recover", str(path)])
    assert result.exit_code == 3, result.output
    assert f"LOST: episode {ids[-1]}: {len(torn_steps)} frame(s)" in result.output
    assert_clean(path)
    with FrameStore.open(path, readonly=True) as store:
        ep = store.episode(ids[-1])
        assert ep.status == "interrupted" and ep.steps == STEPS  # rows kept, frames gone
        assert ep.frames == STEPS - len(torn_steps)
        assert ep.total_reward == STEPS * 1.0
    got = frames_of(path, ids[-1])
    assert set(got) == {s for s in range(STEPS)} - {s for _e, s in torn_steps}
    for s, f in got.items():
        assert np.array_equal(f, want[ids[-1]][s])
    for eid in ids[:-1]:
        assert all(np.array_equal(f, want[eid][s]) for s, f in frames_of(path, eid).items())
    assert_idempotent(path)


def frames_of_locs(path, eid):
    with FrameStore.open(path, readonly=True) as store:
        return store.frame_locations(eid)


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from framestore import FrameStore

    def frame(i):
        return np.random.default_rng(i).integers(0, 256, (210, 160, 3), dtype=np.uint8)

    store = FrameStore.open(sys.argv[1])
    rec = store.recorder("ALE/Assault-v5", overrides={overrides!r})
    rec.begin_episode(seed=0)
    for i in range(10_000):
        rec.record_step(frame(i), action=1, reward=1.0)
        if i == 24:
            rec.flush()
            print("flushed", i + 1, flush=True)
        if i > 24:
            time.sleep(0.002)
    """
).format(overrides=OVERRIDES)


def test_recover_after_sigkill(store_path, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("flushed"), line
        flushed = int(line.split()[1])
        import time

        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()

    before = verify(store_path)
    assert not before.ok  # left recording, unsealed, uncatalogued
    result = CliRunner().invoke(cli, ["recover", str(store_path), "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == (3 if report["data_lost"] else 0), result.output
    assert report["episodes_interrupted"] == [1]
    assert_clean(store_path)
    got = frames_of(store_path, 1)
    assert len(got) >= flushed
    rng = np.random.default_rng
    for s, f in got.items():
        assert np.array_equal(f, rng(s).integers(0, 256, (210, 160, 3), dtype=np.uint8))
    with FrameStore.open(store_path, readonly=True) as store:
        ep = store.episode(1)
        assert ep.status == "interrupted" and ep.steps >= flushed
    assert_idempotent(store_path)


def test_lost_rows_are_rebuilt_from_segments(recorded):
    """Rows and an episode row deleted: the segments (format 3) give them back whole,
    with actions, rewards, flags, info, times and the episode's end."""
    path, ids, want = recorded
    with FrameStore.open(path, readonly=True) as store:
        before = {eid: store.read_steps(eid) for eid in ids}
        episode = store.episode(ids[2])
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute("DELETE FROM steps WHERE episode_id = ? AND step >= 3", (ids[1],))
        conn.execute("DELETE FROM steps WHERE episode_id = ?", (ids[2],))
        conn.execute("DELETE FROM episodes WHERE id = ?", (ids[2],))
    assert not verify(path).ok

    r = recover(path)
    assert not r.data_lost and not r.steps_without_metadata
    assert r.steps_recovered == {ids[1]: STEPS - 3, ids[2]: STEPS}
    assert r.episodes_created == [ids[2]] and r.episodes_ended == [ids[2]]
    assert_clean(path)
    with FrameStore.open(path, readonly=True) as store:
        assert store.episode(ids[2]) == episode
        assert {eid: store.read_steps(eid) for eid in ids} == before
        rows = store.read_steps(ids[1])
        assert rows[5].action == 5 and rows[5].reward == 1.0 and rows[-1].terminated
    for eid in ids[1:]:
        got = frames_of(path, eid)
        assert len(got) == STEPS
        assert all(np.array_equal(f, want[eid][s]) for s, f in got.items())
    assert_idempotent(path)


def test_corruption_in_the_middle_keeps_the_good_records_after_it(recorded):
    path, ids, want = recorded
    locs = frames_of_locs(path, ids[0])
    seg, off, _ = locs[0][1]
    bad_steps = [s for s, loc in locs if loc[:2] == (seg, off)]
    with open(segment_path(path, seg), "r+b") as fp:  # a flipped pixel in the first chunk
        fp.seek(off + 2000)
        b = fp.read(1)
        fp.seek(off + 2000)
        fp.write(bytes([b[0] ^ 0x55]))

    r = recover(path)
    assert r.data_lost and r.frames_lost == {ids[0]: len(bad_steps)}
    assert [c["segment"] for c in r.segments_corrupt] == [seg]
    assert r.segments_rewritten == [seg] and not r.segments_truncated
    assert_clean(path)
    got = frames_of(path, ids[0])
    assert set(got) == set(range(STEPS)) - set(bad_steps)  # every good frame after it kept
    assert all(np.array_equal(f, want[ids[0]][s]) for s, f in got.items())
    for eid in ids[1:]:
        assert len(frames_of(path, eid)) == STEPS
    assert_idempotent(path)


def test_recover_a_clean_store_changes_nothing(recorded):
    path, _, _ = recorded
    assert_idempotent(path)


def test_recover_on_a_locked_store_exits_4(recorded):
    path, _, _ = recorded
    with FrameStore.open(path) as store:
        rec = store.recorder("ALE/Assault-v5", overrides=OVERRIDES)
        try:
            result = CliRunner().invoke(cli, ["recover", str(path)])
        finally:
            rec.close()
    assert result.exit_code == 4


# ------------------------------------------------ a gc's reserved ids and a recorder's
KILLED_RECORDER = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from framestore import FrameStore
    from framestore.write._storage import ThreadStorage

    store_path, frames_path, placement = sys.argv[1:]
    ThreadStorage._rows_of = lambda self, chunk: None  # killed before its rows commit
    overrides = {"codec": "raw", "chunk_frames": 4, "segment_bytes": 1 << 20}
    if placement == "process":
        overrides |= {"writer": "process", "writer_start": "fork"}
    with FrameStore.open(store_path) as store:
        rec = store.recorder("ALE/Assault-v5", overrides=overrides)
        print(rec.begin_episode(seed=7), flush=True)
        for i, f in enumerate(np.load(frames_path)):
            rec.record_step(f, action=i % 7)
        rec._storage.flush_frames()  # its frames are in a segment file
        os._exit(9)
    """
)


def _killed_recorder(path, tmp_path, frames, placement) -> int:
    """A recorder that wrote ``frames`` into a segment and was killed before any of
    their rows committed; returns its episode id."""
    np.save(tmp_path / "child.npy", np.stack(frames))
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RECORDER, str(path), str(tmp_path / "child.npy"), placement],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 9, proc.stderr
    return int(proc.stdout.split()[0])


def _frames_recovered(path, eid, frames, report) -> None:
    assert report.steps_recovered == {eid: len(frames)} and not report.data_lost
    got = frames_of(path, eid)
    assert len(got) == len(frames)
    assert all(np.array_equal(f, frames[s]) for s, f in got.items())
    assert_clean(path)


@pytest.mark.parametrize("placement", ["thread", "process"])
def test_a_recorder_takes_no_id_a_killed_gc_reserved(recorded, tmp_path, assault_frames, placement):
    """gc reserves its output ids (``compaction.outputs``) before their files exist; a gc
    killed then leaves them reserved, and the next recover (or gc) deletes the files under
    them as its leftovers. A recorder must start above them: one killed before its rows
    committed left its frames in a segment under such an id, and recover deleted it
    saying nothing was lost (found in review)."""
    path, ids, want = recorded
    with FrameStore.open(path) as store:
        reserved = max(list_segment_ids(path)) + 1
        store.catalog.meta.set(COMPACTION_OUTPUTS, [reserved, reserved + 1])
    frames = assault_frames[200:210]
    eid = _killed_recorder(path, tmp_path, frames, placement)
    written = [s for s in list_segment_ids(path) if s >= reserved]
    assert written and min(written) > reserved + 1, written
    report = recover(path)
    assert report.segments_removed == []
    _frames_recovered(path, eid, frames, report)
    for e in ids:  # the rest as it was
        got = frames_of(path, e)
        assert all(np.array_equal(f, want[e][s]) for s, f in got.items())


def test_a_recorders_unsealed_segment_under_a_reserved_id_is_not_removed(
    recorded, tmp_path, assault_frames
):
    """The same store as an older recorder left it: its segment took an id a killed gc
    had reserved. That segment is unsealed (a compaction renames its copies into place
    sealed), so recover leaves it and gives its frames rows."""
    path, _ids, _want = recorded
    frames = assault_frames[200:210]
    eid = _killed_recorder(path, tmp_path, frames, "thread")
    taken = max(list_segment_ids(path))
    with FrameStore.open(path) as store:
        store.catalog.meta.set(COMPACTION_OUTPUTS, [taken])
    report = recover(path)
    assert taken in list_segment_ids(path) and report.segments_removed == []
    _frames_recovered(path, eid, frames, report)
    with FrameStore.open(path, readonly=True) as store:
        assert store.catalog.meta.get(COMPACTION_OUTPUTS) is None


def test_a_recorder_refuses_to_start_when_a_gc_reserved_ids_as_it_took_the_lock(
    recorded, monkeypatch
):
    """A gc that reserved ids and was killed between the recorder's look at the
    reservations and its taking the lock: the recorder refuses in one line (recover
    first) and writes nothing; after recover it records above every id."""
    from framestore.write import recorder as recorder_module

    path, _ids, _want = recorded
    reserved = max(list_segment_ids(path)) + 3
    start = recorder_module.ThreadStorage.__init__

    def after_a_killed_gc(self, *args, **kwargs):
        with FrameStore.open(path) as other:  # as that gc left it
            other.catalog.meta.set(COMPACTION_OUTPUTS, [reserved])
        start(self, *args, **kwargs)

    monkeypatch.setattr(recorder_module.ThreadStorage, "__init__", after_a_killed_gc)
    files = list_segment_ids(path)
    with FrameStore.open(path) as store:
        with pytest.raises(InvalidInput, match="run `framestore recover` first"):
            store.recorder("ALE/Assault-v5", overrides=OVERRIDES)
    assert list_segment_ids(path) == files
    monkeypatch.setattr(recorder_module.ThreadStorage, "__init__", start)
    recover(path)
    eid = record_episodes(path, [np.zeros((210, 160, 3), np.uint8)] * 4, episodes=1, steps=4)[0]
    assert min(s for s in list_segment_ids(path) if s not in files) > max(files)
    assert len(frames_of(path, eid)) == 4
