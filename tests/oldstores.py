"""Stores written by released framestore versions (tests/fixtures/store-vX.Y.Z), and the
checks every later version must pass on them: frames read bit-exactly (regenerated from
the stored seed and actions), every read command works, gc compacts their segments into
the current version's, a new recording adds current-version segments.

test_format_v1.py and test_format_v2.py run these on their fixture.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from conftest import run_cli

from framestore import FrameStore
from framestore.disk.scan import scan_segment
from framestore.disk.segments import VERSION, list_segment_ids, segment_path
from framestore.envs import make_env

FIXTURES = Path(__file__).parent / "fixtures"


def copy_fixture(name: str, tmp_path: Path) -> Path:
    """A writable copy of ``tests/fixtures/<name>`` (fixtures themselves never change)."""
    path = tmp_path / "old.store"
    shutil.copytree(FIXTURES / name, path)
    return path


def regenerate(env_id: str, seed: int, actions: list) -> list[np.ndarray]:
    """The frames the environment renders after reset(seed) and each action."""
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
    """The episode's frames as the environment makes them again, for the rows that have a
    frame (in step order)."""
    ep = store.episode(episode_id)
    steps = store.read_steps(episode_id)
    frames = regenerate(ep.env_id, ep.seed, [s.action for s in steps[1:]])
    return [f for f, s in zip(frames, steps, strict=True) if s.frame is not None]


def segments(root: Path) -> list[tuple[int, Path]]:
    return [(sid, segment_path(root, sid)) for sid in list_segment_ids(root)]


def segment_versions(root: Path) -> list[tuple[int, int]]:
    return sorted((sid, scan_segment(p, sid).version) for sid, p in segments(root))


def check_frames_read_bit_exactly(path: Path, want: list[tuple[int, int, int]]) -> None:
    """``want``: (episode id, rows, seed) of every episode, in order."""
    with FrameStore.open(path, readonly=True) as store:
        eps = store.episodes()
        assert [(e.id, e.steps, e.seed) for e in eps] == want
        for ep in eps:
            got = store.read_frames(ep.id)
            exp = expected_frames(store, ep.id)
            assert len(got) == len(exp) > 0
            assert all(np.array_equal(a, b) for a, b in zip(got, exp, strict=True))


def check_every_read_command(path: Path, tmp_path: Path, *, steps: list[int], frames: int):
    r = run_cli("ls", path, "--json")
    assert r.exit_code == 0, r.output
    assert [e["steps"] for e in json.loads(r.stdout)["episodes"]] == steps
    r = run_cli("info", path, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["frames"] == frames
    for quick in ([], ["--quick"]):
        r = run_cli("verify", path, *quick)
        assert r.exit_code == 0 and r.stdout.startswith("ok:"), r.output
    last = len(steps)
    out = tmp_path / "last.npz"
    r = run_cli("export", path, "--episode", last, "-o", out)
    assert r.exit_code == 0, r.output
    with np.load(out) as npz, FrameStore.open(path, readonly=True) as store:
        assert np.array_equal(npz["frames"], np.stack(expected_frames(store, last)))
    r = run_cli("recover", path)
    assert r.exit_code == 0 and "nothing to recover" in r.stdout, r.output


def check_gc_compacts_into_current_segments(path: Path) -> None:
    """rm episode 2, gc: the other episodes' frames move into current-version segments."""
    with FrameStore.open(path, readonly=True) as store:
        keep = [e.id for e in store.episodes() if e.id != 2]
        want = {e: expected_frames(store, e) for e in keep}
    assert run_cli("rm", path, "--episode", 2).exit_code == 0
    r = run_cli("gc", path, "--threshold", 1, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["segments_rewritten"] and report["segments_written"]
    new = {sid: scan_segment(p, sid) for sid, p in segments(path)}
    assert {s.version for s in new.values()} == {VERSION}
    assert all(s.clean and s.sealed for s in new.values())
    assert run_cli("verify", path).exit_code == 0
    with FrameStore.open(path, readonly=True) as store:
        assert [e.id for e in store.episodes()] == keep
        for eid, frames in want.items():
            got = store.read_frames(eid)
            assert len(got) == len(frames)
            assert all(np.array_equal(a, b) for a, b in zip(got, frames, strict=True))


def check_recording_adds_current_segments(path: Path, frames: list[np.ndarray]) -> None:
    before = segment_versions(path)
    with FrameStore.open(path) as store:
        with store.recorder("ALE/Assault-v5") as rec:
            eid = rec.begin_episode(seed=9)
            for f in frames[:10]:
                rec.record_step(f)
            rec.end_episode()
        got = store.read_frames(eid)
    assert all(np.array_equal(a, b) for a, b in zip(got, frames[:10], strict=True))
    new_id = max(sid for sid, _ in before) + 1
    assert segment_versions(path) == [*before, (new_id, VERSION)]
    assert run_cli("verify", path).exit_code == 0
