"""Catalogues rebuilt from segments that an earlier gc wrote, or a gc of format 1-2
segments stopped halfway: recover gives every episode back whole and verify accepts.

store-gc-a600ff9 (tests/fixtures/make_store_gc_a600ff9.py) is a store whose gc, at
commit a600ff9, copied merged format 1-2 chunks under their source stream keys into one
segment with this store's format-3 episodes of the same keys.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from _gcstops import gc_stopped_at
from conftest import run_cli
from oldstores import copy_fixture, expected_frames

from framestore import FrameStore
from framestore.disk.scan import scan_segment
from framestore.disk.segments import list_segment_ids, segment_path
from tools.recover import recover
from tools.verify import verify

DB_FILES = ("framestore.db", "framestore.db-wal", "framestore.db-shm")


def delete_catalogue(path: Path) -> None:
    for name in DB_FILES:
        (path / name).unlink(missing_ok=True)


def snapshot(path: Path) -> dict[int, tuple]:
    """Each live episode: its seed, step count, steps (where their frames are aside) and
    frames."""
    with FrameStore.open(path, readonly=True) as store:
        return {
            e.id: (
                e.seed,
                e.steps,
                [
                    (s.step, s.action, s.reward, s.info, s.frame is not None)
                    for s in store.read_steps(e.id)
                ],  # fmt: skip
                [f.tobytes() for f in store.read_frames(e.id)],
            )
            for e in store.episodes()
        }


def episode_rows(path: Path) -> list[tuple]:
    with closing(sqlite3.connect(path / "framestore.db")) as conn:
        return conn.execute(
            "SELECT id, run_id, idx, seed, started, ended, status, steps, total_reward "
            "FROM episodes ORDER BY id"
        ).fetchall()


def test_a_store_an_earlier_gc_wrote_is_gc_d_and_rebuilt_whole(tmp_path):
    """Its segment holds this store's episodes 1 and 2 (EPISODE records with keys 1 and
    2) and merged episodes 3-5's chunks under keys 1-3, no EPISODE record for them. gc
    must tell them apart by who owns each chunk (run and episode start), not by key:
    it took the merged chunks for episodes 1 and 2's, copied them as they were, and a
    rebuild gave their frames to episodes 1 and 2 (25 rows where 6 were), lost 3 and 4
    and brought back the merged episode rm'd here; verify failed after recover."""
    path = copy_fixture("store-gc-a600ff9", tmp_path)
    (seg,) = [s for s in list_segment_ids(path) if scan_segment(segment_path(path, s), s).chunks]
    scan = scan_segment(segment_path(path, seg), seg)
    assert sorted({h.stream_key for h in scan.chunks.values()}) == [1, 2, 3]
    assert sorted(r.meta["stream_key"] for r in scan.meta_records if "run" in r.meta) == [1, 2]
    assert run_cli("rm", path, "--episode", 4).exit_code == 0
    want, rows = snapshot(path), episode_rows(path)
    assert sorted(want) == [1, 2, 3, 5] and [want[e][1] for e in sorted(want)] == [6, 6, 25, 25]

    result = run_cli("gc", path, "--threshold", "1")
    assert result.exit_code == 0, result.output
    assert verify(path).ok
    assert snapshot(path) == want
    delete_catalogue(path)
    result = run_cli("recover", path)
    assert result.exit_code == 0 and "nothing lost" in result.output, result.output
    assert verify(path).ok
    assert snapshot(path) == want
    assert [r for r in episode_rows(path) if r[6] != "deleted"] == [
        r for r in rows if r[6] != "deleted"
    ]
    with FrameStore.open(path, readonly=True) as store:  # the frames the game renders
        for eid in (3, 5):
            got = store.read_frames(eid)
            assert all(
                np.array_equal(a, b) for a, b in zip(got, expected_frames(store, eid), strict=True)
            )


@pytest.mark.parametrize("stop_at", [None, "mid-copy", "copied"])
def test_a_format_1_2_store_an_earlier_gc_wrote_is_rebuilt_as_its_own(tmp_path, stop_at):
    """store-v0.1.0 gc'd at a600ff9: one format-3 segment tagged with the store's id,
    no EPISODE record, no note: nothing on disk names the id. With framestore.db
    deleted (after a gc of this version stopped before it replaced that segment, or
    none), recover said "NOT REBUILT: 75 frame(s) in segments another store wrote",
    listed no episode, and verify refused the segment as another store's. The tag the
    store's segments carry is its own: recover gives an id with that tag, the frames
    come back as episodes (their actions, rewards and infos were in the catalogue
    alone: reported lost), verify accepts, and a gc and another rebuild keep them."""
    path = copy_fixture("store-v0.1.0-gc-a600ff9", tmp_path)
    with FrameStore.open(path, readonly=True) as store:
        frames = {e.id: [f.tobytes() for f in store.read_frames(e.id)] for e in store.episodes()}
    assert sorted(frames) == [1, 2, 3] and all(len(f) == 25 for f in frames.values())
    if stop_at is not None:
        gc_stopped_at(path, stop_at)
    delete_catalogue(path)
    result = run_cli("recover", path)
    assert result.exit_code == 3, result.output
    assert "NOT REBUILT" not in result.output, result.output
    assert verify(path).ok
    got = snapshot(path)
    assert {e: g[3] for e, g in got.items()} == frames
    assert run_cli("gc", path, "--threshold", "1").exit_code == 0
    assert verify(path).ok
    assert snapshot(path) == got
    delete_catalogue(path)
    assert not recover(path).frames_not_rebuilt
    assert verify(path).ok
    assert {e: g[3] for e, g in snapshot(path).items()} == frames
