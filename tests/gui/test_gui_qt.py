"""The Qt GUI under pytest-qt (QT_QPA_PLATFORM=offscreen): play and record with key
events, replay stored pixels, scrub, follow live, stay responsive, screenshot, shut down."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from framestore.envs import make_env  # noqa: E402
from gui._frame_view import fit_rect, qimage_to_array  # noqa: E402
from gui._main_window import MainWindow  # noqa: E402
from gui._play_tab import PlayTab  # noqa: E402
from gui._replay_tab import ReplayTab  # noqa: E402
from gui._timeline import LEGEND_BAND, MARKER_BAND, MARKER_COLORS, legend_items  # noqa: E402
from gui.gapbench import GapProbe  # noqa: E402

pytestmark = pytest.mark.qt


def gui_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.is_alive() and t.name.startswith("gui-")]


@pytest.fixture(autouse=True)
def no_leaked_gui_threads():
    yield
    deadline = time.monotonic() + 2.0
    while gui_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not gui_threads(), [t.name for t in gui_threads()]


def record_assault(store, frames, n: int, *, seed: int = 0) -> int:
    rec = store.recorder("ALE/Assault-v5", config={"render_fps": 30}, render_fps=30)
    try:
        eid = rec.begin_episode(seed=seed)
        for i in range(n):
            rec.record_step(frames[i % len(frames)], action=i % 7 if i else None, reward=i % 3)
        rec.end_episode()
    finally:
        rec.close()
    return eid


# =============================================================================== play
def test_play_assault_with_keys_records_bit_exactly(qtbot, store):
    tab = PlayTab(store)
    qtbot.addWidget(tab)
    tab.show()
    tab.fps_override = 120  # twice real time: keeps the test short
    seen = []
    tab.stepped.connect(lambda r: seen.append((r.step, r.action, r.frame.copy(), r.recorded)))
    tab.record_btn.setChecked(True)
    tab.start("ALE/Assault-v5", seed=11)
    assert tab.session is not None and tab.session.recording
    qtbot.waitUntil(lambda: tab.session.armed and any(r for *_, r in seen), timeout=10_000)

    view = tab.view
    script = [
        ([Qt.Key.Key_Right], 40),
        ([Qt.Key.Key_Space], 30),
        ([Qt.Key.Key_Left, Qt.Key.Key_Space], 40),
        ([Qt.Key.Key_Up], 30),
        ([], 20),
        ([Qt.Key.Key_Right, Qt.Key.Key_Space], 40),
    ]
    for keys, n in script:
        for k in keys:
            qtbot.keyPress(view, k)
        target = len(seen) + n
        qtbot.waitUntil(lambda t=target: len(seen) >= t, timeout=10_000)
        for k in keys:
            qtbot.keyRelease(view, k)
    tab.shutdown()  # closes the recorder: everything durable
    played = [s for s in seen if s[3]]
    assert len(played) >= 200

    meanings = make_env("ALE/Assault-v5").unwrapped.get_action_meanings()
    eps = store.episodes()
    assert eps and sum(e.steps for e in eps) == len(played)
    stored_actions = []
    i = 0
    for ep in eps:
        steps = store.read_steps(ep.id)
        assert steps[0].action is None and ep.seed is not None
        # 1) the frames stored are the frames shown, bit for bit
        for st, frame in store.iter_steps_frames(ep.id):
            assert played[i][0] == st
            np.testing.assert_array_equal(frame, played[i][2])
            i += 1
        # 2) re-running the environment with the stored seed and actions gives them again
        env = make_env("ALE/Assault-v5")
        try:
            env.reset(seed=ep.seed)
            np.testing.assert_array_equal(env.render(), store.read_frame(ep.id, 0))
            for st in steps[1:]:
                env.step(st.action)
                np.testing.assert_array_equal(env.render(), store.read_frame(ep.id, st.step))
                stored_actions.append(meanings[st.action])
        finally:
            env.close()
    assert i == len(played)
    # the key presses arrived as the actions they map to
    for name in ("RIGHT", "FIRE", "LEFTFIRE", "UP", "NOOP", "RIGHTFIRE"):
        assert name in stored_actions, name


def test_writer_error_stops_recording_and_says_why(qtbot, store):
    from framestore.errors import DiskFull

    tab = PlayTab(store)
    qtbot.addWidget(tab)
    tab.fps_override = 200
    tab.record_btn.setChecked(True)
    tab.set_policy(lambda s: s.sample_action())
    tab.start("CartPole-v1", seed=1)
    qtbot.waitUntil(lambda: tab.session.armed and tab.session.frames_seen > 5, timeout=10_000)
    tab.session._on_background_error(DiskFull(str(store.root), "test"))  # as the writer would
    qtbot.waitUntil(lambda: not tab.session.recording, timeout=5_000)
    qtbot.waitUntil(lambda: "DISK_FULL" in tab.warnings_label.text(), timeout=5_000)
    assert not tab.record_btn.isChecked()
    assert "no space left" in tab.warnings_label.text()
    n = tab.session.frames_seen
    qtbot.waitUntil(lambda: tab.session.frames_seen > n + 5, timeout=5_000)  # still playing
    tab.shutdown()


def test_play_tab_records_through_a_storage_process(qtbot, store):
    """The Writer box picks the process placement: "starting..." while the storage process
    starts, then the frames shown are the frames stored; its death stops recording with
    the reason and the game keeps playing."""
    import os
    import signal

    tab = PlayTab(store)
    qtbot.addWidget(tab)
    tab.show()
    tab.fps_override = 200
    tab.writer_combo.setCurrentIndex(tab.writer_combo.findData("process"))
    seen = []
    tab.stepped.connect(lambda r: seen.append((r.step, r.frame.copy(), r.recorded)))
    tab.set_policy(lambda s: s.sample_action())
    tab.start("CartPole-v1", seed=3)
    tab.record_btn.setChecked(True)
    assert tab.session.starting
    tab.refresh_hud()
    assert "starting..." in tab.hud_label.text()
    qtbot.waitUntil(lambda: tab.session.armed, timeout=60_000)
    qtbot.waitUntil(lambda: sum(r for *_, r in seen) >= 40, timeout=10_000)
    rec = tab.session.recorder
    assert rec is not None and rec.writer_pid is not None
    tab.refresh_hud()
    assert "● REC (direct, storage process)" in tab.hud_label.text()
    rec.flush()
    os.kill(rec.writer_pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: not tab.session.recording, timeout=10_000)
    qtbot.waitUntil(lambda: "storage process" in tab.status_label.text(), timeout=5_000)
    n = tab.session.frames_seen
    qtbot.waitUntil(lambda: tab.session.frames_seen > n + 5, timeout=5_000)  # still playing
    tab.shutdown()
    from tools.recover import recover

    recover(store.root)
    played = [(st, f) for st, f, r in seen if r]
    stored = [x for ep in store.episodes() for x in store.iter_steps_frames(ep.id)]
    assert len(stored) >= 40
    for (st, frame), (want_st, want) in zip(stored, played, strict=False):
        assert st == want_st
        np.testing.assert_array_equal(frame, want)


def test_event_loop_gap_while_recording_600_steps_at_60hz(qtbot, store, record_property):
    tab = PlayTab(store)
    qtbot.addWidget(tab)
    tab.show()
    tab.fps_override = 60
    tab.record_btn.setChecked(True)
    tab.set_policy(lambda s: s.sample_action())
    probe = GapProbe()
    recorded = []
    tab.stepped.connect(lambda r: recorded.append(r.step) if r.recorded else None)
    tab.start("ALE/Assault-v5", seed=2)
    qtbot.waitUntil(lambda: tab.session.armed and bool(recorded), timeout=10_000)
    start = len(recorded)
    t0 = time.perf_counter()
    probe.start()
    qtbot.waitUntil(lambda: len(recorded) - start >= 600, timeout=30_000)
    probe.stop()
    seconds = time.perf_counter() - t0
    hud = tab.hud.update(tab.session.metrics())
    tab.shutdown()
    record_property("max_event_loop_gap_ms", round(probe.max_gap_ms, 2))
    record_property("achieved_fps", round(600 / seconds, 1))
    print(
        f"\nrecording 600 steps at 60 Hz: largest event-loop gap {probe.max_gap_ms:.1f} ms, "
        f"{600 / seconds:.1f} steps/s, queue high-water {hud.queue_high_water}, "
        f"dropped {hud.frames_dropped}"
    )
    assert probe.ticks > 0
    assert sum(e.steps for e in store.episodes()) >= 600


# =============================================================================== replay
def test_replay_shows_stored_pixels_and_scrubs(qtbot, store, assault_frames):
    eid = record_assault(store, assault_frames, 300)
    tab = ReplayTab(store)
    qtbot.addWidget(tab)
    tab.show()
    qtbot.waitUntil(lambda: tab.episodes.row_count() == 1, timeout=5_000)
    k = 137
    tab.open_episode(eid, at=k)
    qtbot.waitUntil(lambda: tab.shown_step == k, timeout=5_000)
    stored = store.read_frame(eid, k)
    # the QImage the view was given holds exactly the stored pixels
    np.testing.assert_array_equal(qimage_to_array(tab.view.image()), stored)
    # and at 1:1 the widget paints them
    tab.view.setFixedSize(stored.shape[1], stored.shape[0])
    qtbot.wait(20)
    shown = qimage_to_array(tab.view.grab().toImage())
    np.testing.assert_array_equal(shown, stored)
    assert tab.current_step_info.step == k and tab.current_step_info.action == k % 7
    assert str(k % 7) in tab.step_text.toPlainText()
    assert tab.slider.value() == k and tab.slider.maximum() == 299

    # scrubbing through the model: the slider follows, the last position wins
    for i in range(0, 300, 7):
        tab.clock.seek(i)
    qtbot.waitUntil(lambda: tab.shown_step == 294, timeout=5_000)
    assert tab.slider.value() == 294
    np.testing.assert_array_equal(tab.view.frame(), store.read_frame(eid, 294))
    tab.slider.setValue(10)  # the slider writes back through the clock
    assert tab.clock.index == 10
    qtbot.waitUntil(lambda: tab.shown_step == 10, timeout=5_000)
    tab.clock.step_forward()
    qtbot.waitUntil(lambda: tab.shown_step == 11, timeout=5_000)

    # playback at 8x with loop reaches the end and wraps around
    tab.loop_check.setChecked(True)
    tab.speed_combo.setCurrentIndex(tab.speed_combo.findData(8.0))
    tab.clock.seek(280)
    tab.play_btn.click()
    qtbot.waitUntil(lambda: tab.clock.index < 200, timeout=5_000)
    tab.play_btn.click()
    assert not tab.clock.playing
    tab.shutdown()
    assert tab.loader.thread.isFinished()


def test_scrubbing_a_long_episode_stays_responsive(qtbot, store, assault_frames, record_property):
    n = 10_000
    eid = record_assault(store, assault_frames, n)
    tab = ReplayTab(store)
    qtbot.addWidget(tab)
    tab.resize(1200, 720)
    tab.show()
    tab.open_episode(eid, at=0)
    qtbot.waitUntil(lambda: tab.shown_step == 0, timeout=10_000)
    assert tab.clock.length == n
    # the timeline is shown, with the whole episode, before the scrubbing starts
    qtbot.waitUntil(lambda: tab.timeline_model.length == n, timeout=10_000)
    assert tab.timeline.isVisible()
    qtbot.waitUntil(lambda: tab.timeline.renders >= 1, timeout=5_000)
    qtbot.wait(300)  # the window's layout settles (a resize draws the plot again)
    renders = tab.timeline.renders
    probe = GapProbe()
    probe.start()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for i in rng.integers(0, n, 400):  # a frantic drag across the whole episode
        tab.slider.setValue(int(i))
        qtbot.wait(1)
    tab.slider.setValue(n - 1)
    qtbot.waitUntil(lambda: tab.shown_step == n - 1, timeout=10_000)
    probe.stop()
    np.testing.assert_array_equal(tab.view.frame(), assault_frames[(n - 1) % len(assault_frames)])
    # scrubbing moved the cursor only: the binned plot was drawn once, not per position
    assert tab.timeline.renders == renders
    worker = tab.loader.worker
    record_property("scrub_max_event_loop_gap_ms", round(probe.max_gap_ms, 2))
    record_property("scrub_frames_decoded", worker.frames_loaded)
    print(
        f"\nscrubbing {n} steps, timeline shown: largest event-loop gap "
        f"{probe.max_gap_ms:.1f} ms, "
        f"{worker.frames_loaded} of 401 requests loaded, "
        f"{store.reader.chunks_decoded} chunks decoded, {time.perf_counter() - t0:.2f} s"
    )
    # the reader's cache bounds memory: never the whole episode
    assert len(store.reader._cache) <= store.reader._cache_size
    tab.shutdown()


def test_follow_live_episode_while_recording(qtbot, store, assault_frames):
    rec = store.recorder("ALE/Assault-v5", render_fps=30)
    tab = None
    try:
        eid = rec.begin_episode(seed=0)
        for i in range(20):
            rec.record_step(assault_frames[i], action=None if i == 0 else 0)
        rec.flush()
        tab = ReplayTab(store)
        qtbot.addWidget(tab)
        tab.open_episode(eid)
        qtbot.waitUntil(lambda: tab.clock.length == 20 and tab.clock.live, timeout=5_000)
        assert tab.clock.index == 19  # follow live: at the newest frame
        for i in range(20, 60):
            rec.record_step(assault_frames[i], action=0)
        rec.flush()
        qtbot.waitUntil(lambda: tab.clock.length == 60, timeout=5_000)
        qtbot.waitUntil(lambda: tab.shown_step == 59, timeout=5_000)
        np.testing.assert_array_equal(tab.view.frame(), assault_frames[59])
        qtbot.waitUntil(lambda: tab.timeline_model.length == 60, timeout=5_000)  # grows too
        rec.end_episode()
        rec.flush()
        qtbot.waitUntil(lambda: not tab.clock.live, timeout=5_000)
    finally:
        rec.close()
        if tab is not None:
            tab.shutdown()


def test_export_delete_and_compact_run_in_background(qtbot, store, assault_frames, tmp_path):
    e1 = record_assault(store, assault_frames, 40)
    e2 = record_assault(store, assault_frames, 40, seed=1)
    tab = ReplayTab(store)
    qtbot.addWidget(tab)
    done = []
    tab.task_finished.connect(lambda name, result: done.append((name, result)))
    out = tmp_path / "ep.npz"
    tab.export(e1, out)
    qtbot.waitUntil(lambda: len(done) == 1, timeout=20_000)
    assert not isinstance(done[0][1], BaseException), done[0][1]
    with np.load(out) as z:
        frames = z[[k for k in z.files if "frame" in k][0]]
    np.testing.assert_array_equal(frames[5], store.read_frame(e1, 5))
    tab.delete([e2])
    qtbot.waitUntil(lambda: len(done) == 2, timeout=10_000)
    qtbot.waitUntil(lambda: [r.id for r in tab.episodes.rows] == [e1], timeout=5_000)
    tab.compact()
    qtbot.waitUntil(lambda: len(done) == 3, timeout=20_000)
    assert not isinstance(done[2][1], BaseException), done[2][1]
    np.testing.assert_array_equal(store.read_frame(e1, 39), assault_frames[39])
    tab.shutdown()


# =============================================================================== app
def test_screenshot_replay_and_play(qtbot, store_path, assault_frames, tmp_path):
    from framestore import FrameStore
    from gui.app import GuiOptions, run

    with FrameStore.open(store_path) as st:
        eid = record_assault(st, assault_frames, 120)
    out = tmp_path / "replay.png"
    assert run(store_path, GuiOptions(replay=eid, frame=42, screenshot=out)) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out2 = tmp_path / "play.png"
    options = GuiOptions(play="CartPole-v1", steps=60, record=True, fast=True, screenshot=out2)
    assert run(store_path, options) == 0
    assert out2.stat().st_size > 1000
    with FrameStore.open(store_path) as st:
        eps = st.episodes()
        assert len(eps) >= 2 and eps[-1].env_id == "CartPole-v1"
    assert run(store_path, GuiOptions(replay=999, screenshot=out)) == 2


def test_gui_verb_builds_options_and_runs_the_gui(qtbot, store_path, assault_frames, tmp_path):
    """``framestore gui`` is the composition root: its options reach ``gui.app.run``."""
    from click.testing import CliRunner

    from framestore import FrameStore
    from tools.cli import cli

    with FrameStore.open(store_path) as st:
        eid = record_assault(st, assault_frames, 30)
    out = tmp_path / "replay.png"
    args = [str(store_path), "--replay", str(eid), "--frame", "7", "--screenshot", str(out)]
    r = CliRunner().invoke(cli, ["gui", *args])
    assert r.exit_code == 0, r.output
    assert "screenshot saved" in r.output and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(cli, ["gui", *args[:3], "--frame", "30", "--screenshot", str(out)])
    assert r.exit_code == 2 and "has no step 30 (30 steps)" in r.output
    # options that cannot work are usage errors before any window opens
    r = CliRunner().invoke(cli, ["gui", str(store_path), "--screenshot", str(out)])
    assert r.exit_code == 2 and "--screenshot needs --replay or --play" in r.output
    r = CliRunner().invoke(cli, ["gui", str(store_path), "--replay", "1", "--play", "CartPole-v1"])
    assert r.exit_code == 2 and "not both" in r.output


def test_main_window_shuts_down_cleanly(qtbot, store, assault_frames):
    record_assault(store, assault_frames, 30)
    win = MainWindow(store)
    qtbot.addWidget(win)
    win.show()
    win.play_tab.fps_override = 120
    win.play_tab.record_btn.setChecked(True)
    win.play_tab.start("FrozenLake-v1", seed=0)
    qtbot.keyClick(win.play_tab.view, Qt.Key.Key_Right)
    qtbot.waitUntil(lambda: win.replay_tab.episodes.row_count() >= 1, timeout=5_000)
    win.replay_tab.open_episode(win.replay_tab.episodes.rows[0].id, at=3)
    qtbot.waitUntil(lambda: win.replay_tab.shown_step == 3, timeout=5_000)
    win.close()
    assert win.replay_tab.loader.thread.isFinished()
    assert win.replay_tab.tasks.pool.activeThreadCount() == 0
    assert os.environ.get("QT_QPA_PLATFORM") == "offscreen"


def test_many_void_qt_calls_do_not_exhaust_none(qtbot):
    """PySide6 6.12 on CPython 3.11 drops a reference to None per void call (gui._compat)."""
    from PySide6.QtWidgets import QLabel

    label = QLabel()
    qtbot.addWidget(label)
    for _ in range(20_000):  # more than None's whole reference count at start-up
        label.setText("x")
    assert label.text() == "x"


# =============================================================================== replay view
def record_rewards(store, frames, rewards, *, actions=None, space=None) -> int:
    rec = store.recorder("ALE/Assault-v5", action_space=space, render_fps=30)
    try:
        eid = rec.begin_episode(seed=0)
        for i, r in enumerate(rewards):
            a = None if i == 0 else (actions[i] if actions is not None else i % 7)
            rec.record_step(frames[i % len(frames)], action=a, reward=r, terminated=i == 59)
        rec.end_episode()
    finally:
        rec.close()
    return eid


def test_timeline_click_and_drag_seek_and_the_cursor_follows(qtbot, store, assault_frames):
    from PySide6.QtCore import QEvent, QPoint, QPointF
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    eid = record_rewards(store, assault_frames, [float(i % 5 == 0) for i in range(60)])
    tab = ReplayTab(store)
    qtbot.addWidget(tab)
    tab.resize(1000, 700)
    tab.show()
    tab.open_episode(eid, at=0)
    qtbot.waitUntil(lambda: tab.timeline_model.length == 60 and tab.shown_step == 0, timeout=10_000)
    view, model = tab.timeline, tab.timeline_model
    w = view.width()
    x = int(45.5 * w / 60)  # the middle of step 45's columns, whatever the tab's width
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=QPoint(x, 30))
    assert tab.clock.index == model.step_at(x, w) == 45
    qtbot.waitUntil(lambda: tab.shown_step == 45, timeout=5_000)  # the frame follows

    def drag(x: float, kind=QEvent.Type.MouseMove) -> None:
        pos = QPointF(x, 30)
        button = Qt.MouseButton.LeftButton
        buttons = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else button
        event = QMouseEvent(
            kind, pos, view.mapToGlobal(pos), button, buttons, Qt.KeyboardModifier.NoModifier
        )
        QApplication.sendEvent(view, event)

    drag(w * 0.1, QEvent.Type.MouseButtonPress)
    seen = []
    for x in np.linspace(w * 0.1, w * 0.5, 9):
        drag(x)
        seen.append(tab.clock.index)
    drag(w * 0.5, QEvent.Type.MouseButtonRelease)
    assert seen == sorted(seen) and seen[0] == 6 and seen[-1] == 30
    # the cursor is drawn where the model puts the current step
    tab.clock.seek(12)
    image = view.grab().toImage()
    x = int(model.x_of(12, w))
    assert image.pixelColor(x, 5).lightness() > 240  # white cursor over the dark plot
    assert image.pixelColor(int(model.x_of(41, w)), 5).lightness() < 100  # no reward, no cursor
    # ...down to the legend, not through its text
    legend_row = view.height() - LEGEND_BAND // 2
    assert image.pixelColor(x, legend_row).lightness() < 240
    # the episode's end (step 59, at the right edge) shows whole: a tick >= 9 px, a flag
    end = MARKER_COLORS["terminated"]
    marker_row = view.height() - LEGEND_BAND - MARKER_BAND // 2
    ticks = [image.pixelColor(x, marker_row) == end for x in range(w - 12, w)]
    assert sum(ticks) >= 9 and ticks[-1]
    assert image.pixelColor(w - 4, 2) == end
    # the legend is a key: every action drawn in its colour, by its value
    labels = [label for label, _ in legend_items(model.columns(w))]
    assert labels[2:10] == ["action", "0", "1", "2", "3", "4", "5", "6"]
    assert labels[-1] == "terminated"
    tab.shutdown()


def test_replay_header_says_seed_dash_like_the_table(qtbot, store, assault_frames):
    rec = store.recorder("ALE/Assault-v5", render_fps=30)
    try:
        eid = rec.begin_episode(seed=None)
        for i in range(3):
            rec.record_step(assault_frames[i], action=None if i == 0 else 1, reward=0.0)
        rec.end_episode()
    finally:
        rec.close()
    tab = ReplayTab(store)
    qtbot.addWidget(tab)
    tab.open_episode(eid, at=1)
    qtbot.waitUntil(lambda: tab.shown_step == 1, timeout=10_000)
    assert f"episode {eid}: ALE/Assault-v5, seed -, 3 steps" in tab.task_label.text()
    tab.shutdown()


def test_the_play_view_shows_the_sessions_frame_itself(qtbot, store):
    tab = PlayTab(store)
    qtbot.addWidget(tab)
    tab.fps_override = 120
    tab.set_policy(lambda s: s.sample_action())
    last = []
    tab.stepped.connect(last.append)
    tab.start("CartPole-v1", seed=0)
    qtbot.waitUntil(lambda: len(last) > 10, timeout=10_000)
    tab.session.set_paused(True)
    qtbot.wait(100)
    assert tab.view.frame() is last[-1].frame  # no copy on the way to the screen
    tab.shutdown()


def test_frames_scale_by_whole_factors_when_enlarged():
    assert fit_rect(812, 672, 160, 210) == ((812 - 480) / 2, (672 - 630) / 2, 480, 630)  # 3x
    assert fit_rect(460, 520, 160, 210)[2:] == (320, 420)  # 2x, not 2.48x
    assert fit_rect(300, 200, 600, 400)[2:] == (300, 200)  # larger: shrunk to fit
    assert fit_rect(812, 672, 600, 400)[2] == 812  # not pixel art: as large as fits


def test_episode_table_shows_rows_with_sensible_widths(qtbot, store, assault_frames):
    for seed in range(7):
        record_assault(store, assault_frames, 5, seed=seed)
    win = MainWindow(store)
    qtbot.addWidget(win)
    win.show()  # the default 1200x760
    tab = win.replay_tab
    win.tabs.setCurrentWidget(tab)
    qtbot.waitUntil(lambda: tab.episodes.row_count() == 7, timeout=5_000)
    qtbot.wait(50)
    table = tab.table
    visible = [
        r for r in range(7)
        if table.rowViewportPosition(r) + table.rowHeight(r) <= table.viewport().height()
    ]  # fmt: skip
    assert len(visible) >= 5, (len(visible), table.viewport().height())
    size_col = tab.episodes.column_of("size")
    assert table.columnWidth(size_col) < 160  # sized to "12.3 KiB", not stretched
    assert table.columnWidth(tab.episodes.column_of("env")) >= 120
    # the splitters move: give the table more room, the viewer keeps its minimum
    sizes = tab.split.sizes()
    tab.split.setSizes([sizes[0] + 100, sizes[1] - 100])
    assert tab.split.sizes()[0] == sizes[0] + 100
    assert tab.frame_split.count() == 2 and not tab.frame_split.childrenCollapsible()
    win.close()


def test_step_panel_rounds_for_reading_and_keeps_exact_values(qtbot, store, assault_frames):
    import json

    import gymnasium as gym
    from PySide6.QtWidgets import QApplication

    actions = [None] + [np.array([0.539185, -0.10000000000000009, 1.0])] * 59
    space = gym.spaces.Box(-1.0, 1.0, (3,), np.float64)
    rewards = [0.0] + [-0.10000000000000009] * 59
    eid = record_rewards(store, assault_frames, rewards, actions=actions, space=space)
    tab = ReplayTab(store)
    qtbot.addWidget(tab)
    tab.open_episode(eid, at=3)
    qtbot.waitUntil(lambda: tab.shown_step == 3, timeout=10_000)
    text = tab.step_text.toPlainText()
    assert "reward      -0.1\n" in text and "action      [0.5392, -0.1, 1]" in text
    assert "0.10000000000000009" not in text and "0.539185" not in text
    assert "-0.10000000000000009" in tab.step_text.toolTip()
    tab.copy_step()
    copied = json.loads(QApplication.clipboard().text())
    assert copied["reward"] == -0.10000000000000009 and copied["action"][0] == 0.539185
    # the table rounds the episode's return too, exact in the tooltip
    qtbot.waitUntil(lambda: tab.episodes.row_count() == 1, timeout=5_000)
    col = tab.episodes.column_of("total_reward")
    index = tab.table_model.index(0, col)
    total = store.episode(eid).total_reward
    assert tab.table_model.data(index) == "-5.9" and repr(total) != "-5.9"
    assert tab.table_model.data(index, Qt.ItemDataRole.ToolTipRole) == f"exact: {total!r}"
    tab.shutdown()


def test_play_hud_names_the_stores_episode_id(qtbot, store, assault_frames):
    for seed in range(2):
        record_assault(store, assault_frames, 5, seed=seed)  # ids 1 and 2 are taken
    tab = PlayTab(store)
    qtbot.addWidget(tab)
    tab.fps_override = 120
    tab.record_btn.setChecked(True)
    tab.set_policy(lambda s: s.sample_action())
    tab.start("MountainCar-v0", seed=0)
    qtbot.waitUntil(lambda: tab.session.episode_id is not None, timeout=10_000)
    tab.refresh_hud()
    # the game played on while the recorder opened: the recorded episode is the
    # session's episode 0 or 1 (its own counter), the store's episode 3
    seed = tab.session.last.seed
    assert tab.session.episode in (0, 1) and seed == tab.session.episode
    assert f"episode 3 · seed {seed}" in tab.hud_label.text()  # the store's id...
    assert f"episode {tab.session.episode} " not in tab.hud_label.text()  # ...not ours
    tab.record_btn.setChecked(False)
    tab.refresh_hud()
    assert "not recorded · seed" in tab.hud_label.text()
    tab.shutdown()
    assert [e.id for e in store.episodes()][-1] == 3
