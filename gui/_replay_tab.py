"""The Replay tab: the episode table and a viewer with a scrubber, driven by a
``PlaybackClock``; frames come from a ``FrameLoader`` thread, store jobs (export, delete,
compact, list refresh) run on a ``TaskRunner``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtGui import QFont, QGuiApplication, QTextOption
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from framestore import FrameStore
from tools.export import ExportReport, export_episode
from tools.gc import GcReport, collect

from ._episode_table import EpisodeFilterProxy, EpisodeTableModel
from ._frame_view import FrameView
from ._timeline import TimelineView
from ._workers import FrameLoader, TaskRunner
from .models import (
    SPEEDS,
    EpisodeListModel,
    PlaybackClock,
    TimelineModel,
    display_frame,
    step_fields,
    step_json,
    step_panel_text,
)

#: Rows the episode table shows at least (the splitter keeps room for them).
TABLE_ROWS = 5


def _mono() -> QFont:
    f = QFont("monospace")
    f.setStyleHint(QFont.StyleHint.Monospace)
    return f


class ReplayTab(QWidget):
    """Episode list + viewer. ``open_episode(id, at=K)`` opens an episode at step K;
    ``frame_shown(episode_id, step)`` fires when a frame is on screen."""

    frame_shown = Signal(int, int)
    task_finished = Signal(str, object)  # name, result or exception

    def __init__(
        self,
        store: FrameStore,
        parent: QWidget | None = None,
        *,
        episodes: EpisodeListModel | None = None,
        clock: PlaybackClock | None = None,
        refresh_ms: int = 1000,
    ):
        super().__init__(parent)
        self.store = store
        self.episodes = episodes or EpisodeListModel()
        self.clock = clock or PlaybackClock()
        self.timeline_model = TimelineModel()
        self._track_loading = False
        self.loader = FrameLoader(store, self)
        self.tasks = TaskRunner(self)
        self.episode_id: int | None = None
        self.shown_step: int | None = None
        self.current_step_info = None
        self._pending_seek: int | None = None
        self._refreshing = False
        self.live_hint = False  # set by the window while the Play tab records
        self._make_table()
        self._make_viewer()
        self._lay_out()
        self._connect()
        self._start_timers(refresh_ms)
        self._clock_state()
        self.refresh()

    def _make_table(self) -> None:
        self.table_model = EpisodeTableModel(self.episodes, self)
        self.proxy = EpisodeFilterProxy(self.table_model, self)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        # widths from the contents, then the user's; the environment id takes the slack
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(False)
        header.setSectionResizeMode(self.episodes.column_of("env"), QHeaderView.ResizeMode.Stretch)
        rows = self.table.verticalHeader().defaultSectionSize()
        self.table.setMinimumHeight(header.sizeHint().height() + TABLE_ROWS * rows + 4)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("filter: text, or status:complete env:pong run:2")
        self.refresh_btn = QPushButton("Refresh")
        self.export_btn = QPushButton("Export…")
        self.delete_btn = QPushButton("Delete")
        self.compact_btn = QPushButton("Compact (gc)")
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.task_label = QLabel("")
        self.task_label.setWordWrap(True)

    def _make_viewer(self) -> None:
        self.view = FrameView(message="select an episode")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.back_btn = QPushButton("◀|")
        self.play_btn = QPushButton("Play")
        self.fwd_btn = QPushButton("|▶")
        self.speed_combo = QComboBox()
        for s in SPEEDS:
            self.speed_combo.addItem(f"{s:g}x", s)
        self.speed_combo.setCurrentIndex(SPEEDS.index(1.0))
        # the episode's frame streams (render, observation, a camera...)
        self.stream_combo = QComboBox()
        self.stream_combo.addItem("render")
        self.stream_combo.setToolTip("Which of the episode's frame streams is shown")
        self.stream_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.stream_combo.setEnabled(False)
        self.stream = "render"
        self.loop_check = QCheckBox("Loop")
        self.reverse_check = QCheckBox("Reverse")
        self.follow_check = QCheckBox("Follow live")
        self.follow_check.setChecked(self.clock.follow_live)
        self.pos_label = QLabel("-")
        self.pos_label.setFont(_mono())
        # as wide as it gets, so the controls row (and the timeline) keep their width
        # while the numbers change
        widest = "episode 0000000 · step 0000000 / 0000000  0.25x @ 240 fps  ● live"
        self.pos_label.setMinimumWidth(self.pos_label.fontMetrics().horizontalAdvance(widest))
        self.pos_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.timeline = TimelineView(self.timeline_model, self.clock)
        self.step_text = QPlainTextEdit()
        self.step_text.setReadOnly(True)
        self.step_text.setFont(_mono())
        # wrapped: a long info value reads in full, never behind a scrollbar
        self.step_text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.step_text.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.copy_btn = QPushButton("Copy step (exact)")
        self.copy_btn.setToolTip("Copy this step's values, unrounded, as JSON")

    def _lay_out(self) -> None:
        """The frame takes the left of the window at its full height (room for a 2x
        Atari frame at the default size); the episode table over the step panel on the
        right; slider, timeline and controls across the bottom."""
        table_side = QVBoxLayout()
        table_side.setContentsMargins(0, 0, 0, 0)
        table_side.addWidget(self.filter_edit)
        table_side.addWidget(self.table, 1)
        row = QHBoxLayout()
        for b in (self.refresh_btn, self.export_btn, self.delete_btn, self.compact_btn):
            row.addWidget(b)
        table_side.addLayout(row)
        table_side.addWidget(self.progress)
        table_side.addWidget(self.task_label)
        table_w = QWidget()
        table_w.setLayout(table_side)

        step_side = QVBoxLayout()
        step_side.setContentsMargins(0, 0, 0, 0)
        step_side.addWidget(self.step_text, 1)
        step_side.addWidget(self.copy_btn)
        step_w = QWidget()
        step_w.setLayout(step_side)

        self.split = QSplitter(Qt.Orientation.Vertical)
        self.split.addWidget(table_w)
        self.split.addWidget(step_w)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 2)
        self.split.setChildrenCollapsible(False)
        self.split.setSizes([320, 200])

        self.frame_split = QSplitter(Qt.Orientation.Horizontal)
        self.frame_split.addWidget(self.view)
        self.frame_split.addWidget(self.split)
        self.frame_split.setStretchFactor(0, 2)
        self.frame_split.setStretchFactor(1, 3)
        self.frame_split.setChildrenCollapsible(False)
        self.frame_split.setSizes([460, 700])

        controls = QHBoxLayout()
        for w in (self.back_btn, self.play_btn, self.fwd_btn, self.speed_combo, self.stream_combo):
            controls.addWidget(w)
        for w in (self.loop_check, self.reverse_check, self.follow_check):
            controls.addWidget(w)
        controls.addStretch(1)
        controls.addWidget(self.pos_label)

        layout = QVBoxLayout(self)
        layout.addWidget(self.frame_split, 1)
        layout.addWidget(self.slider)
        layout.addWidget(self.timeline)
        layout.addLayout(controls)

    def _connect(self) -> None:
        self.filter_edit.textChanged.connect(self.proxy.set_filter_text)
        self.table.selectionModel().currentRowChanged.connect(self._row_changed)
        self.refresh_btn.clicked.connect(self.refresh)
        self.export_btn.clicked.connect(self._export_clicked)
        self.delete_btn.clicked.connect(self._delete_clicked)
        self.compact_btn.clicked.connect(self.compact)
        self.copy_btn.clicked.connect(self.copy_step)
        self.table_model.modelReset.connect(self.table.resizeColumnsToContents)
        self.table_model.rowsInserted.connect(lambda *_: self.table.resizeColumnsToContents())
        self.slider.valueChanged.connect(self.clock.seek)
        self.back_btn.clicked.connect(self.clock.step_back)
        self.fwd_btn.clicked.connect(self.clock.step_forward)
        self.play_btn.clicked.connect(self.clock.toggle)
        self.speed_combo.currentIndexChanged.connect(
            lambda i: self.clock.set_speed(self.speed_combo.itemData(i))
        )
        self.stream_combo.currentTextChanged.connect(self.set_stream)
        self.loop_check.toggled.connect(self.clock.set_loop)
        self.reverse_check.toggled.connect(self.clock.set_reverse)
        self.follow_check.toggled.connect(self.clock.set_follow_live)
        self.clock.index_changed.connect(self._index_changed)
        self.clock.state_changed.connect(self._clock_state)
        self.loader.opened.connect(self._opened)
        self.loader.frame_ready.connect(self._frame_ready)
        self.loader.length_changed.connect(self._length_changed)
        self.loader.failed.connect(self._load_failed)

    def _start_timers(self, refresh_ms: int) -> None:
        self.play_timer = QTimer(self)
        self.play_timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.play_timer.setInterval(8)
        self.play_timer.timeout.connect(self._play_tick)
        self._last_tick = time.monotonic()
        self.refresh_timer = QTimer(self)
        self.refresh_timer.setInterval(refresh_ms)
        self.refresh_timer.timeout.connect(self._maybe_refresh)
        self.refresh_timer.start()

    # ------------------------------------------------------------------ episode list
    def refresh(self) -> None:
        """Re-read the episode list in the background (one refresh at a time)."""
        if self._refreshing:
            return
        self._refreshing = True

        def done(rows):
            self._refreshing = False
            self.episodes.apply(rows)

        def failed(exc):
            self._refreshing = False
            self.task_label.setText(f"refresh failed: {exc}")

        self.tasks.run(lambda _p: self.episodes.fetch(self.store), on_done=done, on_error=failed)

    def _maybe_refresh(self) -> None:
        if self.live_hint or any(r.status == "recording" for r in self.episodes.rows):
            self.refresh()

    def selected_ids(self) -> list[int]:
        rows = self.table.selectionModel().selectedRows()
        return sorted({self.proxy.data(r, EpisodeTableModel.EPISODE_ID_ROLE) for r in rows})

    def _row_changed(self, current, _previous) -> None:
        if not current.isValid():
            return
        eid = self.proxy.data(current, EpisodeTableModel.EPISODE_ID_ROLE)
        if eid is not None and eid != self.episode_id:
            self.open_episode(eid)

    def select_episode(self, episode_id: int) -> None:
        src = self.episodes.row_index(episode_id)
        if src is None:
            return
        idx = self.proxy.mapFromSource(self.table_model.index(src, 0))
        if idx.isValid():
            self.table.selectionModel().setCurrentIndex(
                idx,
                QItemSelectionModel.SelectionFlag.ClearAndSelect
                | QItemSelectionModel.SelectionFlag.Rows,
            )

    # ------------------------------------------------------------------ viewer
    def open_episode(self, episode_id: int, *, at: int | None = None) -> None:
        """Open an episode in the viewer (at step ``at``; a live one follows the end)."""
        self.clock.pause()
        self.episode_id = int(episode_id)
        self.shown_step = None
        self._pending_seek = at
        self.view.set_frame(None, f"loading episode {episode_id}…")
        self.timeline_model.clear()
        self.loader.open(self.episode_id, self.stream)
        self._load_track(self.episode_id)

    def set_stream(self, name: str) -> None:
        """Show the open episode's stream ``name`` from the current step on."""
        if not name or name == self.stream:
            return
        self.stream = name
        if self.episode_id is not None:
            self._pending_seek = self.clock.index
            self.loader.open(self.episode_id, name)

    def _load_track(self, episode_id: int) -> None:
        """Read the episode's steps for the timeline off the UI thread (paged); for a live
        episode, only the rows after those the timeline has."""
        if self._track_loading:
            return
        self._track_loading = True
        start = self.timeline_model.length if self.timeline_model.episode_id == episode_id else 0

        def done(track):
            self._track_loading = False
            if episode_id != self.episode_id:
                return
            if start:
                self.timeline_model.extend(episode_id, track)
            else:
                self.timeline_model.set_track(episode_id, track)
            if self.clock.length > self.timeline_model.length:  # more arrived meanwhile
                self._load_track(episode_id)

        def failed(exc):
            self._track_loading = False
            self.task_label.setText(f"timeline of episode {episode_id}: {exc}")

        self.tasks.run(
            lambda _p: TimelineModel.fetch(self.store, episode_id, start=start),
            on_done=done,
            on_error=failed,
        )

    def _opened(self, eid, info, rows, live, fps) -> None:
        if eid != self.episode_id:
            return
        if fps > 0:
            self.clock.set_fps(fps)
        self._show_streams(info.streams)
        self.clock.set_length(0)
        self.clock.seek(0)
        at = self._pending_seek
        self._pending_seek = None
        self.clock.set_length(rows, live=live)
        if at is not None:
            self.clock.seek(at)
        elif live and self.clock.follow_live:
            self.clock.seek(self.clock.last)
        self.loader.request(self.clock.index)
        self.task_label.setText(
            f"episode {eid}: {info.env_id}, seed {'-' if info.seed is None else info.seed}, "
            f"{rows} steps, {info.status}"
        )

    def _show_streams(self, streams: tuple[str, ...]) -> None:
        """The stream box lists the episode's streams (the shown one kept if it has it)."""
        if self.stream not in streams:
            self.stream = "render"
        self.stream_combo.blockSignals(True)
        self.stream_combo.clear()
        self.stream_combo.addItems(list(streams))
        self.stream_combo.setCurrentText(self.stream)
        self.stream_combo.setEnabled(len(streams) > 1)
        self.stream_combo.blockSignals(False)

    def _length_changed(self, eid, rows, live) -> None:
        if eid == self.episode_id:
            self.clock.set_length(rows, live=live)
            if rows > self.timeline_model.length:
                self._load_track(eid)

    def _index_changed(self, index: int) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self._update_pos()
        self.loader.request(index, -1 if self.clock.reverse else 1)

    def _clock_state(self) -> None:
        c = self.clock
        self.slider.blockSignals(True)
        self.slider.setRange(0, c.last)
        self.slider.setValue(c.index)
        self.slider.blockSignals(False)
        self.play_btn.setText("Pause" if c.playing else "Play")
        if c.playing and not self.play_timer.isActive():
            self._last_tick = time.monotonic()
            self.play_timer.start()
        elif not c.playing:
            self.play_timer.stop()
        self._update_pos()

    def _update_pos(self) -> None:
        c = self.clock
        live = "  ● live" if c.live else ""
        self.pos_label.setText(
            f"episode {self.episode_id} · step {c.index} / {c.last}  {c.speed:g}x @ "
            f"{c.fps:g} fps{live}"
            if c.length
            else "-"
        )

    def _play_tick(self) -> None:
        now = time.monotonic()
        dt, self._last_tick = now - self._last_tick, now
        self.clock.tick(min(dt, 0.25))

    def _frame_ready(self, eid, step, frame, info) -> None:
        if eid != self.episode_id:
            return
        if frame is None:
            where = "" if self.stream == "render" else f" in stream {self.stream!r}"
            self.view.set_frame(None, f"step {step}: no frame stored{where} (dropped)")
        else:
            image, why = display_frame(frame)
            self.view.set_frame(image, f"step {step}: {why}" if image is None else None)
        self.shown_step = step
        self.current_step_info = info
        if info is not None:
            fields = step_fields(info)
            self.step_text.setPlainText(step_panel_text(info))
            self.step_text.setToolTip(
                "exact values:\n" + "\n".join(f"{f.name}: {f.exact}" for f in fields)
            )
        self.frame_shown.emit(eid, step)

    def _load_failed(self, eid, text) -> None:
        if eid == self.episode_id:
            self.view.set_frame(None, text)
            self.task_label.setText(text)

    def copy_step(self) -> None:
        """Put the shown step's exact values on the clipboard, as JSON."""
        if self.current_step_info is not None:
            QGuiApplication.clipboard().setText(step_json(self.current_step_info))
            self.task_label.setText(f"copied step {self.current_step_info.step} (exact values)")

    # ------------------------------------------------------------------ store jobs
    def _start_job(self, name: str, fn, *, after=None) -> None:
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.task_label.setText(f"{name}…")
        for b in (self.export_btn, self.delete_btn, self.compact_btn):
            b.setEnabled(False)

        def finish():
            self.progress.setVisible(False)
            for b in (self.export_btn, self.delete_btn, self.compact_btn):
                b.setEnabled(True)

        def done(result):
            finish()
            self.task_label.setText(f"{name}: done ({_summary(result)})")
            if after is not None:
                after(result)
            self.task_finished.emit(name, result)

        def failed(exc):
            finish()
            self.task_label.setText(f"{name} failed: {exc}")
            self.task_finished.emit(name, exc)

        def progress(done_n, total):
            if total > 0:
                self.progress.setRange(0, 1000)
                self.progress.setValue(int(1000 * min(done_n, total) / total))

        self.tasks.run(fn, on_done=done, on_error=failed, on_progress=progress)

    def export(self, episode_id: int, out: str | Path, **kwargs: Any) -> None:
        """Export an episode (MP4/GIF/NPZ/... by extension) in the background;
        ``kwargs`` go to ``tools.export.export_episode``."""

        def job(progress):
            return export_episode(self.store, episode_id, out, progress=progress, **kwargs)

        self._start_job(f"export of episode {episode_id} to {out}", job)

    def _export_clicked(self) -> None:
        ids = self.selected_ids() or ([self.episode_id] if self.episode_id else [])
        if not ids:
            self.task_label.setText("select an episode to export")
            return
        path, _ = QFileDialog.getSaveFileName(
            self,
            f"Export episode {ids[0]}",
            f"episode-{ids[0]}.mp4",
            "MP4 video (*.mp4);;GIF animation (*.gif);;NumPy archive (*.npz)",
        )
        if path:
            self.export(ids[0], path)

    def delete(self, episode_ids: list[int]) -> None:
        """Mark episodes deleted (space returns at the next Compact). While the Play tab
        records into this store, ``FrameStore.delete_episodes`` has that recording's
        writer (the holder of the store's writer lock) write the deletion, and the
        recording goes on; the episode being recorded is refused, and the tab says why.
        """

        def deleted(_result) -> None:
            if self.episode_id in episode_ids:
                self.episode_id = None
                self.clock.pause()
                self.clock.set_length(0)
                self.timeline_model.clear()
                self.view.set_frame(None, "episode deleted")
            self.refresh()

        self._start_job(
            f"delete of {len(episode_ids)} episode(s)",
            lambda _p: self.store.delete_episodes(episode_ids),
            after=deleted,
        )

    def _delete_clicked(self) -> None:
        ids = self.selected_ids()
        if not ids:
            self.task_label.setText("select episodes to delete")
            return
        answer = QMessageBox.question(
            self,
            "Delete episodes",
            f"Delete episode(s) {', '.join(map(str, ids))}? Compact (gc) reclaims the space.",
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.delete(ids)

    def compact(self) -> None:
        """Run gc (compaction) in the background with progress."""

        def job(progress):
            report = collect(self.store, progress=progress)
            self.store.reader.forget()
            return report

        self._start_job("compact (gc)", job, after=lambda _r: self.refresh())

    def shutdown(self) -> None:
        self.play_timer.stop()
        self.refresh_timer.stop()
        self.loader.close()
        self.tasks.wait()


def _summary(result: GcReport | ExportReport | list | None) -> str:
    """One line about a finished store job (compact, export, delete)."""
    if result is None:
        return "ok"
    if isinstance(result, GcReport):
        return f"bytes reclaimed {result.bytes_reclaimed}"
    if isinstance(result, ExportReport):
        return f"frames {result.frames}"
    return f"{len(result)} item(s)"
