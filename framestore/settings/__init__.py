"""Recording settings: what sizes and configures a recording, and where each value comes from.

``resolve(env_id)`` gives the ``Settings`` for one recording: the env family's and game's
values, scaled to the host, then a named preset, the user's presets file, explicit
overrides and a memory budget (layers in ``_resolve``). Every value from any layer is
checked (``InvalidInput`` names the key, the valid choices and where the value came
from) before anything is recorded.

One job per module: ``_schema`` (the ``Settings`` fields and value checks), ``_games``
(families and per-game rows), ``_host`` (host detection and profiles), ``_presets``
(named presets), ``_userconfig`` (the TOML file), ``_resolve`` (the layers),
``_tuning`` (``framestore tune``).

May import: ``framestore.disk`` (the codecs) and the vocabulary modules; never the
write path, which takes its queue policies and durabilities from here.
"""

from ..disk.codecs import ZSTD_LEVELS
from ._games import FAMILIES, FAMILY_DEFAULTS, GAME_PRESETS, check_registered, family_of
from ._host import DISK_KINDS, HOST_PROFILES, HostInfo, HostProfile, detect_host, host_profile
from ._presets import PRESETS
from ._resolve import MEMORY_BUDGET_FRACTION, ResolvedSettings, explain, resolve
from ._schema import (
    CODECS,
    DURABILITIES,
    POLICIES,
    SETTING_FIELDS,
    WRITER_STARTS,
    WRITERS,
    Settings,
)
from ._tuning import OBSERVED_KEYS, save_tuning, suggest_tuning
from ._userconfig import default_config_path, load_config

__all__ = [
    "CODECS",
    "DISK_KINDS",
    "DURABILITIES",
    "FAMILIES",
    "FAMILY_DEFAULTS",
    "GAME_PRESETS",
    "HOST_PROFILES",
    "MEMORY_BUDGET_FRACTION",
    "OBSERVED_KEYS",
    "POLICIES",
    "PRESETS",
    "SETTING_FIELDS",
    "WRITERS",
    "WRITER_STARTS",
    "ZSTD_LEVELS",
    "HostInfo",
    "HostProfile",
    "ResolvedSettings",
    "Settings",
    "check_registered",
    "default_config_path",
    "detect_host",
    "explain",
    "family_of",
    "host_profile",
    "load_config",
    "resolve",
    "save_tuning",
    "suggest_tuning",
]
