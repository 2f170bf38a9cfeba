"""Recording from a policy: one play loop for ``framestore record``, ``record_parallel``
and the benchmarks; the same seed gives the same actions whichever records it; a policy
named on the command line is checked before the environment starts and stored with the
run."""

from __future__ import annotations

import textwrap

import pytest
from conftest import assert_one_line_error, run_cli

from framestore import FrameStore
from framestore.errors import InvalidInput
from framestore.gym.play import load_policy
from framestore.ray import record_episodes
from tools.record import record

POLICY_FILE = """
import numpy as np

SEEDS = []

def lean(obs):
    # push the cart the way the pole leans: a policy that depends on the observation
    return int(obs[2] > 0)

def lean_batch(obs):
    return (np.asarray(obs)[:, 2] > 0).astype(np.int64)

class Alternating:
    def reset(self, seed):
        SEEDS.append(seed)
        self.next = seed % 2

    def act(self, obs):
        self.next = 1 - self.next
        return self.next

not_a_policy = 42
"""


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "my_policy.py"
    path.write_text(textwrap.dedent(POLICY_FILE))
    return path


def actions_by_seed(path) -> dict[int, list]:
    with FrameStore.open(path, readonly=True) as st:
        return {ep.seed: [s.action for s in st.read_steps(ep.id)][1:] for ep in st.episodes()}


def test_record_and_record_parallel_give_the_same_actions_for_the_same_seed(tmp_path):
    """record_parallel's worker reseeds the action space at every episode; record did
    once per run, so episode 1 on differed. Both play through framestore.gym.play now."""
    record(str(tmp_path / "one.store"), "CartPole-v1", episodes=3, seed=5, max_steps=30)
    record_episodes(tmp_path / "w0.store", "CartPole-v1", [0], seed=5, max_steps=30)
    record_episodes(tmp_path / "w1.store", "CartPole-v1", [1, 2], seed=5, max_steps=30)
    one = actions_by_seed(tmp_path / "one.store")
    parallel = {**actions_by_seed(tmp_path / "w0.store"), **actions_by_seed(tmp_path / "w1.store")}
    assert sorted(one) == [5, 6, 7] and one == parallel
    assert one[5] != one[6]  # each episode draws from its own seed


def test_cli_records_from_a_policy_file_and_stores_its_name(tmp_path, policy_file):
    spec = f"{policy_file}:lean"
    path = tmp_path / "p.store"
    result = run_cli(
        "record", path, "--env", "CartPole-v1", "--episodes", "2", "--max-steps", "40",
        "--policy", spec, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with FrameStore.open(path, readonly=True) as st:
        (run,) = st.runs()
        assert run.config["policy"] == spec
        for ep in st.episodes():
            steps = st.read_steps(ep.id)
            assert len(steps) > 2
    # the stored actions are the policy's answers to the observations it saw
    seeds = [0, 1]
    assert _replayed_actions("CartPole-v1", seeds, path) == [
        a for seed in seeds for a in actions_by_seed(path)[seed]
    ]


def _replayed_actions(env_id, seeds, path) -> list[int]:
    """What ``lean`` answers along each stored episode, stepping the stored actions."""
    from framestore.envs import make_env

    stored = actions_by_seed(path)
    out = []
    env = make_env(env_id)
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            for action in stored[seed]:
                out.append(int(obs[2] > 0))
                obs, *_ = env.step(action)
    finally:
        env.close()
    return out


def test_an_object_policy_is_reset_with_each_episode_seed(tmp_path, policy_file):
    spec = load_policy(f"{policy_file}:Alternating")
    module = type(spec.target).__module__
    record(str(tmp_path / "o.store"), "CartPole-v1", episodes=2, seed=3, max_steps=6, policy=spec)
    import sys

    assert sys.modules[module].SEEDS == [3, 4]
    acts = actions_by_seed(tmp_path / "o.store")
    assert acts[3][:4] == [0, 1, 0, 1] and acts[4][:4] == [1, 0, 1, 0]


def test_a_vector_recording_gives_the_policy_batched_observations(tmp_path, policy_file):
    path = tmp_path / "v.store"
    record(str(path), "CartPole-v1", episodes=2, envs=2, max_steps=8,
           policy=f"{policy_file}:lean_batch")  # fmt: skip
    with FrameStore.open(path, readonly=True) as st:
        assert st.runs()[0].config["policy"].endswith(":lean_batch")
        assert len([e for e in st.episodes() if e.status == "complete"]) >= 2


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("greedy", "expected 'random', 'pkg.module:callable'"),
        ("no_such_module_xyz:act", "cannot import no_such_module_xyz"),
        ("math:no_such", "math has no 'no_such'"),
        ("math:pi", "neither a callable"),
        ("missing/policy.py:act", "no such file"),
    ],
)
def test_a_bad_policy_is_one_line_before_the_environment_starts(tmp_path, monkeypatch, spec, says):
    import tools.record

    def no_env(*a, **k):
        raise AssertionError("the environment was made")

    monkeypatch.setattr(tools.record, "make_env", no_env)
    result = run_cli("record", tmp_path / "x.store", "--env", "CartPole-v1", "--policy", spec)
    assert says in assert_one_line_error(result, 2)
    assert not (tmp_path / "x.store").exists()


def test_a_policy_file_that_fails_on_import_or_not_a_policy_is_refused(tmp_path, policy_file):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('needs a GPU\\nand more')\n")
    with pytest.raises(InvalidInput, match="cannot import .*broken.py: needs a GPU and more"):
        load_policy(f"{broken}:act")
    with pytest.raises(InvalidInput, match="neither a callable"):
        load_policy(f"{policy_file}:not_a_policy")


def test_record_parallel_refuses_a_bad_policy_before_starting_actors(tmp_path):
    from framestore.ray import record_parallel

    with pytest.raises(InvalidInput, match="cannot import no_such_module_xyz"):
        record_parallel(
            "CartPole-v1", workers=1, episodes=1, out=tmp_path / "out",
            policy="no_such_module_xyz:act",
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "code, says",
    [
        (
            "def act(obs):\n    return obs.no_such_field\n",
            "policy 'pol.py:act' failed: AttributeError",
        ),
        (
            "def act(obs):\n    return 99\n",
            "the environment, on the action 99 failed: AssertionError",
        ),
    ],
    ids=["policy-raises", "action-refused"],
)
def test_a_policy_that_fails_while_playing_is_one_line_and_keeps_what_was_recorded(
    tmp_path, monkeypatch, code, says
):
    """The policy's own error, or the environment refusing its action, mid-recording: one
    line, exit 1, no traceback; the episode's reset step stays, marked interrupted."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pol.py").write_text(code)
    path = tmp_path / "p.store"
    result = run_cli(
        "record", path, "--env", "CartPole-v1", "--policy", "pol.py:act", "--episodes", 1
    )
    assert says in assert_one_line_error(result, 1)
    with FrameStore.open(path, readonly=True) as st:
        (ep,) = st.episodes()
        assert ep.status == "interrupted" and ep.steps == 1  # the reset, then the failure
