"""Where the Play tab's environment steps: ``LocalGame`` on the calling thread, or
``GameProcess`` in a child process of its own.

Why a process: a Python thread does not keep the event loop free when the environment
holds the GIL, and ale-py does for a long time: a seeded reset reloads the ROM inside
one C++ call (91 ms on a quiet machine, 300+ ms on a loaded one), and CarRacing's
pygame rendering is Python. In a child process neither can hold the UI's interpreter.
The child drops observations and sends back only what the session uses: the rendered
frame (one copy, through the pipe), reward, flags and info.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

__all__ = ["Game", "GameProcess", "LocalGame", "StepOutcome"]

#: (frame, reward, terminated, truncated, info) of one step.
StepOutcome = tuple[np.ndarray, float, bool, bool, dict[str, Any]]


class Game(Protocol):
    """An environment as the session thread plays it: frames, not observations."""

    def reset(self, seed: int | None) -> tuple[np.ndarray, dict[str, Any]]: ...

    def step(self, action: Any) -> StepOutcome: ...

    def close(self) -> None: ...


class LocalGame:
    """The environment stepped on the calling thread."""

    def __init__(self, env: gym.Env):
        self.env = env

    def reset(self, seed: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        _obs, info = self.env.reset(seed=seed)
        return self.env.render(), info

    def step(self, action: Any) -> StepOutcome:
        _obs, reward, terminated, truncated, info = self.env.step(action)
        return self.env.render(), float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        self.env.close()


class GameProcessError(RuntimeError):
    """The environment's process failed or died (the message says how)."""


#: Environments handed to a forked child: set just before the fork, removed just after
#: it in the parent (so the parent keeps no reference through the Process object).
_HANDOVER: dict[int, gym.Env] = {}


def _serve(
    conn: Connection, env_id: str, factory: Callable[[str], gym.Env], handover: int | None
) -> None:
    """The child: take the environment the parent made (forked) or make one, then answer
    reset/step until close."""
    try:
        env = _HANDOVER.pop(handover, None) if handover is not None else None
        game = LocalGame(env if env is not None else factory(env_id))
    except BaseException as e:  # noqa: BLE001 - sent to the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ok", None))
    while True:
        try:
            verb, arg = conn.recv()
        except (EOFError, OSError):  # the parent went away
            break
        if verb == "close":
            break
        try:
            conn.send(("ok", game.reset(arg) if verb == "reset" else game.step(arg)))
        except BaseException as e:  # noqa: BLE001 - sent to the parent
            conn.send(("error", f"{type(e).__name__}: {e}"))
    game.close()
    conn.close()


class GameProcess:
    """An environment stepped in a child process. Forked (where there is ``fork``, as
    the storage process starts), the child takes over ``env`` as the parent made it:
    no second ROM load, and the parent's copy is never stepped. Spawned, the child
    makes ``factory(env_id)``. Calls block the calling thread (the session thread) with
    the GIL released while the child works."""

    def __init__(self, env_id: str, factory: Callable[[str], gym.Env], env: gym.Env):
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        ctx = multiprocessing.get_context(method)
        self._conn, child = ctx.Pipe()
        handover = id(self) if method == "fork" else None
        self._proc = ctx.Process(
            target=_serve,
            args=(child, env_id, factory, handover),
            name="gui-game",
            daemon=True,
        )
        if handover is not None:
            _HANDOVER[handover] = env
        try:
            self._proc.start()
        finally:
            _HANDOVER.pop(handover, None)
        child.close()
        self._ready = False
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def _call(self, verb: str, arg: Any) -> Any:
        try:
            if not self._ready:
                self._answer()  # the environment is made
                self._ready = True
            self._conn.send((verb, arg))
            return self._answer()
        except (EOFError, OSError, BrokenPipeError):
            code = self._proc.exitcode
            raise GameProcessError(
                f"the environment's process (pid {self._proc.pid}) died"
                + (f" with exit code {code}" if code is not None else "")
            ) from None

    def _answer(self) -> Any:
        status, value = self._conn.recv()
        if status != "ok":
            raise GameProcessError(value)
        return value

    def reset(self, seed: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        return self._call("reset", seed)

    def step(self, action: Any) -> StepOutcome:
        return self._call("step", action)

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._conn.send(("close", None))
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()
