"""The GUI as a function: ``run(store, GuiOptions(...))`` opens the window and returns an
exit code. ``framestore gui`` (``tools/cli_gui.py``) parses the command line, builds the
``GuiOptions`` once and calls ``run``; importing this module imports Qt.

Headless screenshots (the window is rendered offscreen, saved, and the app exits):

* ``GuiOptions(replay=EPISODE_ID, frame=K, screenshot=OUT)``: the replay viewer at step K;
* ``GuiOptions(play=ENV_ID, steps=N, screenshot=OUT)``: N steps of a seeded random policy
  in the Play tab, recorded into the store.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import QApplication

from framestore import FrameStore, FrameStoreError
from tools.exitcodes import ExitCode

from ._main_window import MainWindow

__all__ = ["GuiOptions", "default_store_path", "run"]


@dataclass(frozen=True)
class GuiOptions:
    """What ``framestore gui`` was asked to do besides opening the window.

    Attributes:
        replay: open this episode in the Replay tab.
        frame: the step to show (with ``replay``).
        play: start this environment id in the Play tab.
        steps: steps of the scripted random policy (with ``play`` and ``screenshot``).
        seed: seed of ``play``.
        preset: recording preset (with ``play``); ``None`` is the game's default.
        fast: with ``screenshot``, play as fast as possible instead of at render fps.
        screenshot: save a screenshot of the window here and exit (needs ``replay`` or
            ``play``).
        timeout: seconds to wait for the frame or the steps of a screenshot.

    Raises:
        ValueError: for a combination that cannot work (both ``replay`` and ``play``;
            ``screenshot`` without either).
    """

    replay: int | None = None
    frame: int = 0
    play: str | None = None
    steps: int = 300
    seed: int = 0
    preset: str | None = None
    fast: bool = False
    screenshot: Path | None = None
    timeout: float = 120.0

    def __post_init__(self) -> None:
        if self.replay is not None and self.play is not None:
            raise ValueError("use --replay or --play, not both")
        if self.screenshot is not None and self.replay is None and self.play is None:
            raise ValueError("--screenshot needs --replay or --play")


def default_store_path() -> Path:
    """``$XDG_DATA_HOME/framestore/default.store`` (``~/.local/share`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "framestore" / "default.store"


def _error(text: str) -> None:
    print(f"framestore gui: error: {text}", file=sys.stderr)


def run(store: Path | None, options: GuiOptions) -> int:
    """Open the GUI on a store (``default_store_path()`` for ``None``) and return an
    ``ExitCode``. With ``options.screenshot`` it saves the window and returns; otherwise
    it runs the Qt event loop until the window closes."""
    if options.screenshot is not None:
        # read when the QApplication is made: a screenshot needs no screen
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    store_path = store if store is not None else default_store_path()
    try:
        opened = FrameStore.open(store_path, create=options.replay is None)
    except (FrameStoreError, OSError) as e:
        _error(str(e))
        return ExitCode.USAGE

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "framestore"])
    win = MainWindow(opened)
    try:
        win.show()
        code = ExitCode.OK
        if options.replay is not None:
            code = _replay(app, win, options)
        elif options.play is not None:
            code = _play(app, win, options)
        if options.screenshot is None and code == ExitCode.OK:
            app.exec()
        return code
    finally:
        win.shutdown()
        win.close()
        win.deleteLater()
        app.processEvents()
        opened.close()


def _wait(app: QApplication, cond: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        app.processEvents()
        time.sleep(0.005)
    return True


def _replay(app: QApplication, win: MainWindow, options: GuiOptions) -> ExitCode:
    """Open ``options.replay`` at ``options.frame`` and wait until that frame is shown."""
    tab = win.replay_tab
    win.tabs.setCurrentWidget(tab)
    want = (options.replay, options.frame)
    shown: list[tuple[int, int]] = []
    errors: list[str] = []
    rows: list[int] = []  # of the opened episode, unless it is still being recorded
    tab.frame_shown.connect(lambda e, s: shown.append((e, s)))
    tab.loader.failed.connect(lambda e, text: errors.append(text))
    tab.loader.opened.connect(lambda e, info, n, live, fps: None if live else rows.append(n))
    tab.open_episode(options.replay, at=options.frame)

    def done() -> bool:
        missing = bool(rows) and not 0 <= options.frame < rows[-1]  # never comes: stop now
        return want in shown or bool(errors) or missing

    ok = _wait(app, done, options.timeout)
    if errors or not ok:
        _error(errors[0] if errors else "timed out waiting for the frame")
        return ExitCode.USAGE if errors else ExitCode.PROBLEMS
    if want not in shown or tab.clock.index != options.frame:
        _error(f"episode {options.replay} has no step {options.frame} ({tab.clock.length} steps)")
        return ExitCode.USAGE
    _wait(app, lambda: tab.episodes.row_count() > 0, 5.0)
    tab.select_episode(options.replay)
    _settle(app)
    if options.screenshot is not None:
        return _save(win, options.screenshot)
    return ExitCode.OK


def _play(app: QApplication, win: MainWindow, options: GuiOptions) -> ExitCode:
    """Start ``options.play``; for a screenshot, record ``options.steps`` steps of a seeded
    random policy first."""
    tab = win.play_tab
    win.tabs.setCurrentWidget(tab)
    if options.preset:
        i = tab.preset_combo.findData(options.preset)
        if i < 0:
            _error(f"unknown preset {options.preset!r}")
            return ExitCode.USAGE
        tab.preset_combo.setCurrentIndex(i)
    if options.screenshot is None:
        tab.start(options.play, seed=options.seed)
        return ExitCode.OK if tab.session is not None else ExitCode.USAGE
    tab.record_btn.setChecked(True)
    if options.fast:
        tab.fps_override = 1000.0
    tab.set_policy(lambda s: s.sample_action())
    tab.start(options.play, seed=options.seed)
    session = tab.session
    if session is None:
        _error(tab.status_label.text())
        return ExitCode.USAGE
    errors: list[str] = []
    tab.session_event.connect(lambda ev: errors.append(ev.text) if ev.kind == "error" else None)
    start = session.frames_seen
    ok = _wait(app, lambda: session.frames_seen - start >= options.steps or errors, options.timeout)
    if errors or not ok:
        _error(errors[0] if errors else "timed out playing")
        return ExitCode.PROBLEMS
    tab.timer.stop()
    tab.refresh_hud()  # HUD numbers as of the last step
    _settle(app)
    return _save(win, options.screenshot)


def _settle(app: QApplication, seconds: float = 0.2) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def _save(win: MainWindow, path: Path) -> ExitCode:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not win.grab().save(str(path), "PNG"):
        _error(f"cannot write {path}")
        return ExitCode.PROBLEMS
    print(f"screenshot saved to {path}")
    return ExitCode.OK
