"""Telemetry-lite: an in-memory ring for human play; nothing on disk until save()."""

from __future__ import annotations

import numpy as np
import pytest

from framestore import InvalidInput, LiteRecorder


def _segment_files(store_path):
    d = store_path / "segments"
    return sorted(d.iterdir()) if d.exists() else []


def test_nothing_touches_disk_until_save_then_bit_exact(store, store_path, assault_frames):
    with LiteRecorder(max_steps=1000, max_bytes=64 * 1024 * 1024) as lite:
        lite.begin_episode(seed=7)
        for i, f in enumerate(assault_frames[:120]):
            lite.record_step(
                f, action=None if i == 0 else i % 7, reward=float(i % 3), info={"lives": 4}
            )
        lite.end_episode()
        assert _segment_files(store_path) == []
        assert store.episodes() == []
        with store.recorder("ALE/Assault-v5") as rec:
            eid = lite.save(rec)
        assert lite.steps == 0  # saved rings are emptied
    ep = store.episode(eid)
    assert (ep.steps, ep.seed, ep.status) == (120, 7, "complete")
    got = store.read_frames(eid)
    assert all(np.array_equal(a, b) for a, b in zip(got, assault_frames[:120], strict=True))
    steps = store.read_steps(eid)
    assert [s.reward for s in steps[:4]] == [0.0, 1.0, 2.0, 0.0]
    assert steps[0].action is None and steps[5].action == 5


def test_discard_is_instant_and_writes_nothing(store_path, assault_frames):
    with LiteRecorder() as lite:
        lite.begin_episode(seed=0)
        for f in assault_frames[:50]:
            lite.record_step(f)
        lite.discard()
        assert lite.steps == 0 and lite.bytes == 0
    assert not store_path.exists()


@pytest.mark.parametrize("compress", [False, True])
def test_overflow_trims_oldest_and_marks_episode(store, assault_frames, compress):
    frame_bytes = assault_frames[0].nbytes
    # Compressed, 200 Assault frames take ~140 KB: a bound of two raw frames trims them.
    # Each step waits for its compression, so what is counted (and trimmed) does not
    # depend on how fast the pool keeps up on this machine.
    bound = (2 if compress else 40) * frame_bytes
    with LiteRecorder(max_steps=10_000, max_bytes=bound, compress=compress) as lite:
        lite.begin_episode(seed=1)
        for f in assault_frames[:200]:
            lite.record_step(f)
            assert lite.bytes <= lite.max_bytes  # the byte bound holds at every step
            if compress:
                lite.settle(wait=True)
        assert lite.trimmed
        if compress:
            assert 40 < lite.steps < 200  # compressed frames fit many more than raw ones
        else:
            assert lite.steps == 40
        kept = lite.steps
        with store.recorder("ALE/Assault-v5") as rec:
            eid = lite.save(rec)
    ep = store.episode(eid)
    assert ep.status == "trimmed" and ep.steps == kept
    got = store.read_frames(eid)
    assert all(
        np.array_equal(a, b) for a, b in zip(got, assault_frames[200 - kept : 200], strict=True)
    )
    assert store.read_steps(eid, 0, 1)[0].info["lite_step"] == 200 - kept


def test_compression_holds_many_more_steps_in_the_same_bytes(assault_frames):
    budget = 20 * assault_frames[0].nbytes
    with (
        LiteRecorder(max_bytes=budget, compress=False) as raw,
        LiteRecorder(max_bytes=budget, compress=True) as packed,
    ):
        for lite in (raw, packed):
            lite.begin_episode()
            for i, f in enumerate(assault_frames):
                lite.record_step(f)
                if i % 8 == 0:
                    lite.settle(wait=True)  # what a 60 Hz producer gets for free
        assert raw.steps == 20
        assert packed.steps == len(assault_frames)
        assert packed.bytes < budget


def test_step_bound_and_bad_input(assault_frames):
    with LiteRecorder(max_steps=5) as lite:
        with pytest.raises(InvalidInput):
            lite.record_step(assault_frames[0])  # before begin_episode
        lite.begin_episode()
        for f in assault_frames[:9]:
            lite.record_step(f)
        assert lite.steps == 5 and lite.first_step == 4
        with pytest.raises(InvalidInput):
            lite.record_step(assault_frames[0].astype(np.float32))
        with pytest.raises(InvalidInput):
            lite.record_step(assault_frames[0], reward=float("inf"))
        assert lite.steps == 5
