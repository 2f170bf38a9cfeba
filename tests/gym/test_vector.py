"""Vector environments recorded through ``RecordVectorFrames``, and ``verify --replay``.

Real ``gymnasium.vector`` environments (sync and async, next-step and same-step
autoreset) of ALE/Assault-v5 and CartPole-v1, 8 sub-environments, short episodes
(``max_episode_steps``) so every sub-environment goes through several autoresets. Every
recorded episode must replay bit for bit in a fresh single environment made from what
the store holds (env spec, seed or the chain of episodes it continues, actions).
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import assert_one_line_error, capture_frames, run_cli
from gymnasium.vector import AutoresetMode

from framestore import FrameStore, InvalidInput, RecordFrames, RecordVectorFrames
from framestore.envs import make_env, make_vec_env
from framestore.gym.vector import sub_env_infos
from tools.replay import replay

N = 8
CASES = [
    ("ALE/Assault-v5", "sync", "NextStep", 10, 34),
    ("ALE/Assault-v5", "async", "SameStep", 10, 34),
    ("CartPole-v1", "sync", "SameStep", 12, 40),
    ("CartPole-v1", "async", "NextStep", 12, 40),
]


def record_vector(path, env_id, mode, autoreset, max_steps, vector_steps, seed=5):
    venv = make_vec_env(env_id, N, mode=mode, max_episode_steps=max_steps, autoreset_mode=autoreset)
    with FrameStore.open(path) as store:
        env = RecordVectorFrames(venv, store)
        try:
            env.reset(seed=seed)
            env.action_space.seed(seed)
            for _ in range(vector_steps):
                env.step(env.action_space.sample())
        finally:
            env.close()


@pytest.mark.parametrize("env_id,mode,autoreset,max_steps,vector_steps", CASES)
def test_every_vector_episode_replays_bit_exactly(
    tmp_path, env_id, mode, autoreset, max_steps, vector_steps
):
    path = tmp_path / "v.store"
    record_vector(path, env_id, mode, autoreset, max_steps, vector_steps)
    with FrameStore.open(path, readonly=True) as store:
        eps = store.episodes()
        spec = store.runs()[0].env_spec
        assert spec["vector"] == {"num_envs": N, "mode": mode, "autoreset_mode": autoreset}
        by_sub = {i: [e for e in eps if e.sub_env == i] for i in range(N)}
        for i, chain in by_sub.items():
            assert len(chain) >= 3, f"sub-env {i} went through too few autoresets"
            assert chain[0].seed == 5 + i and chain[0].continues_episode is None
            for prev, ep in zip(chain, chain[1:], strict=False):
                assert ep.seed is None and ep.continues_episode == prev.id
                assert prev.status == "complete" and (prev.terminated or prev.truncated)
            assert chain[-1].status == "interrupted"
        rows_total = sum(e.steps for e in eps)
        for ep in eps:
            rows = store.read_steps(ep.id)
            assert rows[0].action is None and rows[0].reward == 0.0  # step 0: the reset
            assert rows[0].frame is not None  # ... with its reset frame
            assert all(r.action is not None for r in rows[1:])  # no fake rows
            ends = [r.step for r in rows if r.terminated or r.truncated]
            assert ends in ([], [len(rows) - 1])
            if autoreset == "SameStep" and ends:  # the terminal frame is gone: no frame
                assert rows[-1].frame is None and ep.frames == ep.steps - 1
            else:
                assert ep.frames == ep.steps
    # the first reset's rows, then one row per sub-env and vector step (next-step: the
    # autoreset steps among them); same-step adds each autoreset's reset row
    autoresets = sum(1 for e in eps if e.continues_episode is not None)
    extra = autoresets if autoreset == "SameStep" else 0
    assert rows_total == N + N * vector_steps + extra
    result = run_cli("verify", path, "--replay", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {e["status"] for e in report["episodes"]} == {"match"}
    assert sum(e["frames_compared"] for e in report["episodes"]) == sum(e.frames for e in eps)


def test_step_zero_is_the_reset_frame_of_each_sub_env(tmp_path):
    record_vector(tmp_path / "v.store", "CartPole-v1", "sync", "NextStep", 6, 8, seed=11)
    with FrameStore.open(tmp_path / "v.store", readonly=True) as store:
        for ep in store.episodes():
            if ep.seed is None:
                continue
            want, _ = capture_frames("CartPole-v1", 1, seed=ep.seed)
            assert np.array_equal(store.read_frame(ep.id, 0), want[0])


def test_sub_env_infos_split_masks_and_nested_dicts():
    infos = {
        "lives": np.array([3, 4, 5]),
        "_lives": np.array([True, False, True]),
        "final_obs": np.array([None, None, None], dtype=object),
        "final_info": {"x": np.array([1.5, 0.0, 2.5]), "_x": np.array([True, False, True])},
        "_final_info": np.array([True, False, True]),
    }
    assert sub_env_infos(infos, 3) == [
        {"lives": 3, "final_info": {"x": 1.5}},
        {},
        {"lives": 5, "final_info": {"x": 2.5}},
    ]


def test_replay_finds_a_differing_episode_and_says_why_others_cannot_replay(
    tmp_path, assault_frames
):
    path = tmp_path / "s.store"
    with FrameStore.open(path) as store:
        env = RecordFrames(make_env("ALE/Assault-v5", max_episode_steps=6), store)
        env.reset(seed=3)
        env.action_space.seed(3)
        for _ in range(6):
            env.step(env.action_space.sample())
        env.reset()  # no seed: continues episode 1
        for _ in range(4):
            env.step(env.action_space.sample())
        env.close()
        with store.recorder("ALE/Assault-v5") as rec:  # frames that are not seed 8's
            rec.begin_episode(seed=8)
            for k, frame in enumerate(assault_frames[:5]):
                rec.record_step(frame, action=None if k == 0 else 0)
            rec.end_episode()
            rec.begin_episode()  # no seed, continues nothing
            rec.record_step(assault_frames[0])
            rec.end_episode()
        wrapped = gym.wrappers.TransformReward(make_env("CartPole-v1"), lambda r: 2 * r)
        env = RecordFrames(wrapped, store, env_id="CartPole-v1")
        env.reset(seed=1)
        env.close()
        eps = [e.id for e in store.episodes()]
    report = replay(path)
    got = {r.episode: (r.status, r.first_difference, r.reason) for r in report.episodes}
    assert got[eps[0]] == ("match", None, None)
    assert got[eps[1]][0] == "match" and report.episodes[1].chain == [eps[0], eps[1]]
    assert got[eps[2]][:2] == ("differs", 1)  # step 0 is Assault's start screen for any seed
    assert got[eps[3]] == ("not replayable", None, "no seed")
    assert got[eps[4]][0] == "not replayable" and "TransformReward" in got[eps[4]][2]
    result = run_cli("verify", path, "--replay")
    assert result.exit_code == 1 and f"episode {eps[2]}: DIFFERS from step 1" in result.stdout
    result = run_cli("verify", path, "--replay", "--episode", eps[1])
    assert result.exit_code == 0 and "1 match, 0 differ" in result.stdout


def test_replay_bad_arguments_are_one_line(tmp_path, assault_frames):
    from conftest import record_episodes

    record_episodes(tmp_path / "s.store", assault_frames, episodes=1, steps=3)
    assert_one_line_error(run_cli("verify", tmp_path / "s.store", "--replay", "--episode", 99))
    result = run_cli("verify", tmp_path / "s.store", "--episode", 1)
    assert result.exit_code == 2 and "--episode needs --replay" in result.output


def test_cli_record_envs_records_a_vector_env(tmp_path):
    path = tmp_path / "r.store"
    result = run_cli(
        "record", path, "--env", "CartPole-v1", "--envs", 3, "--vector-mode", "async",
        "--episodes", 4, "--max-steps", 8, "--seed", 2, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    done = [e for e in summary["episodes"] if e["status"] == "complete"]
    assert len(done) >= 4 and all(e["steps"] == 9 for e in done)
    with FrameStore.open(path, readonly=True) as store:
        assert store.runs()[0].env_spec["vector"]["mode"] == "async"
        assert sorted(e.sub_env for e in store.episodes() if e.seed is not None) == [0, 1, 2]
    result = run_cli("verify", path, "--replay")
    assert result.exit_code == 0 and "0 differ, 0 not replayable" in result.stdout
    # ls shows which sub-environment played each episode and what an autoreset continues
    with FrameStore.open(path, readonly=True) as store:
        want = {e.id: (e.sub_env, e.continues_episode) for e in store.episodes()}
    listed = json.loads(run_cli("ls", path, "--json").stdout)["episodes"]
    assert {r["id"]: (r["sub_env"], r["continues_episode"]) for r in listed} == want
    assert any(c is not None for _, c in want.values())
    header = run_cli("ls", path).output.splitlines()[0]
    assert header.split()[-2:] == ["sub", "after"]
    for bad in (["--envs", 0], ["--envs", 2, "--vector-mode", "threads"]):
        assert run_cli("record", path, "--env", "CartPole-v1", *bad).exit_code == 2


def test_wrapper_needs_rgb_array(tmp_path):
    venv = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    with FrameStore.open(tmp_path / "s.store") as store, pytest.raises(ValueError, match="rgb"):
        RecordVectorFrames(venv, store)
    venv.close()


def test_disabled_autoreset_records_masked_resets(tmp_path):
    venv = make_vec_env("CartPole-v1", 2, max_episode_steps=3, autoreset_mode="Disabled")
    with FrameStore.open(tmp_path / "s.store") as store:
        env = RecordVectorFrames(venv, store)
        env.reset(seed=4)
        for _ in range(3):
            env.step(np.array([0, 1]))
        env.reset(options={"reset_mask": np.array([True, False])})  # sub-env 1 is done too
        env.reset(options={"reset_mask": np.array([False, True])})
        env.step(np.array([1, 1]))
        env.close()
        eps = store.episodes()
    assert [(e.sub_env, e.seed, e.continues_episode, e.steps) for e in eps] == [
        (0, 4, None, 4), (1, 5, None, 4), (0, None, 1, 2), (1, None, 2, 2),
    ]  # fmt: skip
    assert AutoresetMode.DISABLED.value == "Disabled"
    assert replay(tmp_path / "s.store").count("match") == 4


def test_bench_vector_mode_is_sane(tmp_path):
    from tools import bench

    rows = bench.run_vector(2, steps=8, rounds=1, workdir=tmp_path)
    assert [r.mode for r in rows] == ["none", "record_steps", "2 recorders"]
    assert all(r.steps_per_s > 0 and r.error is None for r in rows)
    assert [r.verified for r in rows] == [None, True, True]
    assert rows[0].vs_none == 1.0 and rows[1].producer_p50_us > 0
    assert bench.failed_checks(rows) == []
    reads = bench.read_interleaved(bench.capture("assault", 64), repeat=1, workdir=tmp_path)
    assert [(r.layout, r.frames) for r in reads] == [("1 of 16 interleaved", 4), ("alone", 4)]
    assert "record_steps" in bench.format_table(rows, bench.VECTOR_TABLE)


def test_bench_vector_async_with_both_placements_records_every_frame(tmp_path):
    """``--writers``: record_steps once per placement, as rows of their own; an async
    vector env's frames (unpickled, fresh) are handed over and still read back; CPU
    counts the workers and the storage process."""
    from tools import bench

    rows = bench.run_vector(
        2, steps=8, rounds=1, vector_mode="async", writers=True, workdir=tmp_path
    )
    assert [r.mode for r in rows] == [
        "none", "record_steps/thread", "record_steps/process", "2 recorders",
    ]  # fmt: skip
    assert all(r.error is None and r.vector_mode == "async" for r in rows), rows
    assert [r.verified for r in rows] == [None, True, True, True]
    assert all(r.cpu_us > 0 for r in rows)
    assert bench.failed_checks(rows) == []
    assert list(tmp_path.iterdir()) == []


def test_bench_vector_hands_over_fresh_renders_only():
    """The bench hands frames over when ``render()`` gives new arrays each call (a sync
    ALE vector env) and copies them when it refills the same ones."""
    from framestore.envs import make_vec_env
    from tools.bench import _vector

    venv = make_vec_env("ALE/Assault-v5", 2)
    try:
        venv.reset(seed=0)
        assert _vector._fresh_renders(venv)
    finally:
        venv.close()

    class Refilled:
        buffers = [np.zeros((4, 4, 3), np.uint8) for _ in range(2)]

        def render(self):
            return tuple(self.buffers)

    assert not _vector._fresh_renders(Refilled())


def test_record_envs_without_a_tty_prints_a_line_per_episode(tmp_path):
    """`record --envs N` in a pipe: one line per finished episode (autoreset ones named
    as such), then the run; every episode replays."""
    path = tmp_path / "v.store"
    result = run_cli(
        "record", path, "--env", "CartPole-v1", "--envs", 3, "--episodes", 5,
        "--max-steps", 20, "--seed", 1,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    finished = [ln for ln in lines if ln.strip().startswith("episode") and "complete" in ln]
    assert len(finished) >= 5, result.stdout
    assert any("autoreset" in ln for ln in finished), result.stdout
    assert any(ln.startswith("run 1:") for ln in lines), result.stdout
    replay = run_cli("verify", path, "--replay")
    assert replay.exit_code == 0 and "0 differ" in replay.stdout, replay.output


# --------------------------------------------------------------------------- observations
def _same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _play_observed(venv, store, steps: int, overrides: dict) -> list[list]:
    """Play ``steps`` seeded random vector steps through ``RecordVectorFrames(...,
    observations=True)``; each sub-environment's observations in the order its rows
    hold them (same-step autoreset: an ended episode's ``final_obs``, then the reset
    observation of the next one)."""
    from gymnasium.vector.utils import iterate

    env = RecordVectorFrames(venv, store, overrides={"chunk_frames": 8, **overrides},
                             observations=True)  # fmt: skip
    same_step = env.autoreset_mode == AutoresetMode.SAME_STEP
    try:
        obs, _ = env.reset(seed=7)
        env.action_space.seed(7)
        seen = [[o] for o in iterate(env.observation_space, obs)]
        for _ in range(steps):
            obs, _r, term, trunc, infos = env.step(env.action_space.sample())
            per = list(iterate(env.observation_space, obs))
            for i, o in enumerate(per):
                if same_step and (term[i] or trunc[i]):
                    seen[i].append(infos["final_obs"][i])
                seen[i].append(o)
    finally:
        env.close()
    return seen


def _stored(store) -> list[list]:
    """Each sub-environment's stored observations, its episodes in order."""
    out: dict[int, list] = {}
    for e in sorted(store.episodes(), key=lambda e: e.id):
        out.setdefault(e.sub_env, []).extend(o for _s, o in store.iter_observations(e.id))
    return [out[i] for i in sorted(out)]


