"""``RecordVectorFrames`` when a vector step or reset goes wrong.

A real ``SyncVectorEnv`` of CartPole-v1 sub-environments (next-step and same-step
autoreset), each behind a ``Trap`` wrapper that, on one chosen event, puts an info too
large to store into the sub-environment's info (the recorder refuses the batch) or
raises from ``step``. Whatever fails, nothing of that step is recorded: the episodes open
at the error end as interrupted, an episode that never got a row leaves no trace, and
recording resumes at the next full ``reset()``. An independent model of what should be
stored (built from the caller's side: the frames ``env.render()`` gives after each
successful call, the actions given, the flags returned) is compared with the store row
by row, frame by frame.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest

from framestore import FrameStore, RecordVectorFrames
from framestore.envs import make_env
from framestore.errors import InfoTooLarge, InvalidInput
from tools.verify import verify

N = 3
MAX_STEPS = (4, 5, 6)  # per sub-environment: their episodes end on different steps
MODES = ("NextStep", "SameStep")
BLOB = "x" * 70_000  # encoded, larger than the 64 KiB an info may take


class Plan:
    """What the ``Trap`` wrappers do wrong and when (one event each, then disarmed), and
    how often each sub-environment was stepped and reset."""

    def __init__(self) -> None:
        self.steps = [0] * N
        self.resets = [0] * N
        # ("end" | "autoreset" | "reset", sub_env): the info of that sub-environment's
        # next terminating step / reset without a seed (an autoreset) / seeded reset
        self.blob_on: tuple[str, int] | None = None
        self.raise_on: tuple[int, int] | None = None  # (sub_env, its n-th env.step call)

    def calls(self) -> tuple[int, int]:
        return sum(self.steps), sum(self.resets)


class Trap(gym.Wrapper):
    """A sub-environment that does what ``plan`` says."""

    def __init__(self, env: gym.Env, index: int, plan: Plan):
        super().__init__(env)
        self.index = index
        self.plan = plan

    def _info(self, kind: str, info: dict) -> dict:
        if self.plan.blob_on == (kind, self.index):
            self.plan.blob_on = None
            return {**info, "blob": BLOB}
        return info

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.plan.resets[self.index] += 1
        return obs, self._info("autoreset" if seed is None else "reset", info)

    def step(self, action):
        self.plan.steps[self.index] += 1
        if self.plan.raise_on == (self.index, self.plan.steps[self.index]):
            self.plan.raise_on = None
            raise RuntimeError(f"sub-environment {self.index} failed")
        obs, reward, term, trunc, info = self.env.step(action)
        return obs, reward, term, trunc, self._info("end" if term or trunc else "step", info)


def _sub_env(i: int, plan: Plan) -> gym.Env:
    return Trap(make_env("CartPole-v1", max_episode_steps=MAX_STEPS[i]), i, plan)


@dataclass(eq=False)
class Ep:
    """An episode as it should be stored."""

    sub_env: int
    seed: int | None
    after: Ep | None  # the episode it continues (autoreset)
    frames: list = field(default_factory=list)  # per row; None: no frame
    actions: list = field(default_factory=list)
    status: str | None = None


class Model:
    """What the store should hold, from the caller's side of the calls that succeeded."""

    def __init__(self, same_step: bool):
        self.same_step = same_step
        self.episodes: list[Ep] = []
        self.open: list[Ep | None] = [None] * N
        self.last: list[Ep | None] = [None] * N
        self.due = [False] * N  # next-step autoreset on the next step

    def _start(self, i: int, seed: int | None, frame: np.ndarray) -> None:
        ep = Ep(i, seed, None if seed is not None else self.last[i], [frame], [None])
        self.episodes.append(ep)
        self.open[i] = ep

    def _end(self, i: int, status: str) -> None:
        ep = self.open[i]
        assert ep is not None
        ep.status = status
        self.open[i] = None
        self.last[i] = ep

    def reset(self, seed: int, frames) -> None:
        for i in range(N):
            if self.open[i] is not None:
                self._end(i, "interrupted")
            self._start(i, seed + i, frames[i])
        self.due = [False] * N

    def step(self, actions, frames, done) -> None:
        for i in range(N):
            if self.due[i]:  # next-step: this step reset the sub-environment
                self.due[i] = False
                self._start(i, None, frames[i])
                continue
            ep = self.open[i]
            assert ep is not None
            ep.frames.append(None if self.same_step and done[i] else frames[i])
            ep.actions.append(int(actions[i]))
            if done[i]:
                self._end(i, "complete")
                if self.same_step:
                    self._start(i, None, frames[i])
                else:
                    self.due[i] = True

    def error(self) -> None:
        for i in range(N):
            if self.open[i] is not None:
                self._end(i, "interrupted")
        self.due = [False] * N

    def autoresets(self) -> int:
        return sum(1 for e in self.episodes if e.after is not None)


