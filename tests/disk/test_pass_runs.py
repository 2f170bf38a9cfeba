"""Sequential passes by runs (issue 19): ``iter_frames`` reads an episode's pointers as
runs of consecutive slots of one chunk (one catalogue row a run) and checks each run's
keys at once. Steps without a frame split runs; a pointer the runs query does not take
as plain, or a run whose slots hold other steps, goes frame by frame and raises naming
the place, after the frames before it."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import numpy as np
import pytest

from framestore import FrameStore
from framestore.errors import CorruptCatalog, CorruptRecord

STEPS = 40
GAPS = {5, 6, 17, 33}  # steps recorded without a frame


@pytest.fixture
def gappy(store_path, assault_frames):
    """Two episodes of Assault frames in zstd chunks of 16 in parts of 8; episode 1
    lacks the frames of the GAPS steps."""
    with FrameStore.open(store_path) as store:
        rec = store.recorder(
            "ALE/Assault-v5",
            overrides={"codec": "zstd", "chunk_frames": 16, "part_frames": 8},
        )
        ids = []
        try:
            for e in range(2):
                ids.append(rec.begin_episode(seed=e))
                for i in range(STEPS):
                    frame = None if e == 0 and i in GAPS else assault_frames[e * STEPS + i]
                    rec.record_step(frame, action=1, terminated=i == STEPS - 1)
                rec.end_episode()
        finally:
            rec.close()
    return store_path, ids


def _sql(path, statement: str) -> None:
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute(statement)


def test_runs_cover_exactly_the_stored_frames_and_a_pass_is_bit_exact(gappy, assault_frames):
    path, ids = gappy
    with FrameStore.open(path, readonly=True) as store:
        for e, eid in enumerate(ids):
            located = [(s, loc) for s, loc in store.frame_locations(eid) if loc is not None]
            runs = store.catalog.episodes.frame_runs(eid)
            assert runs is not None
            flat = [
                (first + i, (seg, off, slot + i))
                for first, count, (seg, off, slot) in runs
                for i in range(count)
            ]
            assert flat == located
            if e == 0:  # a gap starts a new run even inside one chunk
                assert len(runs) > len({loc[:2] for _s, loc in located})
            pairs = list(store.iter_steps_frames(eid))
            assert [s for s, _f in pairs] == [s for s, _loc in located]
            frames = list(store.iter_frames(eid, 3, 36))
            want = [s for s, _loc in located if 3 <= s < 36]
            assert len(frames) == len(want)
            for s, f in zip(want, frames, strict=True):
                assert np.array_equal(f, assault_frames[e * STEPS + s])
                assert not f.flags.writeable
            for (s, f), c in zip(pairs, store.iter_frames(eid, copy=True), strict=True):
                assert np.array_equal(f, assault_frames[e * STEPS + s])
                assert np.array_equal(c, f) and c.flags.writeable


def test_a_run_whose_slots_hold_other_steps_raises_after_the_frames_before_it(gappy):
    path, ids = gappy
    eid = ids[1]
    # steps 20..23 point one slot further on: the chunk's keys there are steps 21..24
    _sql(path, f"UPDATE steps SET frame_slot = frame_slot + 1 WHERE episode_id = {eid} "
               "AND step >= 20 AND step < 24")  # fmt: skip
    with FrameStore.open(path, readonly=True) as store:
        got = []
        with pytest.raises(
            CorruptRecord, match=r"slot \d+ holds episode .* step 21, not .* step 20"
        ):
            for f in store.iter_frames(eid):
                got.append(f)
        assert len(got) == 20


@pytest.mark.parametrize(
    "value", ["'x'", "2.5", "-1", "NULL"], ids=["text", "real", "negative", "null slot"]
)
def test_a_bad_pointer_value_names_the_step(gappy, value):
    path, ids = gappy
    _sql(path, f"UPDATE steps SET frame_slot = {value} WHERE episode_id = {ids[1]} AND step = 9")
    with FrameStore.open(path, readonly=True) as store:
        assert store.catalog.episodes.frame_runs(ids[1]) is None
        with pytest.raises(CorruptCatalog, match=rf"episode {ids[1]} step 9"):
            list(store.iter_frames(ids[1]))
        assert len(list(store.iter_frames(ids[0]))) == STEPS - len(GAPS)


def test_a_render_pointer_into_another_streams_chunk_raises_naming_the_place(
    store_path, assault_frames
):
    """A render step row pointing at the same step's frame of another stream (a
    ``wrist`` chunk: same stream key, same frame key) must raise, in a pass (runs and
    step by step), in ``read_frame`` and in ``read_into`` (the datasets' read), never
    return the wrist pixels as the render frame (review of the runs pass: before, all
    of them returned them)."""
    with FrameStore.open(store_path) as store:
        with store.recorder("ALE/Assault-v5", overrides={"codec": "zstd"}) as rec:
            eid = rec.begin_episode(seed=0)
            for i in range(STEPS):
                wrist = np.ascontiguousarray(assault_frames[i][::2, ::2])
                rec.record_step(frames={"render": assault_frames[i], "wrist": wrist}, action=1)
            rec.end_episode()
    with FrameStore.open(store_path, readonly=True) as store:
        wrist_at = dict(store.frame_locations(eid, stream="wrist"))
        render_at = dict(store.frame_locations(eid))
    step = 12
    assert wrist_at[step][:2] != render_at[step][:2]  # its own chunk
    with closing(sqlite3.connect(store_path / "framestore.db")) as con, con:
        con.execute(
            "UPDATE steps SET frame_segment=?, frame_offset=?, frame_slot=?"
            " WHERE episode_id=? AND step=?",
            (*wrist_at[step], eid, step),
        )
    with FrameStore.open(store_path, readonly=True) as store:
        for read in (
            lambda: list(store.iter_frames(eid)),
            lambda: list(store.iter_steps_frames(eid)),
            lambda: list(store.iter_frames(eid, copy=True)),
            lambda: store.read_frame(eid, step),
            lambda: store.read_into(
                store.frame_locations(eid, step, step + 1)[0][1],
                eid, [step], np.empty((1, *assault_frames[step].shape), np.uint8),
            ),  # the datasets' read (framestore.torch)
        ):  # fmt: skip
            with pytest.raises(CorruptRecord, match="stream index 1"):
                read()
        frames = store.iter_frames(eid)
        assert np.array_equal(next(frames), assault_frames[0])
        frames.close()  # a generator like every other iter_frames
