"""Can Qt open a window here? Checked before a ``QApplication`` exists, because Qt aborts
the interpreter (exit 134, a multi-line plugin message) when its platform plugin cannot
start: no display, or the X11 (xcb) plugin's system libraries missing.

No Qt import: this runs before Qt is asked to do anything.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable, Mapping

__all__ = ["XCB_LIBRARIES", "display_problem"]

#: The shared libraries Qt's xcb platform plugin loads, and the Debian/Ubuntu package of
#: each. PySide6 wheels bring Qt but not these; the first three are the usual gap.
XCB_LIBRARIES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
}

#: Platforms that need no display (``QT_QPA_PLATFORM``).
HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc", "linuxfb", "eglfs", "vkkhrdisplay")


def _loads(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def display_problem(
    env: Mapping[str, str] | None = None,
    *,
    platform: str | None = None,
    libraries: Iterable[str] = XCB_LIBRARIES,
) -> str | None:
    """Why Qt could not open a window in this environment, in one line with what to do,
    or ``None`` when it can (as far as can be told without starting Qt).

    Args:
        env: the environment (default ``os.environ``).
        platform: the Qt platform plugin (default ``QT_QPA_PLATFORM`` from ``env``).
        libraries: the xcb plugin's libraries to look for (default ``XCB_LIBRARIES``).
    """
    env = os.environ if env is None else env
    platform = (env.get("QT_QPA_PLATFORM", "") if platform is None else platform).strip()
    name = platform.split(":", 1)[0].split(";", 1)[0]
    if name in HEADLESS_PLATFORMS or os.name != "posix":
        return None
    if name.startswith("wayland"):
        if env.get("WAYLAND_DISPLAY"):
            return None
        return _no_display("WAYLAND_DISPLAY is not set")
    if not env.get("DISPLAY"):
        if not name and env.get("WAYLAND_DISPLAY"):
            return None  # Qt picks its Wayland plugin
        return _no_display("DISPLAY is not set")
    missing = [lib for lib in libraries if not _loads(lib)]
    if not missing:
        return None
    packages = " ".join(XCB_LIBRARIES.get(lib, lib) for lib in missing)
    return (
        f"Qt cannot open a window on the X display: {', '.join(missing)} not found. On "
        f"Debian/Ubuntu: apt-get install {packages} (or set QT_QPA_PLATFORM=offscreen "
        "to take screenshots without a window)"
    )


def _no_display(why: str) -> str:
    return (
        f"no display to open the window on ({why}). Take a screenshot without one "
        "(--screenshot FILE, or QT_QPA_PLATFORM=offscreen), or start a virtual display: "
        "xvfb-run framestore gui ..."
    )
