"""The replay viewer's stream selector (issue 20): an episode recorded with several
frame streams shows each of them, bit-exact; a frame stack is tiled; the selector
keeps the step. Runs under ``QT_QPA_PLATFORM=offscreen``."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from gui._frame_view import qimage_to_array  # noqa: E402
from gui._replay_tab import ReplayTab  # noqa: E402
from gui.models import display_frame  # noqa: E402

pytestmark = pytest.mark.qt


def test_display_frame_tiles_stacks_and_describes_arrays():
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert display_frame(img)[0] is img
    stack = np.stack([np.full((5, 6), i, np.uint8) for i in range(4)])  # a frame stack
    tiled, why = display_frame(stack)
    assert tiled.shape == (5, 24) and why == "" and tiled[0, 6] == 1 and tiled[4, 23] == 3
    shown, why = display_frame(np.zeros(8, np.float32))
    assert shown is None and "float32 array of shape 8: not an image" in why


def test_replay_stream_selector_shows_each_stream(qtbot, store, assault_frames, tmp_path):
    grey = [f.mean(axis=2).astype(np.uint8) for f in assault_frames[:30]]
    stacks = [np.stack([grey[max(0, i - k)] for k in (3, 2, 1, 0)]) for i in range(30)]
    with store.recorder("ALE/Assault-v5") as rec:
        eid = rec.begin_episode(seed=0)
        for f, s in zip(assault_frames[:30], stacks, strict=True):
            rec.record_step(frames={"render": f, "observation": s}, reward=1.0)
        rec.end_episode()
    tab = ReplayTab(store)
    qtbot.addWidget(tab)
    tab.resize(1200, 700)
    tab.show()
    tab.open_episode(eid, at=12)
    qtbot.waitUntil(lambda: tab.shown_step == 12, timeout=5_000)
    names = [tab.stream_combo.itemText(i) for i in range(tab.stream_combo.count())]
    assert names == ["render", "observation"] and tab.stream_combo.isEnabled()
    np.testing.assert_array_equal(qimage_to_array(tab.view.image()), assault_frames[12])
    tab.shown_step = None
    tab.stream_combo.setCurrentText("observation")  # the same step, the other stream
    qtbot.waitUntil(lambda: tab.shown_step == 12, timeout=5_000)
    want = np.concatenate(list(stacks[12]), axis=1)  # the stack's frames side by side
    np.testing.assert_array_equal(tab.view.frame()[..., 0], want)  # grey: HxWx1
    assert qimage_to_array(tab.view.image()).shape[:2] == want.shape  # the image drawn
    tab.clock.step_forward()
    qtbot.waitUntil(lambda: tab.shown_step == 13, timeout=5_000)
    np.testing.assert_array_equal(
        tab.view.frame()[..., 0], np.concatenate(list(stacks[13]), axis=1)
    )
    shot = os.environ.get("FRAMESTORE_STREAMS_SCREENSHOT")
    if shot:
        tab.grab().save(shot)
    tab.shutdown()
