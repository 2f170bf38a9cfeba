"""The Play tab: choose an environment, play it with the keyboard, record it, watch the HUD.

Thin: the logic is in ``PlaySession``, ``KeyState``/``KeyMapper`` and ``HudModel``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from framestore import FrameStore

from ._frame_view import GameView
from .models import HudModel, KeyState, PlaySession, SessionEvent

DEFAULT_ENVS = (
    "ALE/Assault-v5",
    "ALE/Breakout-v5",
    "ALE/Pong-v5",
    "CarRacing-v3",
    "CartPole-v1",
    "FrozenLake-v1",
    "MountainCar-v0",
    "Acrobot-v1",
    "CliffWalking-v1",
)


def preset_names() -> list[str]:
    """The named presets, for the preset picker."""
    from framestore.settings import PRESETS  # lazily, like every framestore import here

    return list(PRESETS)


def writer_names() -> list[str]:
    """The writer placements, for the writer picker."""
    from framestore.settings import WRITERS

    return list(WRITERS)


def _mono() -> QFont:
    f = QFont("monospace")
    f.setStyleHint(QFont.StyleHint.Monospace)
    return f


class PlayTab(QWidget):
    """Shows a ``PlaySession`` that plays on its own session thread at the environment's
    ``render_fps``: the event loop only draws the frames it hands over (as they are, no
    copy) and the HUD, so a slow step or a seeded reset does not hold it.

    Signals: ``stepped(StepResult)`` for each step the session played (in order),
    ``session_event(SessionEvent)`` for what the session's other threads finished
    (recording started/stopped, saved, errors).
    """

    stepped = Signal(object)
    session_event = Signal(object)
    _wakeup = Signal()  # emitted from the session thread: results or events wait

    def __init__(
        self,
        store: FrameStore,
        parent: QWidget | None = None,
        *,
        hud: HudModel | None = None,
        env_ids: tuple[str, ...] = DEFAULT_ENVS,
        session_factory: Callable[..., PlaySession] = PlaySession,
    ):
        super().__init__(parent)
        self.store = store
        self.hud = hud or HudModel()
        self.keys = KeyState()
        self.session: PlaySession | None = None
        self._session_factory = session_factory
        self._policy: Callable[[PlaySession], Any] | None = None
        self._closing: list[Future] = []
        self.fps_override: float | None = None
        self.steps_done = 0
        self._make_widgets(env_ids)
        self._lay_out()
        self._connect()
        self._update_buttons()
        self.hud.update(None)

    def _make_widgets(self, env_ids: tuple[str, ...]) -> None:
        self.view = GameView(message="choose an environment and press Start")
        self.view.key_pressed.connect(self.keys.press)
        self.view.key_released.connect(self._key_released)

        self.env_combo = QComboBox()
        self.env_combo.setEditable(True)
        self.env_combo.addItems(list(env_ids))
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.preset_combo = QComboBox()
        self.preset_combo.addItem("(game default)", None)
        for name in preset_names():
            self.preset_combo.addItem(name, name)
        self.writer_combo = QComboBox()
        self.writer_combo.setToolTip(
            "Where the frame writer and the SQLite sink run: threads of this app, or a "
            "storage process (no compression or SQLite under the UI's GIL)"
        )
        self.writer_combo.addItem("(host default)", None)
        for name in writer_names():
            self.writer_combo.addItem(name, name)
        self.start_btn = QPushButton("Start")
        self.reset_btn = QPushButton("Reset")
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setCheckable(True)
        self.record_btn = QPushButton("● Record")
        self.record_btn.setCheckable(True)
        self.lite_check = QCheckBox("Telemetry-lite (keep in memory, save on demand)")
        self.save_btn = QPushButton("Save")
        self.discard_btn = QPushButton("Discard")
        self.hud_label = QLabel()
        self.hud_label.setFont(_mono())
        self.hud_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warnings_label = QLabel()
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setStyleSheet("color: #c0392b; font-weight: bold;")
        self.bindings_label = QLabel()
        self.bindings_label.setFont(_mono())
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.addRow("Environment", self.env_combo)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Preset", self.preset_combo)
        form.addRow("Writer", self.writer_combo)
        buttons = QHBoxLayout()
        for b in (self.start_btn, self.reset_btn, self.pause_btn):
            buttons.addWidget(b)
        rec_row = QHBoxLayout()
        for b in (self.record_btn, self.save_btn, self.discard_btn):
            rec_row.addWidget(b)
        hud_box = QGroupBox("HUD")
        hud_layout = QVBoxLayout(hud_box)
        hud_layout.addWidget(self.hud_label)
        keys_box = QGroupBox("Keys")
        keys_layout = QVBoxLayout(keys_box)
        keys_layout.addWidget(self.bindings_label)

        side = QVBoxLayout()
        side.addLayout(form)
        side.addLayout(buttons)
        side.addLayout(rec_row)
        side.addWidget(self.lite_check)
        side.addWidget(hud_box)
        side.addWidget(keys_box)
        side.addWidget(self.status_label)
        side.addStretch(1)
        side_w = QWidget()
        side_w.setLayout(side)
        side_w.setFixedWidth(360)

        left = QVBoxLayout()
        left.addWidget(self.view, 1)
        left.addWidget(self.warnings_label)
        layout = QHBoxLayout(self)
        layout.addLayout(left, 1)
        layout.addWidget(side_w)

    def _connect(self) -> None:
        self.start_btn.clicked.connect(lambda: self.start())
        self.reset_btn.clicked.connect(self.reset)
        self.pause_btn.toggled.connect(self.set_paused)
        self.record_btn.toggled.connect(self.set_recording)
        self.lite_check.toggled.connect(self.set_lite)
        self.save_btn.clicked.connect(self.save)
        self.discard_btn.clicked.connect(self.discard)
        self.hud.changed.connect(self._show_hud)

        self._wakeup.connect(self._pump, Qt.ConnectionType.QueuedConnection)
        self.hud_timer = QTimer(self)
        self.hud_timer.setInterval(200)
        self.hud_timer.timeout.connect(self.refresh_hud)
        self.hud_timer.start()

    # ------------------------------------------------------------------ actions
    def start(
        self,
        env_id: str | None = None,
        seed: int | None = None,
        *,
        actions: int | None = None,
    ) -> None:
        """(Re)start the chosen environment; recording carries over if it was on. With
        ``actions``, the session holds after that many actions (recorded ones, when
        recording), the last truncated (the scripted screenshot)."""
        env_id = env_id or self.env_combo.currentText().strip()
        if env_id != self.env_combo.currentText():
            self.env_combo.setCurrentText(env_id)
        if seed is not None:
            self.seed_spin.setValue(seed)
        record = self.record_btn.isChecked()
        self._close_session()
        try:
            self.session = self._session_factory(
                env_id,
                self.store,
                seed=self.seed_spin.value(),
                preset=self.preset_combo.currentData(),
                lite=self.lite_check.isChecked(),
                writer=self.writer_combo.currentData(),
            )
        except Exception as e:  # noqa: BLE001 - unknown id, missing dependency
            self.session = None
            self._say(f"cannot start {env_id}: {e}")
            self._update_buttons()
            return
        s = self.session
        self.bindings_label.setText(s.keymap.bindings_text())
        fps = self.fps_override or s.render_fps
        self.hud.target_fps = fps
        self.hud.reset_frame_times()
        self.hud.set_error(None)
        self.keys.clear()
        s.keys = self.keys.consume
        s.policy = self._policy
        if actions is not None:
            s.limit_actions(actions, recorded=record)
        if record:
            self._set_session_recording(True)
        s.start(self._wakeup.emit, fps=fps)
        self.pause_btn.setChecked(False)
        self.view.setFocus()
        self._say(f"playing {env_id} at {fps:g} fps (seed {s.base_seed})")
        self._update_buttons()

    def reset(self) -> None:
        if self.session is not None:
            self.session.reset()  # on the session thread; the frame arrives with the rest
            self.view.setFocus()

    def set_paused(self, paused: bool) -> None:
        if self.session is None:
            return
        self.session.set_paused(paused)
        if not paused:
            self.hud.reset_frame_times()
            self.view.setFocus()

    def set_recording(self, on: bool) -> None:
        if self.session is None:
            return  # takes effect on Start
        self._set_session_recording(on)

    def _set_session_recording(self, on: bool) -> None:
        try:
            self.session.set_recording(on)
        except ValueError as e:
            self._say(str(e))
            self._uncheck_record()
        if self.session.starting:
            self._say("starting the recorder...")
        if on:
            self.hud.set_error(None)
        self._update_buttons()

    def set_lite(self, on: bool) -> None:
        if self.session is None:
            return
        try:
            self.session.set_lite(on)
        except ValueError as e:
            self._say(str(e))
            self.lite_check.blockSignals(True)
            self.lite_check.setChecked(self.session.lite)
            self.lite_check.blockSignals(False)
        self._update_buttons()

    def save(self) -> None:
        if self.session is not None and self.session.save() is not None:
            self._say("saving the episode in the background...")
        self._update_buttons()

    def discard(self) -> None:
        if self.session is not None:
            self.session.discard()
            self._say("episode discarded")
        self._update_buttons()

    def set_policy(self, policy: Callable[[PlaySession], Any] | None) -> None:
        """Drive the game with ``policy(session) -> action`` instead of the keyboard
        (called on the session thread)."""
        self._policy = policy
        if self.session is not None:
            self.session.policy = policy

    # ------------------------------------------------------------------ loop
    def _key_released(self, name: str) -> None:
        if name == "*":
            for k in self.keys.held:
                self.keys.release(k)
        else:
            self.keys.release(name)

    def _pump(self) -> None:
        """The session thread has results or events: show the newest frame, report
        every step, apply the events."""
        s = self.session
        if s is None:
            return
        results = s.take_results()
        for res in results:
            self.hud.frame_presented()
            self.steps_done += 1
            self.stepped.emit(res)
        if results:
            self.view.set_frame(results[-1].frame)
        for ev in s.poll_events():
            self._on_event(ev)
        if s.awaiting_decision:
            self._update_buttons()

    def refresh_hud(self) -> None:
        """Take the session's events and metrics now (the HUD timer does it every 200 ms)."""
        s = self.session
        if s is None:
            return
        for ev in s.poll_events():
            self._on_event(ev)
        self.hud.update(s.metrics())
        if s.recording != self.record_btn.isChecked() and not s.recording:
            self._uncheck_record()

    def _on_event(self, ev: SessionEvent) -> None:
        if ev.kind == "error":
            self.hud.set_error(ev.error or ev.text)
            self._uncheck_record()
        self._say(ev.text)
        self._update_buttons()
        self.session_event.emit(ev)

    def _show_hud(self, state) -> None:
        lines = self.hud.lines()
        s = self.session
        if s is not None:
            session = s.hud_lines()
            lines = session[:-1] + lines + session[-1:]
        self.hud_label.setText("\n".join(lines))
        self.warnings_label.setText("\n".join(f"⚠ {w.code}: {w.text}" for w in state.warnings))

    # ------------------------------------------------------------------ helpers
    def _uncheck_record(self) -> None:
        self.record_btn.blockSignals(True)
        self.record_btn.setChecked(False)
        self.record_btn.blockSignals(False)
        self._update_buttons()

    def _say(self, text: str) -> None:
        self.status_label.setText(text)

    def _update_buttons(self) -> None:
        s = self.session
        has = s is not None
        if self.store.readonly:  # a published store, a screenshot's: play, never record
            self.record_btn.setEnabled(False)
            self.record_btn.setToolTip(f"{self.store.location} is open read-only")
        self.reset_btn.setEnabled(has)
        self.pause_btn.setEnabled(has)
        lite = has and s.lite
        self.save_btn.setVisible(self.lite_check.isChecked())
        self.discard_btn.setVisible(self.lite_check.isChecked())
        self.save_btn.setEnabled(lite and (s.lite_steps > 0 or s.awaiting_decision))
        self.discard_btn.setEnabled(lite and (s.lite_steps > 0 or s.awaiting_decision))
        if has and s.awaiting_decision:
            self._say("episode over: Save or Discard it")

    def _close_session(self) -> None:
        if self.session is not None:
            self._closing.append(self.session.close_async())
            self.session = None

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Stop playing and wait until recordings are closed (everything durable)."""
        self.hud_timer.stop()
        s, self.session = self.session, None
        if s is not None:
            s.close(timeout=timeout)
            # steps the session thread played after the last pump are still reported:
            # ``stepped`` tells of every step played (and recorded) in order
            for res in s.take_results():
                self.steps_done += 1
                self.stepped.emit(res)
        deadline = time.monotonic() + (timeout or 1e9)
        for f in self._closing:
            try:
                f.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - already reported as an event
                pass
        self._closing.clear()
