"""The GUI's logic in pure Python: no Qt here, so all of it is testable without a display.

* ``PlaybackClock`` (``_playback``): replay position, fps, speed, loop, reverse, follow-live.
* ``EpisodeListModel`` (``_episodes``): the episode table's rows, sorting, filtering, diffs.
* ``HudModel`` (``_hud``): what the recording HUD shows, warnings included.
* ``KeyMapper`` / ``KeyState`` (``_keys``): human keyboard control per environment family.
* ``PlaySession`` (``_session``): an environment played on a session thread (the game
  itself in a process of its own, ``_game``) plus an optional recording (direct or
  telemetry-lite), its state one ``Recording`` value.
* ``TimelineModel`` (``_timeline``): the replay timeline's steps binned per pixel
  column, hit-testing and hover text.
* ``step_fields`` / ``step_panel_text`` / ``step_json`` (``_step_text``): a step's
  values, readable and exact.
* ``display_frame`` (``_streams``): how the viewer shows a frame stream's frame (stacks
  tiled, arrays described).
* ``Signal`` (``_signal``): the callback list the models notify widgets through.

Widgets (``gui/_*.py``) take these models in their constructors, subscribe to their
``Signal`` attributes and write back only through their setters.
"""

from __future__ import annotations

from ._episodes import COLUMNS, EpisodeListModel, EpisodeRow
from ._hud import HudModel, HudState, HudWarning
from ._keys import (
    DOWN,
    LEFT,
    RIGHT,
    SPACE,
    UP,
    AtariKeyMapper,
    BoxKeyMapper,
    CarRacingKeyMapper,
    DiscreteKeyMapper,
    KeyMapper,
    KeyState,
)
from ._playback import SPEED_MAX, SPEED_MIN, SPEEDS, PlaybackClock
from ._session import PlaySession, Recording, SessionEvent, StepResult
from ._signal import Signal
from ._step_text import StepField, step_fields, step_json, step_panel_text
from ._streams import display_frame
from ._timeline import MARKERS, TimelineColumns, TimelineModel

__all__ = [
    "display_frame",
    "Signal",
    "PlaybackClock",
    "SPEEDS",
    "SPEED_MIN",
    "SPEED_MAX",
    "EpisodeRow",
    "EpisodeListModel",
    "COLUMNS",
    "HudWarning",
    "HudState",
    "HudModel",
    "KeyState",
    "KeyMapper",
    "AtariKeyMapper",
    "CarRacingKeyMapper",
    "DiscreteKeyMapper",
    "BoxKeyMapper",
    "LEFT",
    "RIGHT",
    "UP",
    "DOWN",
    "SPACE",
    "StepResult",
    "SessionEvent",
    "PlaySession",
    "MARKERS",
    "TimelineColumns",
    "TimelineModel",
    "StepField",
    "step_fields",
    "step_json",
    "step_panel_text",
    "Recording",
]
