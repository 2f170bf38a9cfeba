"""Random damage to a whole store (segments and the SQLite file), seen through the
commands a user runs: ``verify`` reports, reads raise, ``export`` stops with one line or
skips and says so, and no path ever returns wrong pixels. ``test_corruption.py`` covers
the segment format byte by byte; this file covers the store and the CLI."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import WRITERS, assert_one_line_error, run_cli, writer_overrides

from framestore import FrameStore, FrameStoreError
from framestore.disk.segments import list_segment_ids, segment_path
from framestore.errors import CorruptData, FrameNotFound
from tools.recover import recover
from tools.verify import verify

TRIALS = int(os.environ.get("FRAMESTORE_CORRUPTION_TRIALS", "16"))
OVERRIDES = {"codec": "zstd", "chunk_frames": 8, "segment_bytes": 1 << 20}
EPISODES, STEPS = 3, 30


@pytest.fixture(scope="module", params=WRITERS)
def pristine(request, tmp_path_factory, assault_frames):
    """A closed store: 3 episodes x 30 Assault frames (real pixels), and what it holds;
    recorded by each writer placement."""
    path = tmp_path_factory.mktemp("pristine") / "p.store"
    want: dict[int, list[np.ndarray]] = {}
    overrides = {**OVERRIDES, **writer_overrides(request.param)}
    with FrameStore.open(path) as store:
        with store.recorder("ALE/Assault-v5", overrides=overrides) as rec:
            for e in range(EPISODES):
                eid = rec.begin_episode(seed=e)
                frames = [assault_frames[(e * STEPS + i) * 3 % 300] for i in range(STEPS)]
                for i, f in enumerate(frames):
                    rec.record_step(f, action=i % 7, reward=1.0)
                rec.end_episode()
                want[eid] = frames
        store.catalog.connection.checkpoint()
    return path, want


def read_every_frame(path: Path, want: dict) -> tuple[int, int]:
    """Read each step alone: exact pixels or a specific error, never wrong pixels."""
    good = bad = 0
    with FrameStore.open(path, readonly=True) as store:
        for eid, frames in want.items():
            for step, loc in store.frame_locations(eid):
                if loc is None:  # pointer cleared by recover: reported there as lost
                    continue
                store.reader.forget()
                try:
                    frame = store.read_frame(eid, step)
                except (CorruptData, FrameNotFound):
                    bad += 1
                    continue
                assert np.array_equal(frame, frames[step]), (eid, step)
                good += 1
    return good, bad


def damage_segments(path: Path, rng: random.Random) -> str:
    sid = rng.choice(list_segment_ids(path))
    seg = segment_path(path, sid)
    data = bytearray(seg.read_bytes())
    if rng.random() < 0.35:
        cut = rng.randrange(0, len(data))
        seg.write_bytes(bytes(data[:cut]))
        return f"truncate segment {sid} at {cut}/{len(data)}"
    where = sorted(rng.randrange(len(data)) for _ in range(rng.randint(1, 3)))
    for pos in where:
        data[pos] ^= 1 << rng.randrange(8)
    seg.write_bytes(bytes(data))
    return f"flip segment {sid} at {where}"


@pytest.mark.parametrize("trial", range(TRIALS))
def test_random_segment_damage(pristine, tmp_path, trial):
    src, want = pristine
    path = tmp_path / "d.store"
    shutil.copytree(src, path)
    what = damage_segments(path, random.Random(trial))

    result = run_cli("verify", path)
    assert result.exit_code == 1, (what, result.output)  # every segment byte is checksummed

    good, bad = read_every_frame(path, want)
    assert good + bad == EPISODES * STEPS
    for eid in want:
        out = tmp_path / f"e{eid}.npz"
        res = run_cli("export", path, "--episode", eid, "-o", out)
        if res.exit_code == 0:
            with np.load(out) as z:
                np.testing.assert_array_equal(z["frames"], np.stack(want[eid]))
            continue
        line = assert_one_line_error(res, code=5)
        assert "segment" in line, line
        assert not out.exists() and not Path(str(out) + ".partial").exists()
        res = run_cli("export", path, "--episode", eid, "-o", out, "--skip-corrupt")
        if res.exit_code != 0:  # nothing readable left in the episode: still one line
            assert "every frame in the range is corrupt" in assert_one_line_error(res, 5)
            continue
        assert "skipped" in res.output, res.output
        with np.load(out) as z:
            for step, frame in zip(z["step_index"].tolist(), z["frames"], strict=True):
                assert np.array_equal(frame, want[eid][step])
            assert len(z["frames"]) < STEPS

    # recover leaves a clean store that still serves every frame it did not lose
    recover(path)
    assert verify(path).ok, what
    good_after, bad_after = read_every_frame(path, want)
    assert bad_after == 0 and good_after == good


@pytest.mark.parametrize("trial", range(TRIALS))
def test_random_sqlite_damage(pristine, tmp_path, trial):
    src, want = pristine
    path = tmp_path / "d.store"
    shutil.copytree(src, path)
    db = path / "framestore.db"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    rng = random.Random(1000 + trial)
    data = bytearray(db.read_bytes())
    # Skip the 100-byte header half of the time, so damage also lands in table pages.
    lo = 0 if trial % 2 else 100
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(lo, len(data))] ^= 1 << rng.randrange(8)
    db.write_bytes(bytes(data))

    result = run_cli("verify", path)
    assert result.exit_code in (0, 1, 2, 5), result.output
    if result.exit_code not in (0, 1):
        assert_one_line_error(result, result.exit_code)
    run_cli("ls", path)
    res = run_cli("export", path, "--episode", 2, "-o", tmp_path / "x.npz")
    if res.exit_code != 0:
        assert_one_line_error(res, res.exit_code)

    # Through the library: a FrameStoreError or sqlite3.DatabaseError, or exact pixels.
    try:
        store = FrameStore.open(path, readonly=True)
    except FrameStoreError:
        return
    with store:
        for eid, frames in want.items():
            try:
                for step, frame in store.iter_steps_frames(eid):
                    assert np.array_equal(frame, frames[step]), (trial, eid, step)
            except (FrameStoreError, sqlite3.DatabaseError):
                continue


def test_pointer_to_another_frame_is_an_error_not_wrong_pixels(pristine, tmp_path):
    """A damaged or hostile row pointing at a valid frame of another step."""
    src, want = pristine
    path = tmp_path / "d.store"
    shutil.copytree(src, path)
    with sqlite3.connect(path / "framestore.db") as conn:
        conn.execute(
            "UPDATE steps SET frame_slot = frame_slot + 1 WHERE episode_id = 1 AND step = 0"
        )
        conn.execute(
            "UPDATE steps SET (frame_segment, frame_offset, frame_slot) = "
            "(SELECT frame_segment, frame_offset, frame_slot FROM steps "
            " WHERE episode_id = 1 AND step = 5) WHERE episode_id = 2 AND step = 5"
        )
    conn.close()
    with FrameStore.open(path, readonly=True) as store:
        with pytest.raises(CorruptData, match="episode 1 step 1"):
            store.read_frame(1, 0)
        with pytest.raises(CorruptData, match="episode 1 step 5"):
            list(store.iter_frames(2))
        assert np.array_equal(store.read_frame(1, 1), want[1][1])
    res = run_cli("export", path, "--episode", 2, "-o", tmp_path / "x.npz")
    assert_one_line_error(res, 5)
    res = run_cli("export", path, "--episode", 2, "-o", tmp_path / "x.npz", "--skip-corrupt")
    assert res.exit_code == 0 and "skipped 1 corrupt frame(s): steps 5" in res.output, res.output
    assert run_cli("verify", path).exit_code == 1
