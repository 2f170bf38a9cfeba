"""framestore GUI: play with recording, a live HUD and a replay viewer (PySide6).

``gui.models`` holds the logic (playback clock, episode list, HUD, key mapping, play
session) in pure Python; the Qt widgets in the other modules only display models and
write back through their setters. Importing this package does not import Qt.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Start the GUI (see ``gui.app.main``); Qt is imported only here."""
    from .app import main as _main

    return _main(argv)
