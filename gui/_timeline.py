"""The replay timeline under the scrubber: reward per step (bars) and cumulative return
(line), the action track, markers (terminated, truncated, dropped frame, recovered row)
and a cursor synced with the clock. Click or drag to seek; hover for the step's values.

Thin: ``TimelineModel`` bins the episode per pixel column and hit-tests clicks. The
binned plot is painted once into a pixmap per (data version, size); a repaint while
scrubbing draws that pixmap and the cursor line, so it costs the same for 10 or 10,000
steps.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPen, QPixmap, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from tools.text import format_number

from . import _compat  # noqa: F401  (first: guards a PySide6 refcount bug)
from .models import MARKERS, PlaybackClock, TimelineColumns, TimelineModel

BACKGROUND = QColor(24, 24, 28)
REWARD_POS = QColor(92, 184, 92)
REWARD_NEG = QColor(217, 83, 79)
RETURN = QColor(240, 173, 78)
AXIS = QColor(90, 90, 100)
CURSOR = QColor(255, 255, 255)
TEXT = QColor(170, 170, 180)
MARKER_COLORS = {
    "terminated": QColor(217, 83, 79),
    "truncated": QColor(91, 192, 222),
    "dropped": QColor(240, 173, 78),
    "recovered": QColor(186, 104, 200),
}
#: A palette for discrete actions (code -> colour), repeated past its length.
ACTION_COLORS = [QColor.fromHsv(int(h), 150, 210) for h in np.linspace(0, 359, 12, endpoint=False)]

ACTION_BAND = 12
MARKER_BAND = 10
LEGEND_BAND = 16
#: Marker ticks are this many pixels wide, kept whole at the edges (an episode's end is
#: its last column).
MARKER_WIDTH = 9
#: Markers that end an episode also draw a line through the plot.
ENDS = ("terminated", "truncated")


class TimelineView(QWidget):
    """Draws a ``TimelineModel`` and the position of a ``PlaybackClock``; clicks and
    drags seek the clock (``clock.seek(model.step_at(x, width))``)."""

    def __init__(self, model: TimelineModel, clock: PlaybackClock, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.clock = clock
        self._pixmap: QPixmap | None = None
        self._key: tuple | None = None
        self.renders = 0  # times the plot was drawn into the pixmap (tests, profiling)
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(100)
        self.setToolTip("reward per step (bars), return (line), action, markers")
        model.changed.connect(self.update)
        clock.index_changed.connect(lambda _i: self.update())
        clock.state_changed.connect(self.update)

    def sizeHint(self) -> QSize:
        return QSize(640, 112)

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.drawPixmap(0, 0, self._plot())
        if self.model.length:
            x = self.model.x_of(self.clock.index, self.width())
            p.setPen(QPen(CURSOR, 1.5))  # down to the legend, never through its text
            p.drawLine(QPointF(x, 0), QPointF(x, self.height() - LEGEND_BAND - 1))
        p.end()

    def _plot(self) -> QPixmap:
        ratio = self.devicePixelRatioF()
        key = (self.model.version, self.model.episode_id, self.width(), self.height(), ratio)
        if self._pixmap is None or key != self._key:
            self._pixmap = self._render(ratio)
            self._key = key
        return self._pixmap

    def _render(self, ratio: float) -> QPixmap:
        self.renders += 1
        w, h = self.width(), self.height()
        pm = QPixmap(QSize(max(1, round(w * ratio)), max(1, round(h * ratio))))
        pm.setDevicePixelRatio(ratio)
        pm.fill(BACKGROUND)
        p = QPainter(pm)
        if self.model.length == 0:
            p.setPen(TEXT)
            p.drawText(QRect(0, 0, w, h), Qt.AlignmentFlag.AlignCenter, "no steps")
            p.end()
            return pm
        cols = self.model.columns(w)
        plot_h = h - ACTION_BAND - MARKER_BAND - LEGEND_BAND - 2
        _draw_plot(p, cols, plot_h)
        _draw_end_lines(p, cols, plot_h)
        _draw_actions(p, cols, plot_h + 1, ACTION_BAND)
        _draw_markers(p, cols, plot_h + 1 + ACTION_BAND, MARKER_BAND)
        _draw_legend(p, cols, h - LEGEND_BAND, w, LEGEND_BAND)
        p.end()
        return pm

    # ------------------------------------------------------------------ mouse
    def _seek_to(self, event: QMouseEvent) -> None:
        self.clock.seek(self.model.step_at(event.position().x(), self.width()))

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.model.length:
            self.clock.pause()
            self._seek_to(event)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton and self.model.length:
            self._seek_to(event)
        step = self.model.step_at(event.position().x(), self.width())
        text = self.model.describe(step)
        if text:
            QToolTip.showText(event.globalPosition().toPoint(), text, self)
        event.accept()


def _y(value: float, lo: float, hi: float, top: float, height: float) -> float:
    return top + height * (1.0 - (value - lo) / (hi - lo))


def _draw_plot(p: QPainter, cols: TimelineColumns, plot_h: int) -> None:
    """Rewards: per column a bar from 0 up to the largest reward (green) and down to the
    smallest (red). Return: a line joining the columns' cumulative returns (its own
    scale). Rasterised with numpy into one image: the cost does not grow with steps."""
    lo, hi = cols.reward_range
    top, height = 4, plot_h - 8  # the return line (2 px either side) stays inside
    zero = _y(0.0, lo, hi, top, height)
    y = np.arange(plot_h)[:, None] + 0.5
    y_max = top + height * (1.0 - (cols.reward_max - lo) / (hi - lo))
    y_min = top + height * (1.0 - (cols.reward_min - lo) / (hi - lo))
    up = (cols.reward_max > 0) & (y >= np.minimum(y_max, zero - 1)) & (y <= zero)
    down = (cols.reward_min < 0) & (y >= zero) & (y <= np.maximum(y_min, zero + 1))
    rlo, rhi = cols.return_range
    y_ret = top + height * (1.0 - (cols.returns - rlo) / (rhi - rlo))
    y_prev = np.concatenate([y_ret[:1], y_ret[:-1]])
    line = (y >= np.minimum(y_prev, y_ret) - 1) & (y <= np.maximum(y_prev, y_ret) + 1)
    pixels = np.full((plot_h, cols.width), _word(BACKGROUND), dtype=np.uint32)
    if 0 <= zero < plot_h:
        pixels[int(zero)] = _word(AXIS)
    pixels[up] = _word(REWARD_POS)
    pixels[down] = _word(REWARD_NEG)
    pixels[line] = _word(RETURN)
    _draw_row(p, pixels.view(np.uint8).reshape(plot_h, cols.width, 4), 0, plot_h)


def _rgba(color: QColor) -> tuple[int, int, int, int]:
    return color.red(), color.green(), color.blue(), 255


def _word(color: QColor) -> np.uint32:
    """An opaque colour as one RGBA8888 pixel (bytes R, G, B, A in memory)."""
    return np.frombuffer(bytes(_rgba(color)), dtype=np.uint32)[0]


def _draw_row(p: QPainter, pixels: np.ndarray, top: float, height: float) -> None:
    """Draw an (rows, width, 4) RGBA array stretched over a band: one image, one call,
    however many columns."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    rows, width = pixels.shape[:2]
    image = QImage(pixels.data, width, rows, width * 4, QImage.Format.Format_RGBA8888)
    p.drawImage(QRectF(0, top, width, height), image)


