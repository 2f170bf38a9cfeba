"""A store written by framestore 0.2.0 (segment format version 2) keeps working: every
command reads it, and compaction moves its chunks into current-version segments
bit-exactly (the checks: tests/oldstores.py, shared with test_format_v1.py).

The fixture (tests/fixtures/store-v0.2.0, made by tests/fixtures/make_store_v0_2_0.py)
holds three Assault episodes of 25 rows with seeds 3, 4 (zstd, run 1) and 5 (png, run 2,
where every fifth step after the reset has no frame), actions from a seeded random
policy, the environment's info and rewards.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from conftest import run_cli
from oldstores import (
    FIXTURES,
    check_every_read_command,
    check_frames_read_bit_exactly,
    check_gc_compacts_into_current_segments,
    check_recording_adds_current_segments,
    copy_fixture,
    segment_versions,
)

from framestore import FrameStore

NAME = "store-v0.2.0"


@pytest.fixture
def v2_store(tmp_path):
    return copy_fixture(NAME, tmp_path)


def test_fixture_is_version_2():
    assert segment_versions(FIXTURES / NAME) == [(1, 2), (2, 2)]


def test_frames_of_a_v2_store_read_bit_exactly(v2_store):
    check_frames_read_bit_exactly(v2_store, [(1, 25, 3), (2, 25, 4), (3, 25, 5)])
    with FrameStore.open(v2_store, readonly=True) as store:
        steps = store.read_steps(3)
        assert [s.step for s in steps if s.frame is None] == [5, 10, 15, 20]
        assert steps[3].info["lives"] == 4 and store.episode(3).total_reward == 21.0


def test_every_read_command_works_on_a_v2_store(v2_store, tmp_path):
    check_every_read_command(v2_store, tmp_path, steps=[25, 25, 25], frames=71)
    r = run_cli("verify", v2_store, "--replay")
    assert r.exit_code == 0 and "3 match" in r.stdout, r.output


def test_gc_compacts_a_v2_store_into_current_segments(v2_store):
    check_gc_compacts_into_current_segments(v2_store)


def test_recording_into_a_v2_store_adds_current_segments(v2_store, assault_frames):
    check_recording_adds_current_segments(v2_store, assault_frames)


def test_rows_rebuilt_from_v2_segments_are_reported_without_their_metadata(v2_store):
    """Format 2 holds no step metadata: a deleted row comes back with its frame only, and
    recover says that its action, reward and info are lost (exit 3), never 'nothing
    lost'."""
    with closing(sqlite3.connect(v2_store / "framestore.db")) as conn, conn:
        conn.execute("DELETE FROM steps WHERE episode_id = 1 AND step >= 20")
    r = run_cli("recover", v2_store)
    assert r.exit_code == 3, r.output
    assert "LOST: episode 1: 5 step row(s) rebuilt with their frame only" in r.output
    assert "recovered with data loss (step metadata)" in r.output
    with FrameStore.open(v2_store, readonly=True) as store:
        rows = store.read_steps(1)
        assert len(rows) == 25 and rows[22].action is None and rows[22].reward is None
    assert run_cli("verify", v2_store).exit_code == 0
