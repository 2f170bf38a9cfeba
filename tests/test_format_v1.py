"""A store written by framestore 0.1.0 (segment format version 1) keeps working: every
command reads it, and compaction moves its chunks into version-2 segments bit-exactly.

The fixture (tests/fixtures/store-v0.1.0) holds three Assault episodes of 25 steps: two
in a zstd segment, one in a PNG segment, recorded with seeds 3, 4, 5 and a seeded random
policy. Its frames are checked against the environment regenerated from seed + actions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from framestore import FrameStore
from framestore.envs import make_env
from framestore.scan import scan_segment
from framestore.segments import FORMAT_VERSION, list_segment_ids, segment_path

FIXTURE = Path(__file__).parent / "fixtures" / "store-v0.1.0"


@pytest.fixture
def v1_store(tmp_path) -> Path:
    path = tmp_path / "old.store"
    shutil.copytree(FIXTURE, path)
    return path


def regenerate(env_id: str, seed: int, actions: list) -> list[np.ndarray]:
    env = make_env(env_id)
    try:
        env.reset(seed=seed)
        frames = [env.render()]
        for a in actions:
            env.step(a)
            frames.append(env.render())
        return frames
    finally:
        env.close()


def expected_frames(store: FrameStore, episode_id: int) -> list[np.ndarray]:
    ep = store.episode(episode_id)
    actions = [s.action for s in store.read_steps(episode_id)[1:]]
    return regenerate(ep.env_id, ep.seed, actions)


def test_fixture_is_version_1():
    versions = {scan_segment(p, sid).version for sid, p in _segments(FIXTURE)}
    assert versions == {1} and FORMAT_VERSION == 2


def _segments(root: Path) -> list[tuple[int, Path]]:
    return [(sid, segment_path(root, sid)) for sid in list_segment_ids(root)]


def test_frames_of_a_v1_store_read_bit_exactly(v1_store):
    with FrameStore.open(v1_store, readonly=True) as store:
        eps = store.episodes()
        assert [(e.id, e.steps, e.seed) for e in eps] == [(1, 25, 3), (2, 25, 4), (3, 25, 5)]
        for ep in eps:
            got = store.read_frames(ep.id)
            want = expected_frames(store, ep.id)
            assert len(got) == len(want) == 25
            assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_every_read_command_works_on_a_v1_store(v1_store, tmp_path):
    r = run_cli("ls", v1_store, "--json")
    assert r.exit_code == 0, r.output
    assert [e["steps"] for e in json.loads(r.stdout)["episodes"]] == [25, 25, 25]
    r = run_cli("info", v1_store, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["frames"] == 75
    for quick in ([], ["--quick"]):
        r = run_cli("verify", v1_store, *quick)
        assert r.exit_code == 0 and r.stdout.startswith("ok:"), r.output
    out = tmp_path / "ep3.npz"
    r = run_cli("export", v1_store, "--episode", 3, "-o", out)
    assert r.exit_code == 0, r.output
    with np.load(out) as npz, FrameStore.open(v1_store, readonly=True) as store:
        want = expected_frames(store, 3)
        assert np.array_equal(npz["frames"], np.stack(want))
    r = run_cli("recover", v1_store)
    assert r.exit_code == 0 and "nothing to recover" in r.stdout, r.output


def test_gc_compacts_a_v1_store_into_v2_segments(v1_store):
    with FrameStore.open(v1_store, readonly=True) as store:
        want = {e: expected_frames(store, e) for e in (1, 3)}
    assert run_cli("rm", v1_store, "--episode", 2).exit_code == 0
    r = run_cli("gc", v1_store, "--threshold", 1, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["segments_rewritten"] and report["segments_written"]
    new = {sid: scan_segment(p, sid) for sid, p in _segments(v1_store)}
    assert {s.version for s in new.values()} == {2}
    assert all(s.clean and s.sealed for s in new.values())
    assert run_cli("verify", v1_store).exit_code == 0
    with FrameStore.open(v1_store, readonly=True) as store:
        assert [e.id for e in store.episodes()] == [1, 3]
        for eid, frames in want.items():
            got = store.read_frames(eid)
            assert all(np.array_equal(a, b) for a, b in zip(got, frames, strict=True))


def test_recording_into_a_v1_store_adds_v2_segments(v1_store, assault_frames):
    with FrameStore.open(v1_store) as store:
        with store.recorder("ALE/Assault-v5") as rec:
            eid = rec.begin_episode(seed=9)
            for f in assault_frames[:10]:
                rec.record_step(f)
            rec.end_episode()
        got = store.read_frames(eid)
    assert all(np.array_equal(a, b) for a, b in zip(got, assault_frames[:10], strict=True))
    versions = sorted((sid, scan_segment(p, sid).version) for sid, p in _segments(v1_store))
    assert versions == [(1, 1), (2, 1), (3, 2)]
    assert run_cli("verify", v1_store).exit_code == 0
