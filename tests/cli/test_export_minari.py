"""``framestore export --format minari``: a Minari dataset that ``minari.load_dataset``
opens from the export's directory, with every observation (frame) bit-exact, the actions,
rewards and flags as stored, the seeds, and an env spec that ``recover_environment``
makes again (``max_episode_steps`` kept); errors before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

from framestore import FrameStore
from framestore.envs import env_spec_of, make_env
from tools.export import ExportOptions, export_minari

minari = pytest.importorskip("minari")  # the minari extra; the test extra installs it
MAX_STEPS = 777


def record(path, frames, *, episodes=3, steps=25, slice_frames=None):
    """Assault episodes recorded with the environment's spec (time limit MAX_STEPS);
    episode e step i holds frames[e * steps + i]."""
    env = make_env("ALE/Assault-v5", max_episode_steps=MAX_STEPS)
    try:
        with FrameStore.open(path) as st:
            rec = st.recorder(
                "ALE/Assault-v5", action_space=env.action_space, env_spec=env_spec_of(env.spec)
            )
            try:
                for e in range(episodes):
                    rec.begin_episode(seed=100 + e)
                    rec.record_step(frames[e * steps], info={"lives": 4})
                    for i in range(1, steps):
                        rec.record_step(
                            frames[e * steps + i],
                            action=(i * 3) % 7,
                            reward=float(i % 4),
                            info={"lives": 4 - e},
                            terminated=e != 1 and i == steps - 1,
                            truncated=e == 1 and i == steps - 1,
                        )
                    rec.end_episode()
            finally:
                rec.close()
    finally:
        env.close()


def test_minari_loads_the_export_and_recovers_the_environment(
    tmp_path, assault_frames, monkeypatch
):
    path = tmp_path / "s.store"
    record(path, assault_frames)
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    out = datasets / "assault-v0"
    result = run_cli("export", path, "--format", "minari", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["episodes"] == [1, 2, 3] and report["steps"] == 72 and report["recoverable"]
    assert sorted(p.name for p in datasets.iterdir()) == ["assault-v0"]  # no .partial

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets))
    ds = minari.load_dataset("assault-v0")
    assert (ds.total_episodes, ds.total_steps) == (3, 72)
    assert ds.observation_space.shape == (210, 160, 3) and ds.action_space.n == 7
    with FrameStore.open(path, readonly=True) as st:
        for ep, stored in zip(ds.iterate_episodes(), st.episodes(), strict=True):
            frames = np.stack(st.read_frames(stored.id))
            assert ep.observations.dtype == np.uint8
            np.testing.assert_array_equal(ep.observations, frames)
            steps = st.read_steps(stored.id)[1:]
            assert ep.actions.tolist() == [s.action for s in steps]
            assert ep.rewards.tolist() == [s.reward for s in steps]
            assert ep.terminations.tolist() == [s.terminated for s in steps]
            assert ep.truncations.tolist() == [s.truncated for s in steps]
            infos = [json.loads(t) for t in ep.infos["json"]]
            assert infos == [s.info for s in st.read_steps(stored.id)]
    seeds = [m["seed"] for m in ds.storage.get_episode_metadata(range(3))]
    assert seeds == [100, 101, 102]
    env = ds.recover_environment()
    try:
        assert env.spec.id == "ALE/Assault-v5" and env.spec.max_episode_steps == MAX_STEPS
    finally:
        env.close()


def test_a_long_episode_is_written_in_slices(tmp_path, assault_frames, monkeypatch):
    """An episode of several slices (3 frames each here) comes back whole: Minari's
    storage appended the slices to one episode."""
    monkeypatch.setattr("tools.export._minari._SLICE_BYTES", 3 * 210 * 160 * 3)
    path = tmp_path / "s.store"
    record(path, assault_frames, episodes=1, steps=20)
    out = tmp_path / "long-v1"
    with FrameStore.open(path, readonly=True) as st:
        calls = []
        report = export_minari(
            st, out, options=ExportOptions(start=2), progress=lambda *c: calls.append(c)
        )
        frames = np.stack(st.read_frames(1, 2))
    assert report.steps == 17 and report.frames == 18 and calls[-1] == (18, 18)
    ds = minari.MinariDataset(out / "data")
    (ep,) = list(ds.iterate_episodes())
    np.testing.assert_array_equal(ep.observations, frames)
    assert len(ep.actions) == 17 and ds.total_steps == 17
    assert next(iter(ds.storage.get_episode_metadata([0])))["total_steps"] == 17


def test_bad_requests_fail_before_writing(tmp_path, assault_frames):
    path = tmp_path / "s.store"
    record(path, assault_frames, episodes=1, steps=10)
    with FrameStore.open(path) as st:  # a run without env spec; its episode 3 drops a frame
        rec = st.recorder("ALE/Assault-v5")
        for frame in (assault_frames[1], None):
            rec.begin_episode()
            rec.record_step(assault_frames[0])
            rec.record_step(frame, action=1)
            rec.end_episode()
        rec.close()
    cases = [
        (("--run", 1, "-o", tmp_path / "no-version"), "name-v<version>"),
        (("--episode", 3, "-o", tmp_path / "d-v0"), "without a stored frame"),
        (("--episode", 1, "--episode", 2, "-o", tmp_path / "d-v0"), "different environments"),
        (("--episode", 5, "-o", tmp_path / "d-v0"), "no episode 5"),
    ]
    for args, words in cases:
        line = assert_one_line_error(run_cli("export", path, "--format", "minari", *args))
        assert words in line, (args, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.store"]