class Run:
    """The recorded vector environment, driven as a caller would, and its model."""

    def __init__(self, store: FrameStore, mode: str):
        self.plan = Plan()
        venv = gym.vector.SyncVectorEnv(
            [functools.partial(_sub_env, i, self.plan) for i in range(N)],
            autoreset_mode=gym.vector.AutoresetMode(mode),
        )
        self.env = RecordVectorFrames(venv, store)
        self.model = Model(mode == "SameStep")
        self.rng = np.random.default_rng(7)

    def reset(self, seed: int) -> None:
        self.env.reset(seed=seed)
        self.model.reset(seed, self.env.render())

    def step(self) -> None:
        actions = self.rng.integers(0, 2, N)
        _, _, term, trunc, _ = self.env.step(actions)
        self.model.step(actions, self.env.render(), np.logical_or(term, trunc))

    def step_until_error(self, error: type[BaseException]) -> tuple[int, ...]:
        """Step until a step fails with ``error``; the episodes open before it."""
        for _ in range(20):
            before = tuple(e for e in self.env.current_episodes if e is not None)
            try:
                self.step()
            except error:
                self.model.error()
                return before
        pytest.fail("the planned error never happened")

    def close(self) -> None:
        self.env.close()
        self.model.error()  # close ends the open episodes as interrupted


def check_store(path, model: Model) -> None:
    """The store holds exactly the model's episodes: rows, actions, frames, chains."""
    with FrameStore.open(path, readonly=True) as store:
        eps = store.episodes()
        assert all(e.steps > 0 for e in eps), "an episode without a row"
        ids: dict[int, int] = {}  # id(model Ep) -> stored episode id
        for i in range(N):
            got = [e for e in eps if e.sub_env == i]
            want = [w for w in model.episodes if w.sub_env == i]
            assert [(e.status, e.steps, e.seed) for e in got] == [
                (w.status, len(w.frames), w.seed) for w in want
            ], f"sub-env {i}"
            for e, w in zip(got, want, strict=True):
                ids[id(w)] = e.id
                assert e.continues_episode == (None if w.after is None else ids[id(w.after)])
                rows = store.read_steps(e.id)
                assert [r.step for r in rows] == list(range(e.steps))  # no hole, no extra
                assert [r.action for r in rows] == w.actions  # step 0: the reset, no action
                assert e.frames == sum(f is not None for f in w.frames) and e.frames_dropped == 0
                assert rows[0].frame is not None
                for r, frame in zip(rows, w.frames, strict=True):
                    if frame is None:
                        assert r.frame is None
                    else:
                        assert np.array_equal(store.read_frame(e.id, r.step), frame)
    report = verify(path)
    assert report.ok, report.problems


def assert_interrupted(path, before: tuple[int, ...]) -> None:
    """Each episode open before the error is interrupted, or (never given a row) absent."""
    with FrameStore.open(path, readonly=True) as store:
        stored = {e.id: e for e in store.episodes()}
    assert before, "no episode was open at the error"
    assert all(stored[e].status == "interrupted" for e in before if e in stored)
    assert any(e in stored for e in before)


