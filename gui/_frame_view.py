"""A widget that paints one frame (a numpy array) scaled to fit, keeping its aspect ratio
(by whole factors when enlarged: pixel art stays crisp)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QKeyEvent, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

from . import _compat  # noqa: F401  (first: guards a PySide6 refcount bug)
from .models import DOWN, LEFT, RIGHT, SPACE, UP

_FORMATS = {1: QImage.Format.Format_Grayscale8, 3: QImage.Format.Format_RGB888}
_FORMATS[4] = QImage.Format.Format_RGBA8888


def frame_to_qimage(frame: np.ndarray) -> tuple[QImage, np.ndarray]:
    """A QImage over the frame's pixels, without copying them when the frame is C
    contiguous uint8 (one copy otherwise). Returns the image and the array it points into:
    keep that array alive as long as the image."""
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in _FORMATS:
        raise ValueError(f"cannot show a frame of shape {frame.shape}")
    if not arr.flags["C_CONTIGUOUS"]:
        arr = np.ascontiguousarray(arr)
    h, w, c = arr.shape
    image = QImage(arr.data, w, h, arr.strides[0], _FORMATS[c])
    return image, arr


#: Frames no larger than this on either side are pixel art (Atari's 160x210, toy-text
#: grids): enlarged by whole factors only, so every game pixel is drawn the same size.
PIXEL_ART_MAX = 256


def fit_rect(w: int, h: int, iw: int, ih: int) -> tuple[float, float, float, float]:
    """``(x, y, width, height)`` of an ``iw`` x ``ih`` image centred in ``w`` x ``h``,
    aspect kept: pixel art (``PIXEL_ART_MAX``) by the largest whole factor that fits,
    anything else (CarRacing's 600x400 render) as large as fits; a frame larger than the
    space shrinks to fit."""
    scale = min(w / iw, h / ih)
    if scale >= 1 and max(iw, ih) <= PIXEL_ART_MAX:
        scale = float(int(scale))
    tw, th = iw * scale, ih * scale
    return ((w - tw) / 2, (h - th) / 2, tw, th)


def qimage_to_array(image: QImage) -> np.ndarray:
    """An RGB888 copy of a QImage as a (H, W, 3) uint8 array (for tests and checks)."""
    img = image.convertToFormat(QImage.Format.Format_RGB888)
    h, w = img.height(), img.width()
    buf = np.frombuffer(img.constBits(), dtype=np.uint8, count=img.sizeInBytes())
    return buf.reshape(h, img.bytesPerLine())[:, : w * 3].reshape(h, w, 3).copy()


class FrameView(QWidget):
    """Paints the current frame scaled to fit (aspect kept, by a whole factor when
    enlarged, pixels not smoothed), or a message when there is none. ``set_frame`` keeps a reference to the array, and the
    QImage wraps it: the frame is never copied on its way to the screen except by the
    painter's scaling."""

    def __init__(self, parent=None, *, message: str = "no frame"):
        super().__init__(parent)
        self._image: QImage | None = None
        self._array: np.ndarray | None = None
        self._message = message
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 120)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def sizeHint(self) -> QSize:
        return QSize(640, 480)

    def set_frame(self, frame: np.ndarray | None, message: str | None = None) -> None:
        if frame is None:
            self._image, self._array = None, None
            if message is not None:
                self._message = message
        else:
            self._image, self._array = frame_to_qimage(frame)
        self.update()

    def image(self) -> QImage | None:
        """The QImage the view was given (full resolution, over the frame's pixels)."""
        return self._image

    def frame(self) -> np.ndarray | None:
        return self._array

    def target_rect(self) -> QRectF:
        """Where the frame is drawn (``fit_rect``): as large as the widget allows, aspect
        kept, pixel art enlarged by a whole factor (every game pixel the same size)."""
        if self._image is None:
            return QRectF()
        return QRectF(
            *fit_rect(self.width(), self.height(), self._image.width(), self._image.height())
        )

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(16, 16, 16))
        if self._image is not None:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            p.drawImage(self.target_rect(), self._image)
        else:
            p.setPen(QColor(160, 160, 160))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self._message)
        p.end()


_KEY_NAMES = {
    Qt.Key.Key_Left: LEFT,
    Qt.Key.Key_Right: RIGHT,
    Qt.Key.Key_Up: UP,
    Qt.Key.Key_Down: DOWN,
    Qt.Key.Key_Space: SPACE,
}


def key_name(key: int) -> str | None:
    """The name ``gui.models`` uses for a Qt key (arrows, Space, letters, digits)."""
    try:
        k = Qt.Key(key)
    except ValueError:
        return None
    if k in _KEY_NAMES:
        return _KEY_NAMES[k]
    if Qt.Key.Key_A <= k <= Qt.Key.Key_Z or Qt.Key.Key_0 <= k <= Qt.Key.Key_9:
        return chr(int(k))
    return None


class GameView(FrameView):
    """A FrameView that takes keyboard focus and reports key presses by name (auto-repeat
    ignored): ``key_pressed(name)`` / ``key_released(name)``."""

    key_pressed = Signal(str)
    key_released = Signal(str)

    def __init__(self, parent=None, **kw):
        super().__init__(parent, **kw)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        name = key_name(event.key())
        if name is None:
            super().keyPressEvent(event)
            return
        if not event.isAutoRepeat():
            self.key_pressed.emit(name)
        event.accept()

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        name = key_name(event.key())
        if name is None:
            super().keyReleaseEvent(event)
            return
        if not event.isAutoRepeat():
            self.key_released.emit(name)
        event.accept()

    def focusOutEvent(self, event) -> None:
        # a key released while another widget had focus must not stay pressed
        self.key_released.emit("*")
        super().focusOutEvent(event)
