"""PlaySession's telemetry-lite Save/Discard (the model behind the Play tab's toggle),
without Qt: nothing is written until Save; Discard writes nothing."""

from __future__ import annotations

import numpy as np

from framestore import FrameStore
from gui.models import PlaySession


def _play(session: PlaySession, n: int) -> list[np.ndarray]:
    shown = []
    while len(shown) < n:
        r = session.step(action=session.sample_action())
        if r is not None:
            shown.append(r.frame.copy())
    return shown


def _segment_bytes(path) -> int:
    d = path / "segments"
    return sum(p.stat().st_size for p in d.iterdir()) if d.exists() else 0


def test_lite_save_writes_exactly_what_was_shown(store, store_path):
    session = PlaySession("ALE/Assault-v5", store, seed=4, lite=True)
    try:
        session.set_recording(True)
        shown = _play(session, 80)
        assert _segment_bytes(store_path) == 0 and store.episodes() == []
        session.set_recording(False)
        assert session.awaiting_decision
        eid = session.save().result(timeout=60)
    finally:
        session.close(timeout=60)
    ep = store.episode(eid)
    assert ep.seed == 4 and ep.steps == len(shown)
    stored = store.read_frames(eid)
    assert all(np.array_equal(a, b) for a, b in zip(stored, shown, strict=True))


def test_lite_discard_writes_nothing(store_path):
    with FrameStore.open(store_path) as store:
        session = PlaySession("ALE/Assault-v5", store, seed=1, lite=True)
        try:
            session.set_recording(True)
            _play(session, 40)
            session.set_recording(False)
            assert session.awaiting_decision
            session.discard()
            assert not session.awaiting_decision and session.lite_steps == 0
        finally:
            session.close(timeout=60)
        assert store.episodes() == []
    assert _segment_bytes(store_path) == 0