# where the too-large info goes: the first terminating step of sub-env 1, the autoreset
# that follows it, or a seeded reset() after a few steps
@pytest.mark.parametrize("where", ["end", "autoreset", "reset"])
@pytest.mark.parametrize("mode", MODES)
def test_refused_batch_records_nothing_of_that_step(tmp_path, mode, where):
    path = tmp_path / "v.store"
    with FrameStore.open(path) as store:
        run = Run(store, mode)
        try:
            run.reset(seed=10)
            if where == "reset":
                for _ in range(3):
                    run.step()
                before = run.env.current_episodes
                run.plan.blob_on = ("reset", 1)
                with pytest.raises(InfoTooLarge):
                    run.env.reset(seed=20)
                run.model.error()
            else:
                run.plan.blob_on = (where, 1)
                before = run.step_until_error(InfoTooLarge)
            assert run.plan.blob_on is None
            assert run.env.current_episodes == (None,) * N
            run.reset(seed=30)
            for _ in range(14):
                run.step()
        finally:
            run.close()
    assert run.model.autoresets() >= 4
    assert_interrupted(path, before)
    check_store(path, run.model)


@pytest.mark.parametrize("mode", MODES)
def test_after_an_error_only_a_full_reset_resumes(tmp_path, mode):
    path = tmp_path / "v.store"
    with FrameStore.open(path) as store:
        run = Run(store, mode)
        try:
            run.reset(seed=3)
            run.plan.blob_on = ("end", 0)
            run.step_until_error(InfoTooLarge)
            calls = run.plan.calls()
            for _ in range(2):
                with pytest.raises(InvalidInput, match="call reset"):
                    run.env.step(np.zeros(N, dtype=np.int64))
            partial = np.array([True, False, False])
            with pytest.raises(InvalidInput, match="reset every sub-environment"):
                run.env.reset(seed=4, options={"reset_mask": partial})
            assert run.plan.calls() == calls  # the environment was neither stepped nor reset
            run.reset(seed=5)
            for _ in range(6):
                run.step()
        finally:
            run.close()
    check_store(path, run.model)


@pytest.mark.parametrize("mode", MODES)
def test_one_record_steps_call_per_vector_step(tmp_path, mode, monkeypatch):
    """Same-step autoreset sends the terminating rows and the next episodes' reset rows
    in one batch (next-step always did)."""
    path = tmp_path / "v.store"
    with FrameStore.open(path) as store:
        run = Run(store, mode)
        batches: list[int] = []
        real = run.env.recorder.record_steps

        def counted(episode_ids, *args, **kwargs):
            batches.append(len(episode_ids))
            return real(episode_ids, *args, **kwargs)

        monkeypatch.setattr(run.env.recorder, "record_steps", counted)
        try:
            run.reset(seed=1)
            for _ in range(15):
                run.step()
            run.reset(seed=2)
            for _ in range(5):
                run.step()
        finally:
            run.close()
    assert run.model.autoresets() >= 6
    assert len(batches) == 2 + 20  # one per reset() and one per vector step
    extra = run.model.autoresets() if mode == "SameStep" else 0  # their reset rows
    assert sum(batches) == 2 * N + 20 * N + extra
    check_store(path, run.model)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fails", [(1, 2), (1, 5)])  # (1, 5): sub-env 0 autoresets then
def test_env_step_raising_records_nothing_of_that_step(tmp_path, mode, fails):
    path = tmp_path / "v.store"
    with FrameStore.open(path) as store:
        run = Run(store, mode)
        try:
            run.reset(seed=40)
            run.plan.raise_on = fails
            before = run.step_until_error(RuntimeError)
            assert run.plan.raise_on is None
            assert run.env.current_episodes == (None,) * N
            with pytest.raises(InvalidInput, match="call reset"):
                run.env.step(np.zeros(N, dtype=np.int64))
            run.reset(seed=50)
            for _ in range(10):
                run.step()
        finally:
            run.close()
    assert_interrupted(path, before)
    check_store(path, run.model)
