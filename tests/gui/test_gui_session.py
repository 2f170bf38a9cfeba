"""PlaySession on its session thread, without Qt: the game steps in a process of its own
(or on the session thread, never on the caller's), the recording state changes on the
caller's (UI) thread only, frames reach the caller as the game made them, and what is
recorded is every episode from its reset, complete when the game ended it."""

from __future__ import annotations

import threading
import time
from functools import partial

import gymnasium as gym
import pytest

from framestore.envs import make_env
from gui.models import PlaySession, Recording


class Counting(gym.Wrapper):
    """Notes on which thread (of this process) the environment is reset, stepped and
    rendered, and keeps every frame it rendered."""

    calls: list[tuple[str, str]] = []
    frames: list = []

    def reset(self, **kw):
        Counting.calls.append(("reset", threading.current_thread().name))
        return self.env.reset(**kw)

    def step(self, action):
        Counting.calls.append(("step", threading.current_thread().name))
        return self.env.step(action)

    def render(self):
        frame = self.env.render()
        Counting.frames.append(frame)
        return frame


def counting_env(env_id: str, steps: int) -> gym.Env:
    return Counting(make_env(env_id, max_episode_steps=steps))


class Watched(PlaySession):
    """Records the thread of every change of ``state``."""

    def __setattr__(self, name, value):
        if name == "state":
            self.__dict__.setdefault("writers", set()).add(threading.current_thread().name)
        super().__setattr__(name, value)


def pump(session: PlaySession, until, timeout: float = 60.0) -> list:
    """Act as the UI thread: take results and events until ``until(results)``."""
    results: list = []
    deadline = time.monotonic() + timeout
    while not until(results):
        assert time.monotonic() < deadline, "timed out"
        results += session.take_results()
        session.poll_events()
        time.sleep(0.005)
    return results


def test_recording_state_changes_on_the_ui_thread_only(store):
    session = Watched(
        "CartPole-v1", store, seed=5, env_factory=partial(counting_env, steps=15), writer="thread"
    )
    try:
        session.policy = lambda s: s.sample_action()
        session.start(fps=500)
        session.set_recording(True)
        assert session.state is Recording.STARTING
        # recorded steps through at least two episode ends (cut at 15 actions)
        ends = lambda rs: sum(r.recorded and (r.terminated or r.truncated) for r in rs)  # noqa: E731
        results = pump(session, lambda rs: ends(rs) >= 2)
        assert session.state is Recording.ON
        session.stop_recorder().result(timeout=60)
        assert session.state is Recording.OFF
        # the game plays on, unrecorded (what it played before the stop came first)
        more = pump(session, lambda rs: sum(not r.recorded for r in rs) >= 5)
        flags = [r.recorded for r in more]
        assert flags == sorted(flags, reverse=True)
        results += more
    finally:
        session.close(timeout=60)
    assert session.writers == {threading.current_thread().name}
    recorded = [r for r in results if r.recorded]
    episodes = store.episodes()
    assert sum(e.steps for e in episodes) == len(recorded)
    for ep in episodes[:2]:  # ended by the game: complete, from a reset, <= 16 rows
        steps = store.read_steps(ep.id)
        assert ep.status == "complete" and len(steps) <= 16 and steps[0].action is None
        assert steps[-1].terminated or steps[-1].truncated
    assert episodes[-1].status in ("complete", "interrupted")


def test_the_game_steps_in_its_own_process_not_in_the_callers(store):
    Counting.calls.clear()
    session = PlaySession("ALE/Assault-v5", seed=1, env_factory=partial(counting_env, steps=10))
    try:
        session.policy = lambda s: s.sample_action()
        session.start(fps=500)
        results = pump(session, lambda rs: sum(r.step == 0 for r in rs) >= 3)
    finally:
        session.close(timeout=60)
    assert [r.seed for r in results if r.step == 0][:3] == [1, 2, 3]  # two episode ends
    assert Counting.calls == []  # seeded resets (ROM reloads) and steps: all in the child


def test_on_the_session_thread_frames_reach_the_caller_uncopied(store):
    Counting.calls.clear()
    Counting.frames.clear()
    session = PlaySession(
        "ALE/Assault-v5",
        seed=1,
        env_factory=partial(counting_env, steps=10),
        env_process=False,
    )
    try:
        session.policy = lambda s: s.sample_action()
        session.start(fps=500)
        results = pump(session, lambda rs: len(rs) >= 25)
    finally:
        session.close(timeout=60)
    assert {thread for _, thread in Counting.calls} == {"gui-session"}
    rendered = {id(f) for f in Counting.frames}
    assert all(id(r.frame) in rendered for r in results)  # the very arrays rendered


HOLD_LOCK = """
import sys, time
from framestore import FrameStore
store = FrameStore.open(sys.argv[1])
rec = store.recorder("CartPole-v1")
print("recording", flush=True)
time.sleep(120)
"""


def test_a_store_another_process_records_into_is_an_error_event_and_play_goes_on(store_path):
    import os
    import subprocess
    import sys

    from framestore import FrameStore, StoreLocked

    FrameStore.open(store_path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(store_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "recording"
        with FrameStore.open(store_path) as store:
            session = PlaySession("CartPole-v1", store, seed=0)
            try:
                session.policy = lambda s: s.sample_action()
                session.start(fps=500)
                session.set_recording(True)
                events: list = []
                deadline = time.monotonic() + 60
                while not events:
                    assert time.monotonic() < deadline
                    session.take_results()
                    events += session.poll_events()
                    time.sleep(0.005)
                (ev,) = events
                assert ev.kind == "error" and isinstance(ev.error, StoreLocked)
                assert ev.error.__traceback__ is None  # keeps no frames (nor the game) alive
                assert session.state is Recording.OFF
                pump(session, lambda rs: len(rs) >= 5)  # still playing
            finally:
                session.close(timeout=60)
            assert session.env is None  # nothing of the environment outlives the session
    finally:
        holder.kill()
        holder.wait()


PREPARED_PROBE = """
import json, sys, tempfile, time
from framestore import FrameStore
from gui.models import PlaySession

writer = sys.argv[1]
with tempfile.TemporaryDirectory() as d, FrameStore.open(d + "/s.store") as store:
    session = PlaySession("CartPole-v1", store, writer=writer)
    loaded = set(sys.modules)
    session.set_recording(True)
    deadline = time.monotonic() + 60
    while not session.armed and time.monotonic() < deadline:
        session.poll_events()
        time.sleep(0.01)
    armed = session.armed
    session.close()
print(json.dumps({"armed": armed, "new": sorted(set(sys.modules) - loaded)}))
"""


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_starting_a_recording_imports_nothing(writer):
    """Starting a game loads what opening a recorder loads on first use (host settings,
    the merge check, the storage process's client), so the I/O thread, which shares the
    GIL with the UI, imports no module when recording starts (a module compiled from
    source holds the GIL for up to 30 ms). Fresh interpreter: what the test run
    imported before cannot hide an import."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run(
        [sys.executable, "-c", PREPARED_PROBE, writer],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["armed"], result.stderr
    assert out["new"] == [], f"opening a {writer} recorder imported {out['new']}"
