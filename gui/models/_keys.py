"""Human keyboard control: ``KeyState`` (held and tapped keys) and a ``KeyMapper`` per
environment family (Atari, CarRacing, toy-text and classic control, 1-D Box)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = [
    "DOWN",
    "LEFT",
    "RIGHT",
    "SPACE",
    "UP",
    "AtariKeyMapper",
    "BoxKeyMapper",
    "CarRacingKeyMapper",
    "DiscreteKeyMapper",
    "KeyMapper",
    "KeyState",
]

LEFT, RIGHT, UP, DOWN, SPACE = "Left", "Right", "Up", "Down", "Space"
_GLYPH = {LEFT: "←", RIGHT: "→", UP: "↑", DOWN: "↓", SPACE: "Space"}


class KeyState:
    """Keys held now plus keys tapped since the last ``consume()``, so a tap shorter
    than one step is not lost. Pressed on the UI thread, consumed on the session thread:
    a lock keeps a tap from falling between the two."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._tapped: set[str] = set()
        self._lock = threading.Lock()

    def press(self, key: str) -> None:
        with self._lock:
            self._held.add(key)
            self._tapped.add(key)

    def release(self, key: str) -> None:
        with self._lock:
            self._held.discard(key)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._tapped.clear()

    @property
    def held(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._held)

    def consume(self) -> frozenset[str]:
        with self._lock:
            keys = frozenset(self._held | self._tapped)
            self._tapped.clear()
        return keys


class KeyMapper:
    """Maps the set of pressed keys to an action. Use ``KeyMapper.for_env(env)``.

    ``action(keys)`` returns ``None`` when no step should happen (turn-based games with
    no key pressed); ``realtime`` mappers always return an action (a no-op when idle).
    """

    family = "none"
    realtime = False

    def action(self, keys: Iterable[str]) -> Any:
        return None

    def bindings(self) -> list[tuple[str, str]]:
        """(keys, effect) pairs for display."""
        return []

    def bindings_text(self) -> str:
        rows = self.bindings()
        if not rows:
            return "no keyboard control for this environment"
        return "\n".join(f"{k:<12} {v}" for k, v in rows)

    @staticmethod
    def for_env(env: gym.Env) -> KeyMapper:
        """The mapper for an environment (Atari, CarRacing, toy-text, classic control)."""
        unwrapped = env.unwrapped
        env_id = env.spec.id if env.spec is not None else ""
        name = env_id.split("/")[-1].split("-")[0]
        if env_id.startswith("ALE/"):  # ale-py's AtariEnv
            return AtariKeyMapper(unwrapped.get_action_meanings())
        if name == "CarRacing":
            return CarRacingKeyMapper(continuous=unwrapped.continuous)
        if name in _DISCRETE_TABLES:
            table, noop = _DISCRETE_TABLES[name]
            return DiscreteKeyMapper(table, noop=noop)
        space = env.action_space
        if isinstance(space, gym.spaces.Discrete) and int(space.n) <= 10:
            n = int(space.n)
            return DiscreteKeyMapper({str(i): (i, f"action {i}") for i in range(n)})
        if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            return BoxKeyMapper(space.low, space.high)
        return KeyMapper()


class AtariKeyMapper(KeyMapper):
    """Arrows and Space (FIRE) for ALE games, from ``get_action_meanings()``; combinations
    follow ALE's names (``UPRIGHTFIRE``). A combination the game lacks falls back to the
    closest one it has (dropping the vertical part first, then horizontal, then FIRE)."""

    family = "atari"
    realtime = True

    def __init__(self, meanings: Sequence[str]):
        self.meanings = list(meanings)
        self._index = {m: i for i, m in enumerate(self.meanings)}
        self.noop = self._index.get("NOOP", 0)

    def action_name(self, keys: Iterable[str]) -> str:
        k = set(keys)
        v = None if (UP in k) == (DOWN in k) else ("UP" if UP in k else "DOWN")
        h = None if (LEFT in k) == (RIGHT in k) else ("LEFT" if LEFT in k else "RIGHT")
        f = "FIRE" if SPACE in k else None
        for cv, ch, cf in (
            (v, h, f),
            (None, h, f),
            (v, None, f),
            (v, h, None),
            (None, None, f),
            (None, h, None),
            (v, None, None),
        ):
            name = "".join(p for p in (cv, ch, cf) if p) or "NOOP"
            if name in self._index:
                return name
        return self.meanings[self.noop]

    def action(self, keys: Iterable[str]) -> int:
        return self._index[self.action_name(keys)]

    def bindings(self) -> list[tuple[str, str]]:
        out = []
        for m in self.meanings:
            if m == "NOOP":
                continue
            keys = []
            rest = m
            for part, key in (("UP", UP), ("DOWN", DOWN), ("RIGHT", RIGHT), ("LEFT", LEFT)):
                if rest.startswith(part):
                    keys.append(_GLYPH[key])
                    rest = rest[len(part) :]
            if rest == "FIRE":
                keys.append(_GLYPH[SPACE])
            elif rest:
                continue
            out.append(("+".join(keys), m))
        return out


