"""``python -m gui [STORE]`` / ``framestore gui [STORE]``: start the GUI.

Headless screenshots (the window is rendered offscreen, saved, and the app exits):

* ``--replay EPISODE_ID --frame K --screenshot OUT.png``: the replay viewer at step K;
* ``--play ENV_ID --steps N --screenshot OUT.png``: N steps of a seeded random policy in
  the Play tab, recorded into STORE.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def default_store_path() -> Path:
    """``$XDG_DATA_HOME/framestore/default.store`` (``~/.local/share`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "framestore" / "default.store"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="framestore gui", description="Play with recording, live HUD, replay viewer."
    )
    p.add_argument("store", nargs="?", help=f"store directory (default {default_store_path()})")
    p.add_argument("--replay", type=int, metavar="EPISODE_ID", help="open this episode")
    p.add_argument("--frame", type=int, default=0, metavar="K", help="step to show (--replay)")
    p.add_argument("--play", metavar="ENV_ID", help="start this environment in the Play tab")
    p.add_argument("--steps", type=int, default=300, help="steps of the scripted policy (--play)")
    p.add_argument("--seed", type=int, default=0, help="seed of --play")
    p.add_argument("--preset", default=None, help="recording preset (--play)")
    p.add_argument("--fast", action="store_true", help="--play as fast as possible")
    p.add_argument("--screenshot", metavar="OUT.png", help="save a screenshot and exit")
    p.add_argument("--timeout", type=float, default=120.0, help="give up a screenshot after S s")
    return p


def _wait(app, cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        app.processEvents()
        time.sleep(0.005)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the GUI; returns an exit code."""
    args = build_parser().parse_args(argv)
    if args.screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        if args.replay is None and args.play is None:
            print("framestore gui: error: --screenshot needs --replay or --play", file=sys.stderr)
            return EXIT_USAGE
    if args.replay is not None and args.play is not None:
        print("framestore gui: error: use --replay or --play, not both", file=sys.stderr)
        return EXIT_USAGE

    from PySide6.QtWidgets import QApplication

    from framestore import FrameStore
    from framestore.errors import FrameStoreError

    from ._main_window import MainWindow

    store_path = Path(args.store) if args.store else default_store_path()
    try:
        store = FrameStore.open(store_path, create=args.replay is None)
    except (FrameStoreError, OSError) as e:
        print(f"framestore gui: error: {e}", file=sys.stderr)
        return EXIT_USAGE

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "framestore"])
    win = MainWindow(store)
    code = EXIT_OK
    try:
        win.show()
        if args.replay is not None:
            code = _replay(app, win, args)
        elif args.play is not None:
            code = _play(app, win, args)
        if args.screenshot:
            return code
        if code == EXIT_OK:
            app.exec()
        return code
    finally:
        win.shutdown()
        win.close()
        win.deleteLater()
        app.processEvents()
        store.close()


def _replay(app, win, args) -> int:
    tab = win.replay_tab
    win.tabs.setCurrentWidget(tab)
    shown: list[tuple[int, int]] = []
    errors: list[str] = []
    tab.frame_shown.connect(lambda e, s: shown.append((e, s)))
    tab.loader.failed.connect(lambda e, text: errors.append(text))
    tab.open_episode(args.replay, at=args.frame)
    ok = _wait(
        app,
        lambda: (args.replay, args.frame) in shown or errors,
        args.timeout,
    )
    if errors or not ok:
        msg = errors[0] if errors else "timed out waiting for the frame"
        print(f"framestore gui: error: {msg}", file=sys.stderr)
        return EXIT_USAGE if errors else EXIT_ERROR
    if (args.replay, args.frame) not in shown or tab.clock.index != args.frame:
        print(
            f"framestore gui: error: episode {args.replay} has no step {args.frame} "
            f"({tab.clock.length} steps)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _wait(app, lambda: tab.episodes.row_count() > 0, 5.0)
    tab.select_episode(args.replay)
    _settle(app)
    if args.screenshot:
        return _save(win, args.screenshot)
    return EXIT_OK


def _play(app, win, args) -> int:
    tab = win.play_tab
    win.tabs.setCurrentWidget(tab)
    if args.preset:
        i = tab.preset_combo.findData(args.preset)
        if i < 0:
            print(f"framestore gui: error: unknown preset {args.preset!r}", file=sys.stderr)
            return EXIT_USAGE
        tab.preset_combo.setCurrentIndex(i)
    if not args.screenshot:
        tab.start(args.play, seed=args.seed)
        return EXIT_OK if tab.session is not None else EXIT_USAGE
    tab.record_btn.setChecked(True)
    if args.fast:
        tab.fps_override = 1000.0
    tab.set_policy(lambda s: s.sample_action())
    tab.start(args.play, seed=args.seed)
    if tab.session is None:
        print(f"framestore gui: error: {tab.status_label.text()}", file=sys.stderr)
        return EXIT_USAGE
    errors: list[str] = []
    tab.session_event.connect(lambda ev: errors.append(ev.text) if ev.kind == "error" else None)
    session = tab.session
    start = session.frames_seen
    ok = _wait(
        app,
        lambda: session.frames_seen - start >= args.steps or errors,
        args.timeout,
    )
    if errors:
        print(f"framestore gui: error: {errors[0]}", file=sys.stderr)
        return EXIT_ERROR
    if not ok:
        print("framestore gui: error: timed out playing", file=sys.stderr)
        return EXIT_ERROR
    tab.timer.stop()
    tab.refresh_hud()  # HUD numbers as of the last step
    _settle(app)
    code = _save(win, args.screenshot)
    return code


def _settle(app, seconds: float = 0.2) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def _save(win, out: str) -> int:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not win.grab().save(str(path), "PNG"):
        print(f"framestore gui: error: cannot write {path}", file=sys.stderr)
        return EXIT_ERROR
    print(f"screenshot saved to {path}")
    return EXIT_OK