_ACTION_RGBA = np.array([_rgba(c) for c in ACTION_COLORS], dtype=np.uint8)


def _draw_actions(p: QPainter, cols: TimelineColumns, top: int, height: int) -> None:
    """Discrete: a colour per action; continuous: one row per component, light = high."""
    if cols.action_kind == "discrete":
        codes = cols.actions
        row = np.zeros((1, cols.width, 4), dtype=np.uint8)
        row[0, codes >= 0] = _ACTION_RGBA[codes[codes >= 0] % len(_ACTION_RGBA)]
        _draw_row(p, row, top, height)
    elif cols.action_kind == "continuous":
        shade = (40 + 200 * cols.actions.T).astype(np.uint8)  # (k, width)
        rows = np.stack([shade, shade, np.full_like(shade, 255), np.full_like(shade, 255)], -1)
        _draw_row(p, rows, top, height)


def _tick_columns(xs: np.ndarray, width: int) -> np.ndarray:
    """The columns of ``MARKER_WIDTH``-wide ticks centred on ``xs``, moved inwards at the
    edges so that every tick shows whole."""
    half = MARKER_WIDTH // 2
    starts = np.clip(xs - half, 0, max(0, width - MARKER_WIDTH))
    cols = (starts[:, None] + np.arange(MARKER_WIDTH)[None, :]).ravel()
    return np.clip(cols, 0, width - 1)