def _stream_frames(path) -> dict[int, int]:
    """Frames in the segments' chunks, by stream index."""
    from framestore.disk.scan import scan_segment
    from framestore.disk.segments import list_segment_ids, segment_path

    out: dict[int, int] = {}
    for sid in list_segment_ids(path):
        for h in scan_segment(segment_path(path, sid), sid).chunks.values():
            if h.count:
                out[h.stream_index] = out.get(h.stream_index, 0) + h.count
    return out


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_vector_observations_are_recorded_bit_exactly(tmp_path, writer):
    """Real ALE grayscale observations (not the rendered frame: a stream of their own)
    of 3 sub-environments through several autoresets, in both writer placements: every
    sub-environment's observations read back bit for bit, verify passes and recover
    rebuilds them from the segments alone."""
    from conftest import writer_overrides

    from framestore.envs import register_optional_envs

    register_optional_envs("ALE/Assault-v5")
    venv = gym.make_vec("ALE/Assault-v5", num_envs=3, vectorization_mode="sync",
                        render_mode="rgb_array", obs_type="grayscale", max_episode_steps=9)  # fmt: skip
    path = tmp_path / "v.store"
    with FrameStore.open(path) as store:
        seen = _play_observed(venv, store, 24, writer_overrides(writer))
        eps = store.episodes()
        assert len(eps) >= 6 and {e.sub_env for e in eps} == {0, 1, 2}
        assert all(e.streams == ("render", "observation") for e in eps)
        got = _stored(store)
        assert [len(g) for g in got] == [len(s) for s in seen]
        assert all(
            _same(a, b) for g, s in zip(got, seen, strict=True) for a, b in zip(g, s, strict=True)
        )
        assert store.streams(eps[0].id)[1].shape == (210, 160)
        assert store.streams(eps[0].id)[1].shared_with is None
    assert set(_stream_frames(path)) == {0, 1}
    assert run_cli("verify", path).exit_code == 0
    for name in ("framestore.db", "framestore.db-wal", "framestore.db-shm"):
        (path / name).unlink(missing_ok=True)
    assert run_cli("recover", path).exit_code in (0, 1)
    with FrameStore.open(path, readonly=True) as store:
        got = _stored(store)
        assert all(
            _same(a, b) for g, s in zip(got, seen, strict=True) for a, b in zip(g, s, strict=True)
        )


