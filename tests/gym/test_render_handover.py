"""``RecordFrames`` and ``RecordVectorFrames`` hand a ``render()`` frame over to the store
(``record_step(..., owned=True)``: kept, not copied) only when nobody else holds it:
ale-py's and Box2D CarRacing's renders are fresh arrays; an environment that refills a
buffer it keeps (or hands out views of it, or alternates two) is copied, and every frame
it rendered reads back as it was at its step."""

from __future__ import annotations

import ctypes

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import SyncVectorEnv

from framestore import FrameStore, RecordFrames, RecordVectorFrames
from framestore.envs import make_env
from framestore.gym import _fresh
from framestore.gym._fresh import only_caller_holds
from framestore.write.recorder import Recorder

SHAPE = (24, 32, 3)
STEPS = 40


class RefillingEnv(gym.Env):
    """Renders step ``t`` as a frame full of ``t`` into a buffer it keeps and refills:
    ``same`` returns that buffer, ``view`` a view of it, ``double`` one of two buffers
    in turn; ``pointer`` a fresh array over a ctypes buffer it keeps (a new ctypes
    pointer object under it, holding no reference to the buffer), ``tensor`` a torch
    tensor's ``.numpy()`` (the tensor is the array's base)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, mode: str = "same"):
        self.render_mode = "rgb_array"
        self.mode = mode
        self.observation_space = spaces.Box(0, 1, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self._bufs = [np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)]
        self._c = (ctypes.c_uint8 * int(np.prod(SHAPE)))()
        self._tensor = None
        if mode == "tensor":
            import torch

            self._tensor = torch.zeros(SHAPE, dtype=torch.uint8)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 0.0, False, self.t >= STEPS, {}

    def render(self):
        if self.mode == "pointer":
            ctypes.memset(self._c, self.t % 256, len(self._c))
            pointer = ctypes.cast(self._c, ctypes.POINTER(ctypes.c_uint8))
            return np.ctypeslib.as_array(pointer, shape=SHAPE)
        if self.mode == "tensor":
            self._tensor.fill_(self.t % 256)
            return self._tensor.numpy()
        buf = self._bufs[self.t % 2 if self.mode == "double" else 0]
        buf[:] = self.t % 256
        return buf[:, :] if self.mode == "view" else buf


def spy_owned(monkeypatch) -> list[bool]:
    """The ``owned`` of every ``record_step`` / ``record_steps`` call."""
    seen: list[bool] = []
    one, many = Recorder.record_step, Recorder.record_steps

    def record_step(self, *args, owned=False, **kwargs):
        seen.append(owned)
        return one(self, *args, owned=owned, **kwargs)

    def record_steps(self, *args, owned=False, **kwargs):
        seen.append(owned)
        return many(self, *args, owned=owned, **kwargs)

    monkeypatch.setattr(Recorder, "record_step", record_step)
    monkeypatch.setattr(Recorder, "record_steps", record_steps)
    return seen


@pytest.mark.parametrize("env_id", ["ALE/Assault-v5", "CarRacing-v3"])
def test_real_environments_render_fresh_arrays(env_id):
    """Each render is a new array nobody else holds, and it stays as it was while the
    environment steps and renders again."""
    env = make_env(env_id)
    try:
        env.reset(seed=3)
        first = env.render()
        kept = first.copy()
        assert only_caller_holds(first)
        for _ in range(3):
            env.step(env.action_space.sample())
            frame = env.render()
            assert only_caller_holds(frame)
            assert not np.shares_memory(frame, first)
        assert np.array_equal(first, kept)
    finally:
        env.close()


def test_record_frames_hands_over_ale_renders(tmp_path, monkeypatch):
    """Every Assault frame is handed over, and reads back bit-exact."""
    seen = spy_owned(monkeypatch)
    rendered = []
    env = make_env("ALE/Assault-v5", max_episode_steps=30)
    real_render = env.render

    def render():
        frame = real_render()
        rendered.append(frame.copy())  # a copy: the frame itself stays the caller's only
        return frame

    env.render = render  # the env's own render, watched
    with FrameStore.open(tmp_path / "s") as store:
        rec_env = RecordFrames(env, store, overrides={"max_latency": 600.0})
        rec_env.reset(seed=1)
        done = False
        while not done:
            *_, term, trunc, _ = rec_env.step(rec_env.action_space.sample())
            done = term or trunc
        rec_env.close()
        (ep,) = store.episodes()
        got = store.read_frames(ep.id)
    assert seen and all(seen)
    assert len(got) == len(rendered) == 31
    assert all(np.array_equal(g, r) for g, r in zip(got, rendered, strict=True))


@pytest.mark.parametrize("mode", ["same", "view", "double", "pointer", "tensor"])
def test_an_env_that_refills_its_render_buffer_is_copied(tmp_path, monkeypatch, mode):
    """The buffer is refilled every step while its chunk is still open (64 frames,
    no latency cut): were it kept, every frame would read back as the last one."""
    if mode == "tensor":
        pytest.importorskip("torch")
    seen = spy_owned(monkeypatch)
    with FrameStore.open(tmp_path / "s") as store:
        env = RecordFrames(
            RefillingEnv(mode), store, env_id="Refilling-v0", overrides={"max_latency": 600.0}
        )
        env.reset(seed=1)
        for _ in range(STEPS):
            env.step(0)
        env.close()
        (ep,) = store.episodes()
        got = store.read_frames(ep.id)
    assert seen and not any(seen)
    assert [int(g[0, 0, 0]) for g in got] == list(range(STEPS + 1))
    assert all((g == g[0, 0, 0]).all() for g in got)


class KeptListVectorEnv(SyncVectorEnv):
    """Returns the same list of frames every step, refilled in place: each frame owns
    its memory and is held by nothing but that list, which this env keeps."""

    def render(self):
        frames = super().render()
        if not hasattr(self, "_kept"):
            self._kept = [np.array(f) for f in frames]
        for kept, frame in zip(self._kept, frames, strict=True):
            kept[...] = frame
        return self._kept


@pytest.mark.parametrize(
    ("make", "owned"), [("ale", True), ("same", False), ("double", False), ("kept", False)]
)
def test_record_vector_frames_hands_over_only_fresh_renders(tmp_path, monkeypatch, make, owned):
    """A sync vector env of two sub-environments: Assault's renders are handed over,
    refilled buffers copied; every frame reads back as rendered at its step."""
    seen = spy_owned(monkeypatch)

    def sub():
        if make == "ale":
            return make_env("ALE/Assault-v5", max_episode_steps=STEPS)
        return RefillingEnv("same" if make == "kept" else make)

    venv = (KeptListVectorEnv if make == "kept" else SyncVectorEnv)([sub, sub])
    with FrameStore.open(tmp_path / "s") as store:
        env = RecordVectorFrames(
            venv, store, env_id="ALE/Assault-v5" if make == "ale" else "Refilling-v0",
            overrides={"max_latency": 600.0},
        )  # fmt: skip
        env.reset(seed=1)
        for _ in range(10):
            env.step(np.zeros(2, dtype=np.int64))
        env.close()
        episodes = store.episodes()
        frames = [store.read_frames(e.id) for e in episodes]
    assert seen and all(s == owned for s in seen)
    assert [len(f) for f in frames] == [11, 11]
    if make != "ale":
        for got in frames:
            assert [int(g[0, 0, 0]) for g in got] == list(range(11))
            assert all((g == g[0, 0, 0]).all() for g in got)


def test_where_reference_counts_are_not_trusted_every_frame_is_copied(tmp_path, monkeypatch):
    """CPython 3.14 (borrowed references) and free-threaded builds: no hand-over at all,
    even for a fresh ALE render; the frames still read back bit-exact."""
    monkeypatch.setattr(_fresh, "COUNTS_TRUSTED", False)
    fresh = np.empty((4, 4, 3), dtype=np.uint8)
    assert not _fresh.only_caller_holds(fresh)
    seen = spy_owned(monkeypatch)
    env = make_env("ALE/Assault-v5", max_episode_steps=10)
    with FrameStore.open(tmp_path / "s") as store:
        rec_env = RecordFrames(env, store)
        rec_env.reset(seed=1)
        for _ in range(10):
            rec_env.step(rec_env.action_space.sample())
        rec_env.close()
        (ep,) = store.episodes()
        assert len(store.read_frames(ep.id)) == 11
    assert seen and not any(seen)
