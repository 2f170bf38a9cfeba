"""The read path (issue 19): ``read_frame`` keeps an episode's frame pointers while the
catalogue is unchanged (no steps-table query per read), and sees every change made by
this or another connection; ``iter_frames`` hands out read-only views unless asked to
copy."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from conftest import record_episodes

from framestore import FrameStore
from framestore.errors import (
    CorruptCatalog,
    EpisodeNotFound,
    FrameNotFound,
    InvalidInput,
)

STEPS = 10


@pytest.fixture
def recorded(store_path, assault_frames):
    ids = record_episodes(store_path, assault_frames, episodes=3, steps=STEPS)
    return store_path, ids


def _steps_queries(store: FrameStore) -> list[str]:
    """Statements this store's connection runs against the steps table, from now on."""
    seen: list[str] = []
    conn = store.catalog.connection._database.conn
    conn.set_trace_callback(lambda sql: seen.append(sql) if "FROM steps" in sql else None)
    return seen


def test_random_reads_are_bit_exact_and_query_no_steps_after_the_first(recorded, assault_frames):
    path, ids = recorded
    rng = np.random.default_rng(0)
    with FrameStore.open(path, readonly=True) as store:
        store.read_frame(ids[0], 0)
        store.read_frame(ids[1], 0)
        store.read_frame(ids[2], 0)
        seen = _steps_queries(store)
        for _ in range(60):
            e = int(rng.integers(3))
            step = int(rng.integers(STEPS))
            frame = store.read_frame(ids[e], step)
            assert np.array_equal(frame, assault_frames[e * STEPS + step])
            assert frame.flags.writeable  # a copy by default
        assert seen == []
        view = store.read_frame(ids[1], 4, copy=False)
        assert not view.flags.writeable
        assert np.array_equal(view, assault_frames[STEPS + 4])


def test_a_deletion_by_another_connection_is_seen_at_once(recorded, assault_frames):
    path, ids = recorded
    with FrameStore.open(path, readonly=True) as reader:
        assert np.array_equal(reader.read_frame(ids[1], 3), assault_frames[STEPS + 3])
        with FrameStore.open(path) as other:
            other.delete_episodes([ids[1]])
        with pytest.raises(EpisodeNotFound):
            reader.read_frame(ids[1], 3)
        assert np.array_equal(reader.read_frame(ids[0], 3), assault_frames[3])


def test_a_deletion_through_the_same_store_is_seen_at_once(recorded):
    path, ids = recorded
    with FrameStore.open(path) as store:
        store.read_frame(ids[2], 1)
        store.delete_episodes([ids[2]])
        with pytest.raises(EpisodeNotFound):
            store.read_frame(ids[2], 1)


def test_steps_committed_after_the_first_read_become_readable(store_path, assault_frames):
    with FrameStore.open(store_path) as store:
        rec = store.recorder("ALE/Assault-v5", overrides={"codec": "raw", "chunk_frames": 4})
        try:
            eid = rec.begin_episode(seed=0)
            for i in range(5):
                rec.record_step(assault_frames[i], action=None if i == 0 else 1)
            rec.flush()
            assert np.array_equal(store.read_frame(eid, 4), assault_frames[4])
            with pytest.raises(FrameNotFound):
                store.read_frame(eid, 7)
            for i in range(5, 9):
                rec.record_step(assault_frames[i], action=1)
            rec.flush()
            assert np.array_equal(store.read_frame(eid, 7), assault_frames[7])
        finally:
            rec.close()


def test_bad_steps_and_ids(recorded):
    path, ids = recorded
    with FrameStore.open(path, readonly=True) as store:
        with pytest.raises(FrameNotFound):
            store.read_frame(ids[0], -1)
        with pytest.raises(FrameNotFound):
            store.read_frame(ids[0], STEPS)
        with pytest.raises(FrameNotFound):
            store.read_frame(ids[0], 2**70)
        with pytest.raises(InvalidInput):
            store.read_frame(ids[0], "3")
        with pytest.raises(EpisodeNotFound):
            store.read_frame(999, 0)


def test_a_damaged_row_fails_only_its_own_step(recorded, assault_frames):
    path, ids = recorded
    db = sqlite3.connect(path / "framestore.db")
    with db:
        db.execute("UPDATE steps SET frame_slot = 'x' WHERE episode_id = ? AND step = 5", [ids[0]])
    db.close()
    with FrameStore.open(path, readonly=True) as store:
        assert np.array_equal(store.read_frame(ids[0], 3), assault_frames[3])
        with pytest.raises(CorruptCatalog):
            store.read_frame(ids[0], 5)


def test_iter_frames_hands_out_read_only_views_unless_asked_to_copy(recorded, assault_frames):
    path, ids = recorded
    with FrameStore.open(path, readonly=True) as store:
        views = list(store.iter_frames(ids[1]))
        copies = list(store.iter_frames(ids[1], copy=True))
        listed = store.read_frames(ids[1])
    for got in (views, copies, listed):
        assert len(got) == STEPS
        for i, frame in enumerate(got):
            assert np.array_equal(frame, assault_frames[STEPS + i])
    assert not any(f.flags.writeable for f in views)
    assert all(f.flags.writeable for f in copies + listed)
    with pytest.raises(ValueError):
        views[0][0, 0, 0] = 1