def test_vector_rgb_observation_equal_to_render_is_stored_once(tmp_path):
    """ALE's rgb observation is each sub-environment's rendered frame: stored once (no
    chunk of the observation stream exists), read back as the observation."""
    venv = make_vec_env("ALE/Assault-v5", 2, max_episode_steps=6)
    path = tmp_path / "v.store"
    with FrameStore.open(path) as store:
        seen = _play_observed(venv, store, 14, {})
        eps = store.episodes()
        assert all(e.streams == ("render", "observation") for e in eps)
        assert store.streams(eps[0].id)[1].shared_with == 0
        got = _stored(store)
        assert all(
            _same(a, b) for g, s in zip(got, seen, strict=True) for a, b in zip(g, s, strict=True)
        )
    assert set(_stream_frames(path)) == {0}


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_vector_dict_observations_same_step_autoreset(tmp_path, writer):
    """CartPole's state vector with its rendered pixels (a Dict space) under same-step
    autoreset: the state as typed binary in each row, the pixels stored once; an ended
    episode's last row holds its ``final_obs``, the next episode starts with the reset
    observation."""
    from conftest import writer_overrides
    from gymnasium.wrappers import AddRenderObservation

    from framestore.envs import headless_sdl

    headless_sdl()

    venv = gym.make_vec(
        "CartPole-v1", num_envs=3, vectorization_mode="sync", render_mode="rgb_array",
        max_episode_steps=7, vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        wrappers=[lambda e: AddRenderObservation(e, render_only=False)],
    )  # fmt: skip
    path = tmp_path / "v.store"
    with FrameStore.open(path) as store:
        seen = _play_observed(venv, store, 16, writer_overrides(writer))
        eps = store.episodes()
        assert len(eps) >= 6
        assert all(e.streams == ("render", "observation.pixels") for e in eps)
        got = _stored(store)
        assert [len(g) for g in got] == [len(s) for s in seen]
        assert all(
            _same(a, b) for g, s in zip(got, seen, strict=True) for a, b in zip(g, s, strict=True)
        )
        assert got[0][1]["state"].dtype == np.float32
        ended = sum(e.status == "complete" for e in eps)
    # the pixels are stored once, except an ended episode's final observation: its row
    # has no rendered frame (the sub-environment has reset already)
    assert ended >= 3 and _stream_frames(path).get(1) == ended
    assert run_cli("verify", path).exit_code == 0


def test_vector_observations_bad_space_is_refused_before_recording(tmp_path):
    venv = make_vec_env("CartPole-v1", 2)
    venv.single_observation_space = gym.spaces.Text(5)  # strings cannot be recorded
    with FrameStore.open(tmp_path / "v.store") as store:
        with pytest.raises(InvalidInput, match="cannot be recorded"):
            RecordVectorFrames(venv, store, observations=True)
        assert store.episodes() == [] and store.runs() == []
    venv.close()


def test_cli_record_envs_with_observations(tmp_path):
    path = tmp_path / "v.store"
    result = run_cli("record", path, "--env", "CartPole-v1", "--envs", "2", "--observations",
                     "--episodes", "2", "--max-steps", "5")  # fmt: skip
    assert result.exit_code == 0, result.output
    with FrameStore.open(path, readonly=True) as store:
        eps = store.episodes()
        assert len(eps) >= 2 and {e.sub_env for e in eps} == {0, 1}
        for e in eps:
            obs = [o for _s, o in store.iter_observations(e.id)]
            assert len(obs) == e.steps and obs[0].shape == (4,) and obs[0].dtype == np.float32
