"""The GUI as a function: ``run(store, GuiOptions(...))`` opens the window and returns an
exit code. ``framestore gui`` (``tools/cli_gui.py``) parses the command line, builds the
``GuiOptions`` once and calls ``run``; importing this module imports Qt.

Headless screenshots (the window is rendered offscreen, saved, and the app exits):

* ``GuiOptions(replay=EPISODE_ID, frame=K, screenshot=OUT)``: the replay viewer at step K;
* ``GuiOptions(play=ENV_ID, steps=N, screenshot=OUT)``: N actions of a seeded random
  policy in the Play tab; with ``record=True`` they are recorded into the store (an
  episode of N+1 steps, step 0 being the reset, as ``record --max-steps N`` gives);
  without it nothing is written to the store.

Before Qt starts, ``run`` checks what would otherwise fail inside it: a display Qt can
open a window on (``gui._display``), the episode and step asked for.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QtMsgType, qInstallMessageHandler
from PySide6.QtWidgets import QApplication

from framestore import FrameStore, FrameStoreError, InvalidInput, StoreLocked
from framestore.errors import NotAStore
from framestore.files import why_not_writable
from framestore.state.bookkeeping import writer_lock
from tools.exitcodes import ExitCode

from ._display import display_problem
from ._main_window import MainWindow

#: Screenshot formats by file extension (Qt writes each; anything else is refused).
SCREENSHOT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}
#: Qt messages that say nothing to the user (the offscreen plugin's, at every window).
QUIET_QT_MESSAGES = ("This plugin does not support propagateSizeHints()",)

__all__ = ["GuiOptions", "default_store_path", "freeze_startup_objects", "run"]


@dataclass(frozen=True)
class GuiOptions:
    """What ``framestore gui`` was asked to do besides opening the window.

    Attributes:
        replay: open this episode in the Replay tab.
        frame: the step to show (with ``replay``).
        play: start this environment id in the Play tab.
        steps: actions of the scripted random policy (with ``play`` and ``screenshot``).
        record: record ``play`` into the store (a screenshot without it writes nothing).
        seed: seed of ``play``.
        preset: recording preset (with ``play``); ``None`` is the game's default.
        fast: with ``screenshot``, play as fast as possible instead of at render fps.
        screenshot: save a screenshot of the window here and exit (needs ``replay`` or
            ``play``).
        timeout: seconds to wait for the frame or the steps of a screenshot.

    Raises:
        ValueError: for a combination that cannot work (both ``replay`` and ``play``;
            ``screenshot`` without either; ``record`` without ``play``; ``steps`` below
            1; a screenshot file type Qt does not write here).
    """

    replay: int | None = None
    frame: int = 0
    play: str | None = None
    steps: int = 300
    record: bool = False
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
        if self.record and self.play is None:
            raise ValueError("--record needs --play")
        if self.steps < 1:
            raise ValueError(f"--steps must be at least 1 (got {self.steps})")
        if self.screenshot is not None:
            ext = self.screenshot.suffix.lower()
            if ext not in SCREENSHOT_FORMATS:
                raise ValueError(
                    f"--screenshot {self.screenshot}: cannot write "
                    f"{ext + ' files' if ext else 'a file without an extension'}; use "
                    + ", ".join(sorted(SCREENSHOT_FORMATS))
                )


def default_store_path() -> Path:
    """``$XDG_DATA_HOME/framestore/default.store`` (``~/.local/share`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "framestore" / "default.store"


def _error(text: str) -> None:
    print(f"framestore: error: {text}", file=sys.stderr)


def _qt_message(kind: QtMsgType, context, message: str) -> None:
    if message in QUIET_QT_MESSAGES:
        return
    print(message, file=sys.stderr)


@contextmanager
def _open_store(location: str | os.PathLike, options: GuiOptions) -> Iterator[FrameStore]:
    """The store the window shows. A published store (a URL, or a directory holding a
    manifest) and the store of a screenshot are opened read-only (a screenshot of play
    that does not record writes nothing: without a store, it plays into an empty scratch
    store). Otherwise the store is opened for writing, and made for play (the first
    recording needs somewhere to go); with ``record``, another recorder holding it is
    found here, before Qt starts."""
    text = os.fspath(location)
    read_only = options.screenshot is not None and not options.record
    try:
        with FrameStore.open(text, readonly=True) as store:
            if store.published and options.record:
                raise InvalidInput(
                    f"{store.location}: a published store is read-only; record into a "
                    "store directory (and publish it again)"
                )
            if store.published or read_only:
                yield store
                return
    except NotAStore:
        if "://" in text or options.replay is not None:
            raise
        if read_only:  # play screenshot into a store that does not exist: a scratch one
            with tempfile.TemporaryDirectory(prefix="framestore-gui-") as tmp:
                with FrameStore.open(Path(tmp) / "scratch.store") as scratch:
                    yield scratch
            return
    with FrameStore.open(text, create=options.replay is None) as store:
        if options.record:
            with writer_lock(store):  # held by a recorder: StoreLocked, exit 4
                pass
        yield store


def _replay_problem(store: FrameStore, options: GuiOptions) -> str | None:
    """Why the episode and step asked for cannot be shown (checked before Qt starts, so
    a step out of range never waits for a frame that cannot come)."""
    ep = store.episode(options.replay)  # EpisodeNotFound: unknown or deleted
    if ep.status == "recording" and options.frame >= 0:
        return None  # still growing: the step may come
    if not 0 <= options.frame < ep.steps:
        valid = f"0..{ep.steps - 1}" if ep.steps else "none"
        return (
            f"episode {ep.id} has no step {options.frame} ({ep.steps} steps): "
            f"--frame must be in {valid}"
        )
    return None


def run(store: str | os.PathLike | None, options: GuiOptions) -> int:
    """Open the GUI on a store (a directory or a published store's URL;
    ``default_store_path()`` for ``None``) and return an
    ``ExitCode``. With ``options.screenshot`` it saves the window and returns; otherwise
    it runs the Qt event loop until the window closes."""
    if options.screenshot is not None:
        # read when the QApplication is made: a screenshot needs no screen
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    problem = None if QApplication.instance() else display_problem()
    if problem is not None:
        _error(problem)
        return ExitCode.USAGE
    store_path = store if store is not None else default_store_path()
    try:
        with _open_store(store_path, options) as opened:
            if options.replay is not None:
                problem = _replay_problem(opened, options)
                if problem is not None:
                    _error(problem)
                    return ExitCode.USAGE
            return _run_window(opened, options)
    except StoreLocked as e:
        _error(str(e))
        return ExitCode.LOCKED
    except (FrameStoreError, OSError) as e:
        _error(str(e))
        return ExitCode.USAGE


def _run_window(opened: FrameStore, options: GuiOptions) -> int:
    qInstallMessageHandler(_qt_message)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "framestore"])
    win = MainWindow(opened)
    try:
        win.show()
        freeze_startup_objects()
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


def freeze_startup_objects() -> None:
    """Move every object made so far (Qt, gymnasium, numpy, the window: ~90k) out of the
    cyclic garbage collector's reach. A full collection walks them all, 170-500 ms on a
    loaded 2-core machine, holding the GIL on whichever thread triggered it: the event
    loop stalls. What is made later (steps, frames) is still collected."""
    gc.collect()
    gc.freeze()


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
        n = tab.clock.length
        _error(
            f"episode {options.replay} has no step {options.frame} ({n} steps): "
            f"--frame must be in {f'0..{n - 1}' if n else 'none'}"
        )
        return ExitCode.USAGE
    _wait(app, lambda: tab.episodes.row_count() > 0, 5.0)
    tab.select_episode(options.replay)
    _settle(app)
    if options.screenshot is not None:
        return _save(win, options.screenshot)
    return ExitCode.OK


def _play(app: QApplication, win: MainWindow, options: GuiOptions) -> ExitCode:
    """Start ``options.play`` (recording with ``options.record``); for a screenshot, play
    ``options.steps`` actions of a seeded random policy first."""
    tab = win.play_tab
    win.tabs.setCurrentWidget(tab)
    if options.preset:
        i = tab.preset_combo.findData(options.preset)
        if i < 0:
            _error(f"unknown preset {options.preset!r}")
            return ExitCode.USAGE
        tab.preset_combo.setCurrentIndex(i)
    tab.record_btn.setChecked(options.record)
    if options.screenshot is None:
        tab.start(options.play, seed=options.seed)
        return ExitCode.OK if tab.session is not None else ExitCode.USAGE
    return _play_scripted(app, win, options)


def _play_scripted(app: QApplication, win: MainWindow, options: GuiOptions) -> ExitCode:
    """Play ``options.steps`` actions of a seeded random policy, then save the screenshot.
    The session holds after them (recorded ones, when recording: the episode holds N+1
    steps whatever the game, and ends complete, its last step truncated, as
    ``record --max-steps N`` ends it)."""
    tab = win.play_tab
    if options.fast:
        tab.fps_override = 1000.0
    tab.set_policy(lambda s: s.sample_action())
    actions: list[int] = []

    def count(res) -> None:
        if res.action is not None and (res.recorded or not options.record):
            actions.append(res.step)

    tab.stepped.connect(count)
    tab.start(options.play, seed=options.seed, actions=options.steps)
    session = tab.session
    if session is None:
        _error(tab.status_label.text())
        return ExitCode.USAGE
    errors: list = []  # SessionEvents of kind "error"
    tab.session_event.connect(lambda ev: errors.append(ev) if ev.kind == "error" else None)
    ok = _wait(app, lambda: len(actions) >= options.steps or errors, options.timeout)
    if errors or not ok:
        _error(errors[0].text if errors else "timed out playing")
        locked = bool(errors) and isinstance(errors[0].error, StoreLocked)
        return ExitCode.LOCKED if locked else ExitCode.PROBLEMS
    tab.refresh_hud()  # HUD numbers as of the last step
    _settle(app)
    return _save(win, options.screenshot)


def _settle(app: QApplication, seconds: float = 0.2) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def _save(win: MainWindow, path: Path) -> ExitCode:
    """Save the window in the format the file's extension names."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _error(f"cannot write {path}: {why_not_writable(path, e)}")
        return ExitCode.USAGE
    fmt = SCREENSHOT_FORMATS[path.suffix.lower()]
    if not win.grab().save(str(path), fmt):
        _error(f"cannot write {path} as {fmt}")
        return ExitCode.PROBLEMS
    print(f"screenshot saved to {path}")
    return ExitCode.OK
