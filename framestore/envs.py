"""Making Gymnasium environments for recording, with clear errors for the usual
mistakes (unknown id, missing optional dependency); and the environment spec stored with
a run, from which ``verify --replay`` makes the environment again."""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from .errors import InvalidInput

#: Layout version of the ``env_spec`` a run stores (``runs.env_spec``).
ENV_SPEC_VERSION = 1

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


@contextmanager
def _readable_errors(env_id: str) -> Iterator[None]:
    """Gymnasium's errors for an unknown id or a missing package as ``InvalidInput``."""
    try:
        yield
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


def _check_id(env_id: object) -> None:
    if not isinstance(env_id, str) or not env_id.strip():
        raise InvalidInput("environment id must be a non-empty string")


def make_env(env_id: str, *, max_episode_steps: int | None = None, **kwargs: Any) -> gym.Env:
    """``gymnasium.make(env_id, render_mode="rgb_array", ...)`` with readable errors."""
    _check_id(env_id)
    register_optional_envs(env_id)
    headless_sdl()
    with _readable_errors(env_id):
        return gym.make(
            env_id, render_mode="rgb_array", max_episode_steps=max_episode_steps, **kwargs
        )


VECTOR_MODES = ("sync", "async")


def make_vec_env(
    env_id: str,
    num_envs: int,
    *,
    mode: str = "sync",
    max_episode_steps: int | None = None,
    autoreset_mode: str = "NextStep",
) -> gym.vector.VectorEnv:
    """``gymnasium.make_vec(env_id, num_envs, vectorization_mode=mode,
    render_mode="rgb_array", ...)`` with readable errors."""
    _check_id(env_id)
    if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
        raise InvalidInput(f"the number of environments must be at least 1, got {num_envs!r}")
    if mode not in VECTOR_MODES:
        raise InvalidInput(f"unknown vector mode {mode!r}; choose one of {', '.join(VECTOR_MODES)}")
    try:
        autoreset = gym.vector.AutoresetMode(autoreset_mode)
    except ValueError:
        raise InvalidInput(f"unknown autoreset mode {autoreset_mode!r}") from None
    register_optional_envs(env_id)
    headless_sdl()
    extra = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    with _readable_errors(env_id):
        return gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode=mode,
            vector_kwargs={"autoreset_mode": autoreset},
            render_mode="rgb_array",
            **extra,
        )


def _version(module: str) -> str | None:
    try:
        return importlib.metadata.version(module)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def env_spec_of(spec: EnvSpec | None, *, vector: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run stores to make its environment again (``runs.env_spec``, JSON).

    ``spec`` is the environment's ``env.spec`` (for a vector environment: one
    sub-environment's). The result holds Gymnasium's own JSON of the spec (id, entry
    point, kwargs such as frameskip or ``repeat_action_probability``, time limit, wrappers
    with their arguments), the versions of Gymnasium and of the package providing the
    environment, ``vector`` (number of sub-environments, vectorization and autoreset
    modes) and, when the environment cannot be made again from it, ``not_replayable``
    with the reason.
    """
    out: dict[str, Any] = {"version": ENV_SPEC_VERSION, "vector": vector, "spec": None}
    if spec is None:
        out["not_replayable"] = "the environment has no spec (it was not made by gymnasium.make)"
        return out
    out["id"] = spec.id
    provider = (
        spec.entry_point.split(":")[0].split(".")[0] if isinstance(spec.entry_point, str) else None
    )
    out["packages"] = {"gymnasium": _version("gymnasium")}
    if provider and provider != "gymnasium":
        out["packages"][provider] = _version(provider)
    unnamed = [w.name for w in spec.additional_wrappers if w.kwargs is None]
    if unnamed:
        out["not_replayable"] = (
            f"wrapper {unnamed[0]} does not record its arguments (it is not a "
            "gymnasium.utils.RecordConstructorArgs)"
        )
        return out
    if not isinstance(spec.entry_point, str):
        out["not_replayable"] = "the environment's entry point is not an importable name"
        return out
    try:
        out["spec"] = json.loads(spec.to_json())
    except (ValueError, TypeError) as e:  # kwargs that JSON cannot hold
        whose = "its"
        for w in spec.additional_wrappers:
            try:
                json.dumps(w.kwargs)
            except (ValueError, TypeError):
                whose = f"wrapper {w.name}'s"
                break
        out["not_replayable"] = f"{whose} arguments cannot be stored as JSON ({e})"
    return out


def make_env_from_spec(env_spec: dict[str, Any]) -> gym.Env:
    """Make the environment a run's ``env_spec`` describes again (rgb_array rendering).

    Raises ``InvalidInput`` when the spec says it is not replayable or the environment
    cannot be made (unknown id, missing package)."""
    reason = env_spec.get("not_replayable")
    if reason:
        raise InvalidInput(reason)
    raw = env_spec.get("spec")
    if not isinstance(raw, dict):
        raise InvalidInput("the stored environment spec is empty")
    spec = EnvSpec.from_json(json.dumps(raw))
    register_optional_envs(spec.id)
    headless_sdl()
    try:
        return gym.make(spec, render_mode="rgb_array")
    except gym.error.Error as e:
        raise InvalidInput(f"cannot make {spec.id!r} again: {e}") from None
    except ImportError as e:
        raise InvalidInput(f"{spec.id} needs a missing package ({e}): {_hint(spec.id)}") from None
