"""The main window: a Play tab and a Replay tab over one open ``FrameStore``."""

from __future__ import annotations

from PySide6.QtWidgets import QMainWindow, QTabWidget, QWidget

from framestore import FrameStore

from ._play_tab import PlayTab
from ._replay_tab import ReplayTab


class MainWindow(QMainWindow):
    """Holds the two tabs. The caller owns the store: call ``shutdown()`` (closeEvent
    does it) before closing the store."""

    def __init__(self, store: FrameStore, parent: QWidget | None = None):
        super().__init__(parent)
        self.store = store
        self.setWindowTitle(f"framestore — {store.location}")
        self.tabs = QTabWidget()
        self.play_tab = PlayTab(store)
        self.replay_tab = ReplayTab(store)
        self.tabs.addTab(self.play_tab, "Play")
        self.tabs.addTab(self.replay_tab, "Replay")
        self.setCentralWidget(self.tabs)
        self.play_tab.session_event.connect(self._session_event)
        self.play_tab.record_btn.toggled.connect(self._recording_toggled)
        self.statusBar().showMessage(store.location + ("  (read-only)" if store.readonly else ""))
        self.resize(1200, 760)
        self._shut = False

    def _recording_toggled(self, on: bool) -> None:
        # while recording, the episode list refreshes periodically (live episodes appear)
        self.replay_tab.live_hint = on
        self.replay_tab.refresh()

    def _session_event(self, ev) -> None:
        self.statusBar().showMessage(ev.text, 10_000)
        self.replay_tab.refresh()

    def shutdown(self) -> None:
        """Stop timers and threads; close recordings (everything recorded is durable)."""
        if self._shut:
            return
        self._shut = True
        self.play_tab.shutdown()
        self.replay_tab.shutdown()

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)