class CarRacingKeyMapper(KeyMapper):
    """CarRacing: ←/→ steer, ↑ gas, ↓ brake (a float32 ``[steer, gas, brake]`` action);
    the discrete variant uses its five actions."""

    family = "car_racing"
    realtime = True

    def __init__(self, *, continuous: bool = True, brake: float = 0.8):
        self.continuous = continuous
        self.brake = brake

    def action(self, keys: Iterable[str]):
        k = set(keys)
        steer = (1.0 if RIGHT in k else 0.0) - (1.0 if LEFT in k else 0.0)
        if self.continuous:
            return np.array(
                [steer, 1.0 if UP in k else 0.0, self.brake if DOWN in k else 0.0],
                dtype=np.float32,
            )
        # discrete: 0 nothing, 1 right, 2 left, 3 gas, 4 brake
        if DOWN in k:
            return 4
        if steer > 0:
            return 1
        if steer < 0:
            return 2
        return 3 if UP in k else 0

    def bindings(self) -> list[tuple[str, str]]:
        return [("←/→", "steer"), ("↑", "gas"), ("↓", "brake")]


class DiscreteKeyMapper(KeyMapper):
    """A table ``key -> (action, description)``. Without ``noop`` a step happens only
    while a key is pressed (turn-based); with one the game runs in real time."""

    family = "discrete"

    def __init__(self, table: dict[str, tuple[int, str]], *, noop: int | None = None):
        self.table = dict(table)
        self.noop = noop
        self.realtime = noop is not None

    def action(self, keys: Iterable[str]) -> int | None:
        k = set(keys)
        for key, (a, _desc) in self.table.items():  # table order = priority
            if key in k:
                return a
        return self.noop

    def bindings(self) -> list[tuple[str, str]]:
        return [(_GLYPH.get(k, k), d) for k, (_a, d) in self.table.items()]


class BoxKeyMapper(KeyMapper):
    """A 1-D Box (Pendulum, MountainCarContinuous): ← low, → high on the first
    dimension, zero otherwise."""

    family = "box"
    realtime = True

    def __init__(self, low, high):
        self.low = np.asarray(low, dtype=np.float32)
        self.high = np.asarray(high, dtype=np.float32)

    def action(self, keys: Iterable[str]):
        k = set(keys)
        a = np.clip(np.zeros_like(self.low), self.low, self.high)
        if LEFT in k and RIGHT not in k:
            a[0] = self.low[0]
        elif RIGHT in k and LEFT not in k:
            a[0] = self.high[0]
        return a

    def bindings(self) -> list[tuple[str, str]]:
        return [("←", f"{self.low[0]:g}"), ("→", f"{self.high[0]:g}")]


_DISCRETE_TABLES: dict[str, tuple[dict[str, tuple[int, str]], int | None]] = {
    "FrozenLake": (
        {LEFT: (0, "left"), DOWN: (1, "down"), RIGHT: (2, "right"), UP: (3, "up")},
        None,
    ),
    "CliffWalking": (
        {UP: (0, "up"), RIGHT: (1, "right"), DOWN: (2, "down"), LEFT: (3, "left")},
        None,
    ),
    "Taxi": (
        {
            DOWN: (0, "south"),
            UP: (1, "north"),
            RIGHT: (2, "east"),
            LEFT: (3, "west"),
            SPACE: (4, "pick up"),
            "D": (5, "drop off"),
        },
        None,
    ),
    "CartPole": ({LEFT: (0, "push left"), RIGHT: (1, "push right")}, None),
    "MountainCar": ({LEFT: (0, "accelerate left"), RIGHT: (2, "accelerate right")}, 1),
    "Acrobot": ({LEFT: (0, "torque -1"), RIGHT: (2, "torque +1")}, 1),
    "LunarLander": (
        {UP: (2, "main engine"), LEFT: (1, "left engine"), RIGHT: (3, "right engine")},
        0,
    ),
}
