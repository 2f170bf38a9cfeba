"""The Replay tab's Delete while the Play tab records into the same store (pytest-qt,
QT_QPA_PLATFORM=offscreen): a finished episode is deleted through the recording's own
writer (it holds the store's one writer lock) and the recording goes on unharmed; the
episode being recorded is refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from framestore import FrameStore  # noqa: E402
from gui._main_window import MainWindow  # noqa: E402
from tools.recover import recover  # noqa: E402
from tools.verify import verify  # noqa: E402

pytestmark = pytest.mark.qt


def click_delete(qtbot, tab, monkeypatch, episode_id: int, done: list) -> object:
    """Select ``episode_id`` in the table, press Delete, answer Yes; the job's result."""
    qtbot.waitUntil(lambda: tab.episodes.row_index(episode_id) is not None, timeout=10_000)
    tab.select_episode(episode_id)
    assert tab.selected_ids() == [episode_id]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    n = len(done)
    qtbot.mouseClick(tab.delete_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(done) > n, timeout=30_000)
    return done[-1][1]


@pytest.mark.parametrize("placement", ["thread", "process"])
def test_delete_a_finished_episode_while_play_records(qtbot, store, monkeypatch, placement):
    win = MainWindow(store)
    qtbot.addWidget(win)
    win.show()
    play, replay = win.play_tab, win.replay_tab
    play.fps_override = 120
    play.writer_combo.setCurrentIndex(play.writer_combo.findData(placement))
    seen = []  # (episode id, step, frame) of every recorded step
    play.stepped.connect(
        lambda r: seen.append((r.episode_id, r.step, r.frame.copy())) if r.recorded else None
    )
    done = []
    # (job, result, what the tab said when it finished)
    replay.task_finished.connect(
        lambda name, result: done.append((name, result, replay.task_label.text()))
    )
    play.set_policy(lambda s: s.sample_action())
    play.record_btn.setChecked(True)
    play.start("ALE/Assault-v5", seed=5)
    qtbot.waitUntil(lambda: play.session.armed and len(seen) >= 30, timeout=60_000)
    first = seen[0][0]
    play.reset()  # the first episode ends; the next one records
    qtbot.waitUntil(lambda: any(e != first for e, *_ in seen[-5:]), timeout=10_000)
    second = seen[-1][0]
    assert second != first

    result = click_delete(qtbot, replay, monkeypatch, first, done)
    assert not isinstance(result, BaseException), result
    assert [e.id for e in result] == [first]
    qtbot.waitUntil(lambda: replay.episodes.row_index(first) is None, timeout=10_000)
    assert replay.episode_id != first  # it was shown: the viewer let go of it
    assert play.session.recording  # untouched: still recording the second episode
    n = len(seen)
    qtbot.waitUntil(lambda: len(seen) >= n + 30, timeout=10_000)
    assert {e for e, *_ in seen[n:]} == {second}

    # the episode being recorded: refused, said in the tab, recording goes on
    result = click_delete(qtbot, replay, monkeypatch, second, done)
    assert isinstance(result, BaseException)
    assert f"failed: episode {second} is being recorded; end it first" in done[-1][2]
    assert replay.episode_id == second  # still shown, following the recording
    n = len(seen)
    qtbot.waitUntil(lambda: len(seen) >= n + 10, timeout=10_000)

    win.shutdown()  # closes the recorder: everything recorded is durable
    assert verify(store.root).ok
    assert [e.id for e in store.episodes()] == [second]
    shown = [(st, f) for e, st, f in seen if e == second]
    stored = list(store.iter_steps_frames(second))
    assert [st for st, _ in stored] == [st for st, _ in shown]
    for (_, got), (_, want) in zip(stored, shown, strict=True):
        np.testing.assert_array_equal(got, want)
    assert store.episode(second).status == "interrupted"
    # a catalogue rebuilt from the segments keeps the first episode deleted
    root = store.root
    store.close()
    for name in ("framestore.db", "framestore.db-wal", "framestore.db-shm"):
        (root / name).unlink(missing_ok=True)
    assert recover(root).catalogue_rebuilt
    with FrameStore.open(root, readonly=True) as again:
        assert [e.id for e in again.episodes()] == [second]
