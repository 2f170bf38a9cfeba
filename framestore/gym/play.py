"""The one play loop behind ``framestore record``, ``framestore.ray.record_parallel`` and
the benchmarks: an environment stepped by a policy, random or the user's.

A policy is named by a string: ``"random"`` (actions sampled from the action space), or
``"pkg.module:name"`` / ``"path/to/file.py:name"`` naming either a callable
``obs -> action`` or an object with ``act(obs)`` and, optionally, ``reset(seed)`` (a
class is instantiated without arguments). ``load_policy`` checks the name before any
environment starts; the name is what a run stores (``runs.config["policy"]``).

Seeds: episode i of a recording is reset with ``seed + i`` and its policy with
``reset(seed + i)`` (the random policy seeds its action space with it), so an episode's
actions depend on its own seed alone: the same whether it is recorded by ``record`` or by
any worker of ``record_parallel``. A vector environment is reset once with ``seed`` (sub-
environment i gets ``seed + i``) and its policy with ``reset(seed)``; the policy then
sees the batched observation and returns the batched action.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import FrameStoreError, InvalidInput, PlayFailed

__all__ = ["Policy", "PolicySpec", "PlayStep", "load_policy", "play_episode", "play_vector"]

RANDOM = "random"


class Policy(Protocol):
    """What the play loop steps with."""

    def reset(self, seed: int | None) -> None: ...

    def act(self, obs: Any) -> Any: ...


class RandomPolicy:
    """Actions sampled from ``action_space``, seeded at each ``reset``."""

    def __init__(self, action_space: Any):
        self.action_space = action_space

    def reset(self, seed: int | None) -> None:
        self.action_space.seed(seed)

    def act(self, obs: Any) -> Any:
        return self.action_space.sample()


class _CallablePolicy:
    """A user's function ``obs -> action``, or object with ``act`` (and ``reset``)."""

    def __init__(self, target: Any, name: str = "policy"):
        self.name = name
        self._act: Callable[[Any], Any] = target.act if hasattr(target, "act") else target
        self._reset = getattr(target, "reset", None) if hasattr(target, "act") else None

    def reset(self, seed: int | None) -> None:
        if self._reset is not None:
            try:
                self._reset(seed)
            except Exception as e:  # the user's code: one line naming it, not a traceback
                raise PlayFailed("policy", self.name, e) from e

    def act(self, obs: Any) -> Any:
        try:
            return self._act(obs)
        except Exception as e:  # the user's code: one line naming it, not a traceback
            raise PlayFailed("policy", self.name, e) from e


@dataclass(frozen=True)
class PolicySpec:
    """A checked policy name and what it names (``load_policy``)."""

    name: str
    target: Any = None  # None: the random policy

    def build(self, action_space: Any) -> Policy:
        """The policy for an environment with this action space."""
        if self.target is None:
            return RandomPolicy(action_space)
        return _CallablePolicy(self.target, self.name)


def load_policy(name: str | PolicySpec) -> PolicySpec:
    """Check a policy name and import what it names.

    Raises:
        InvalidInput: one line saying what is wrong (no ``:``, a module that cannot be
            imported, a missing name, something that is neither callable nor has ``act``).
    """
    if isinstance(name, PolicySpec):
        return name
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"policy must be 'random' or 'module:callable', got {name!r}")
    if name == RANDOM:
        return PolicySpec(RANDOM)
    module_name, sep, attr = name.rpartition(":")
    if not sep or not module_name or not attr:
        raise InvalidInput(
            f"policy {name!r}: expected 'random', 'pkg.module:callable' or 'file.py:callable'"
        )
    module = _import(name, module_name)
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise InvalidInput(f"policy {name!r}: {module_name} has no {attr!r}") from None
    if inspect.isclass(target):
        try:
            target = target()
        except Exception as e:
            raise InvalidInput(f"policy {name!r}: {attr}() failed: {_one_line(e)}") from None
    if not (callable(getattr(target, "act", None)) or callable(target)):
        raise InvalidInput(
            f"policy {name!r}: {attr} is neither a callable obs -> action nor an object "
            "with act(obs)"
        )
    return PolicySpec(name, target)


def _import(name: str, module_name: str) -> Any:
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise InvalidInput(f"policy {name!r}: no such file {module_name}")
            mod_name = f"framestore_policy_{abs(hash(str(path)))}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(module_name)
    except InvalidInput:
        raise
    except Exception as e:  # an import error, or any error the module raises at import
        raise InvalidInput(
            f"policy {name!r}: cannot import {module_name}: {_one_line(e)}"
        ) from None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass(frozen=True)
class PlayStep:
    """One step of play: ``action`` is None for the reset (row 0 of an episode)."""

    obs: Any
    action: Any
    reward: Any
    terminated: Any
    truncated: Any
    info: dict[str, Any]


def play_episode(env: Any, policy: Policy, seed: int | None) -> Iterator[PlayStep]:
    """Reset ``env`` with ``seed`` and ``policy`` with ``reset(seed)``, then step it with
    the policy until the episode ends; yields the reset, then every step. Stop iterating
    to end early (the episode is left open)."""
    obs, info = env.reset(seed=seed)
    policy.reset(seed)
    yield PlayStep(obs, None, 0.0, False, False, info)
    done = False
    while not done:
        action = policy.act(obs)
        obs, reward, terminated, truncated, info = _step(env, action)
        yield PlayStep(obs, action, reward, terminated, truncated, info)
        done = bool(terminated or truncated)


def play_vector(venv: Any, policy: Policy, seed: int) -> Iterator[PlayStep]:
    """Reset a vector environment with ``seed`` and ``policy`` with ``reset(seed)``, then
    step it (batched actions and values) for as long as the caller iterates."""
    obs, info = venv.reset(seed=seed)
    policy.reset(seed)
    yield PlayStep(obs, None, None, None, None, info)
    while True:
        action = policy.act(obs)
        obs, reward, terminated, truncated, info = _step(venv, action)
        yield PlayStep(obs, action, reward, terminated, truncated, info)


def _step(env: Any, action: Any) -> tuple:
    """``env.step(action)``; an environment that refuses the action (gymnasium asserts
    it is in the action space) or fails is ``PlayFailed`` naming the action, while the
    store's own errors (a full queue, a failed writer) pass as they are."""
    try:
        return env.step(action)
    except FrameStoreError:
        raise
    except Exception as e:
        shown = " ".join(repr(action).split())
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise PlayFailed("environment", f"action {shown}", e) from e
