"""framestore GUI: play with recording, a live HUD and a replay viewer (PySide6).

``gui.models`` holds the logic (playback clock, episode list, HUD, key mapping, play
session) in pure Python; the Qt widgets in the other modules only display models and
write back through their setters. ``gui.app.run(store, GuiOptions(...))`` starts the app
(``framestore gui`` calls it). Importing this package does not import Qt.
"""

from __future__ import annotations

__all__: list[str] = []
