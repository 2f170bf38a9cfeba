"""The user's presets file (TOML): where it lives, reading it, writing it atomically.

``[default]`` applies to every env, ``["<env id>"]`` to one env; each table holds setting
names, ``frame_bytes_hint`` and optionally a named ``preset``. Reading uses ``tomllib``,
writing ``tomli_w``: a maintained library quotes and escapes keys such as
``"ALE/Assault-v5"`` and control characters, rather than escaping by hand.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from ..errors import InvalidInput
from ..files import atomic_write_bytes
from ._schema import CONFIG_KEYS, check_table

#: Comment at the top of a written presets file (``tomli_w`` writes no comments).
CONFIG_HEADER = (
    '# framestore presets: [default] applies to every env, ["<env id>"] to one env.\n'
    "# See `framestore presets --env ID`; `framestore tune STORE --apply` updates this file.\n"
)


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/framestore/presets.toml``, else ``~/.config/framestore/presets.toml``.

    A relative ``XDG_CONFIG_HOME`` is ignored, as the XDG base directory spec requires.
    """
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "framestore" / "presets.toml"


def load_config(config_file: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Read and validate a presets TOML file: ``{table name: {key: value}}``.

    Every top-level entry must be a table (``[default]`` or an env id such as
    ``["ALE/Assault-v5"]``) holding only setting names, ``frame_bytes_hint`` and
    ``preset``. A missing default file is empty; a missing explicit file, a syntax error,
    an unknown key or a bad value raise ``InvalidInput`` naming the file and the key.
    """
    path = Path(config_file) if config_file is not None else default_config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if config_file is None:
            return {}
        raise InvalidInput(f"{path}: presets file not found") from None
    except OSError as e:
        raise InvalidInput(f"{path}: cannot read presets file: {e.strerror or e}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: not valid TOML: {e}") from None
    tables: dict[str, dict[str, Any]] = {}
    for name, table in doc.items():
        if not isinstance(table, dict):
            raise InvalidInput(
                f"{path}: top-level key {name!r} must be a table: [default] or an env id "
                f'such as ["ALE/Assault-v5"]'
            )
        tables[name] = check_table(table, f"{path} [{name}]", CONFIG_KEYS)
    return tables


def config_text(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """The text of a presets file holding ``tables`` (``{table: {key: scalar}}``)."""
    body = tomli_w.dumps({name: dict(table) for name, table in tables.items()})
    return CONFIG_HEADER + "\n" + body


def write_config(path: Path, tables: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace the presets file at ``path`` atomically.

    Writes ``name.partial``, fsyncs it, renames it over ``path`` and fsyncs the
    directory; on any error the partial file is removed and ``path`` is unchanged.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, config_text(tables).encode("utf-8"))
