"""Making Gymnasium environments for recording, with clear errors for the usual
mistakes (unknown id, missing optional dependency)."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym

from .errors import InvalidInput

_HINTS = {
    "ALE/": "pip install 'framestore[atari]' (ale-py)",
    "CarRacing": "pip install 'framestore[box2d]' (box2d)",
    "LunarLander": "pip install 'framestore[box2d]' (box2d)",
    "BipedalWalker": "pip install 'framestore[box2d]' (box2d)",
}


def _hint(env_id: str) -> str:
    for prefix, hint in _HINTS.items():
        if env_id.startswith(prefix):
            return hint
    return "install the package that provides it"


def register_optional_envs(env_id: str = "") -> None:
    """Register ale-py's environments (they are not registered by gymnasium itself)."""
    if env_id and not env_id.startswith("ALE/"):
        return
    try:
        import ale_py
    except ImportError:
        if env_id:
            raise InvalidInput(f"{env_id} needs ale-py: {_hint(env_id)}") from None
        return
    # The emulator's banner ("A.L.E: Arcade Learning Environment ...", "[Powered by
    # Stella]") would go to the user's stderr at every environment made; errors still do.
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    gym.register_envs(ale_py)


def headless_sdl() -> None:
    """Let pygame render ``rgb_array`` frames without a display.

    Gymnasium's pygame renderers (classic control, toy text) call ``pygame.init()``,
    which starts SDL's video subsystem. With no display SDL probes its drivers and prints
    ``error: XDG_RUNTIME_DIR is invalid or not set`` on stderr although nothing is ever
    shown. The ``dummy`` driver is what such rendering needs: it is chosen only when
    there is no display (so a pygame window of the user's own still works where one can
    open) and never over an ``SDL_VIDEODRIVER`` the user set. SDL reads the variable at
    ``pygame.init()``, so setting it before the first render is enough."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def make_env(env_id: str, *, max_episode_steps: int | None = None, **kwargs: Any) -> gym.Env:
    """``gymnasium.make(env_id, render_mode="rgb_array", ...)`` with readable errors."""
    if not isinstance(env_id, str) or not env_id.strip():
        raise InvalidInput("environment id must be a non-empty string")
    register_optional_envs(env_id)
    headless_sdl()
    try:
        return gym.make(
            env_id, render_mode="rgb_array", max_episode_steps=max_episode_steps, **kwargs
        )
    except gym.error.DependencyNotInstalled as e:
        raise InvalidInput(f"{env_id} needs a missing dependency ({e}): {_hint(env_id)}") from None
    except (
        gym.error.NameNotFound,
        gym.error.NamespaceNotFound,
        gym.error.VersionNotFound,
        gym.error.DeprecatedEnv,
        gym.error.UnregisteredEnv,
    ) as e:
        raise InvalidInput(f"unknown environment id {env_id!r}: {e}") from None
    except ImportError as e:
        raise InvalidInput(f"{env_id} needs a missing dependency ({e}): {_hint(env_id)}") from None
    except gym.error.Error as e:
        raise InvalidInput(f"cannot make {env_id!r}: {e}") from None
