"""A guard against a reference-counting bug in some PySide6 builds on CPython < 3.12.

PySide6-Essentials 6.12.0 on CPython 3.11 releases a reference to ``None`` on every call
of a void Qt method (``widget.update()``, ``label.setText()``...) and to ``True`` on every
``Signal.emit()``. From 3.12 on those objects are immortal and nothing happens; on 3.11
their counts fall with every frame the GUI draws until the interpreter aborts with
``Fatal Python error: none_dealloc`` (or ``bool_dealloc``), within a minute of playing.

``guard()`` measures whether the running binding has the bug and, only then, gives
``None``/``True``/``False`` a huge reference count, which is what CPython 3.12 does for
them anyway. The real fix is a PySide6 without the bug or Python >= 3.12.
"""

from __future__ import annotations

import sys

_applied = False


def binding_leaks_none() -> bool:
    """True when a void Qt method call drops a reference to ``None``."""
    from PySide6.QtCore import QObject

    obj = QObject()
    before = sys.getrefcount(None)
    for _ in range(64):
        obj.setObjectName("probe")
    leaked = before - sys.getrefcount(None)
    obj.deleteLater()
    return leaked >= 32


def guard() -> bool:
    """Apply the workaround if needed; returns whether it is in effect."""
    global _applied
    if _applied:
        return True
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    if not binding_leaks_none():
        return False
    import ctypes

    for singleton in (None, True, False):
        # ob_refcnt is the first field of every CPython object
        ctypes.c_ssize_t.from_address(id(singleton)).value += 1 << 40
    _applied = True
    return True


guard()