def _draw_markers(p: QPainter, cols: TimelineColumns, top: int, height: int) -> None:
    """A tick per marked column, later kinds over earlier ones."""
    row = np.zeros((1, cols.width, 4), dtype=np.uint8)
    for kind in reversed(MARKERS):  # the episode's end on top
        xs = cols.markers[kind]
        if xs.size:
            row[0, _tick_columns(xs, cols.width)] = _rgba(MARKER_COLORS[kind])
    _draw_row(p, row, top + 1, height - 2)


def _draw_end_lines(p: QPainter, cols: TimelineColumns, plot_h: int) -> None:
    """Where an episode ends (terminated, truncated): a line through the plot under a
    flag at its top, both kept whole at the right edge (the end is the last column)."""
    for kind in ENDS:
        xs = cols.markers[kind]
        if not xs.size:
            continue
        color = MARKER_COLORS[kind]
        p.setPen(QPen(color, 2))
        for x in np.clip(xs, 1, cols.width - 1):
            p.drawLine(QPointF(x, 0), QPointF(x, plot_h))
            left = min(max(x - 6.0, 0.0), cols.width - 12.0)
            flag = QPolygonF([QPointF(left, 0), QPointF(left + 12, 0), QPointF(x, 9)])
            p.setBrush(color)
            p.drawPolygon(flag)


def legend_items(cols: TimelineColumns) -> list[tuple[str, QColor | None]]:
    """What the legend says, in order, with each item's colour: the reward range, the
    return, a key of the action colours (each discrete action drawn in its colour),
    the markers present."""
    rlo, rhi = cols.reward_range
    items: list[tuple[str, QColor | None]] = [
        (f"reward {format_number(rlo)}..{format_number(rhi)}", REWARD_POS),
        (f"return {format_number(float(cols.returns[-1]))}", RETURN),
    ]
    if cols.action_kind == "discrete":
        items.append(("action", None))
        items += [(label, ACTION_COLORS[i % len(ACTION_COLORS)]) for i, label in
                  enumerate(cols.action_labels)]  # fmt: skip
    elif cols.action_kind == "continuous":
        items.append(("action (continuous: light = high)", QColor(200, 200, 255)))
    items += [(kind, MARKER_COLORS[kind]) for kind in MARKERS if cols.markers[kind].size]
    return items


def _draw_legend(p: QPainter, cols: TimelineColumns, top: int, w: int, height: int) -> None:
    """``legend_items`` left to right; "…" where the width ends."""
    metrics = p.fontMetrics()
    x = 4
    for label, color in legend_items(cols):
        advance = metrics.horizontalAdvance(label)
        if x + 12 + advance > w:
            p.setPen(TEXT)
            p.drawText(QRect(x, top, w - x, height), Qt.AlignmentFlag.AlignVCenter, "…")
            return
        if color is not None:
            p.fillRect(QRectF(x, top + height / 2 - 4, 9, 8), color)
            x += 12
        p.setPen(TEXT)
        p.drawText(QRect(x, top, w - x, height), Qt.AlignmentFlag.AlignVCenter, label)
        x += advance + (6 if color is not None and label.isdigit() else 12)
